#!/usr/bin/env bash
# Steps of the CUDA benchmark on a lent H100 (see bench/cuda/RESULTS.md for how it was run).
# The device has Python 3.12, PyTorch and the CUDA 13 libraries, but no MLX and no network:
# wheels travel in .whl/ and .whl2/ (mlx-cuda-13 split in two, it is larger than one call
# may carry), llama.cpp's source (from the llama-cpp-python sdist) as .whl/llama.tar.xz.
#
#   bash bench/cuda/device.sh stage1   # info, first wheel part, start the llama-server build
#   bash bench/cuda/device.sh stage2   # second part, install, model folder, GGUF
#   bash bench/cuda/device.sh bench TARGETS   # bench.run on the bf16 model
#   bash bench/cuda/device.sh profile  # where a decode step's time goes
#   bash bench/cuda/device.sh kernels  # kernels per decode step, module by module
set -uo pipefail
W=/tmp/w                    # survives between calls on a warm machine
SITE=$W/site
MODEL=$W/gemma3-270m-bf16
GGUF=$W/gemma3-270m-bf16.gguf
LLAMA=$W/llama.cpp
OUT=${OUT:-/tmp/out}
export PYTHONPATH=$SITE PYTHONUNBUFFERED=1
PY=python3

nvidia_libs() {  # the image's CUDA 13 wheels, where mlx's RPATH ($ORIGIN/../../nvidia) looks
    local nv
    nv=$($PY - <<'EOF'
import importlib.util, os
spec = importlib.util.find_spec("nvidia")
print([p for p in spec.submodule_search_locations if not p.startswith("/tmp/w")][0])
EOF
)
    [ -e $SITE/nvidia ] || ln -s "$nv" $SITE/nvidia
}

stage1() {
    mkdir -p $W/parts $OUT
    $PY --version; nvidia-smi -L; nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv
    nvcc --version | tail -2; cmake --version | head -1; nproc
    cp .whl/mlxcuda.part00 $W/parts/
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target $SITE \
        $(ls .whl/*.whl) 2>&1 | tail -3
    [ -n "${NO_LLAMA:-}" ] && return 0  # NO_LLAMA=1: no llama-server this time
    tar xJf .whl/llama.tar.xz -C $W
    # The build outlives this call (setsid); stage2 and later calls look at its log.
    setsid nohup bash -c "cd $LLAMA && cmake -B build -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF \
        -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DCMAKE_BUILD_TYPE=Release \
        && cmake --build build -j 15 --target llama-server; echo BUILD_EXIT=\$?" \
        > $W/llama-build.log 2>&1 < /dev/null &
    sleep 20; tail -3 $W/llama-build.log
}

stage2() {
    mkdir -p $OUT
    cat $W/parts/mlxcuda.part00 .whl2/mlxcuda.part01 > $W/mlx_cuda_13-0.32.4-py3-none-manylinux_2_35_x86_64.whl
    sha256sum $W/mlx_cuda_13-*.whl
    # mlx-cuda-13 adds mlx/lib (libmlx.so) to the mlx package: unpack it over mlx's files.
    $PY -m zipfile -e $W/mlx_cuda_13-*.whl $SITE
    nvidia_libs
    $PY -c "import mlx.core as mx; a = mx.random.normal((4096, 4096)).astype(mx.bfloat16); \
print(mx.default_device(), (a @ a).sum().item())" || return 1
    mkdir -p $MODEL && tar xJf .whl2/tok.tar.xz -C $MODEL
    $PY - <<'EOF'
from pathlib import Path
from bench.dev_model import GEMMA3_270M, write_random_model
n = write_random_model(Path("/tmp/w/gemma3-270m-bf16"), GEMMA3_270M, "bfloat16")
print("weights", n / 1e9, "GB")
EOF
    mv $MODEL/tokenizer.model $W/tokenizer.model  # the MLX folder stays as dev_model writes it
    ls -la $MODEL
    # .whl3: what fastapi 0.165 also imports (opentelemetry), py-spy
    ls .whl3/*.whl >/dev/null 2>&1 && $PY -m pip install -q --no-index --no-deps --no-compile \
        --no-cache-dir --target $SITE .whl3/*.whl 2>&1 | tail -3
    [ -n "${NO_LLAMA:-}" ] || gguf
}

gguf() {  # .whl3/tokenizer.model, when given, replaces the one from tok.tar.xz
    [ -f .whl3/tokenizer.model ] && cp .whl3/tokenizer.model $W/tokenizer.model
    # llama.cpp's converter wants Gemma's SentencePiece model beside the same weights.
    mkdir -p $W/hf && for f in $MODEL/*; do ln -sf $f $W/hf/; done && cp $W/tokenizer.model $W/hf/
    (cd $LLAMA && PYTHONPATH=$LLAMA/gguf-py:$SITE $PY convert_hf_to_gguf.py $W/hf --outtype bf16 \
        --outfile $GGUF 2>&1 | tail -4)
    ls -la $GGUF; tail -3 $W/llama-build.log
}

bench() {  # $1: targets for bench.run
    mkdir -p $OUT
    local llama=$LLAMA/build/bin/llama-server
    $PY -m bench.run --model $MODEL --targets "$1" --scenarios single,sweep,multiturn \
        --levels 1,8,32 --no-bandwidth --ready-timeout 300 --out-dir $W/bench \
        --llama-server $llama --gguf $GGUF --llama-server-args "-ngl 99 -fa on -t 8" \
        2>&1 | tail -60
    tar czf $OUT/bench-$(date +%H%M%S).tgz -C $W bench  # $OUT takes 8 files at most
}

raw() {  # mlx-lm's own batched benchmark: the raw ceiling at batch 1, 8 and 32
    for b in 1 8 32; do
        $PY -m mlx_lm benchmark --model $MODEL -p 512 -g 128 -b $b -n 3 2>&1 | grep -E "Averages|Trial 1"
    done
}

compiled() {  # compiled decode steps on and off, served, beside raw mlx-lm's (session 7)
    local mode
    $PY -m mlx_lm benchmark --model $MODEL -p 512 -g 128 -b 1 -n 3 2>&1 | grep Averages
    for mode in on off; do
        echo "single, --compile-decode $mode"
        $PY -m bench.run --model $MODEL --targets mlx-server --scenarios single --no-bandwidth \
            --ready-timeout 300 --out-dir $W/bench --mlx-server-args "--compile-decode $mode" \
            2>&1 | grep -iE "decode=|ready in" | head -4
    done
    $PY -m mlx_lm benchmark --model $MODEL -p 512 -g 128 -b 32 -n 3 2>&1 | grep Averages
    for mode in on off; do
        echo "sweep at 32, --compile-decode $mode"
        $PY -m bench.run --model $MODEL --targets mlx-server --scenarios sweep --levels 32,32 \
            --no-bandwidth --ready-timeout 300 --out-dir $W/bench \
            --mlx-server-args "--compile-decode $mode" 2>&1 | grep -E "N=32|ready in"
    done
}

interleave() {  # single-stream paths back to back per rep (drift-proof ratios)
    $PY -m bench.cuda.interleave --model $MODEL --out $OUT/interleave.json 2>&1 | tail -8
}

spy_bin() {  # py-spy from .whl3 (pip's --target install does not place its binary)
    local spy=/tmp/ps/py_spy-0.4.3.data/scripts/py-spy
    [ -x $spy ] || { mkdir -p /tmp/ps && $PY -m zipfile -e .whl3/py_spy-*.whl /tmp/ps && chmod +x $spy; }
    echo $spy
}

pyspy() {  # py-spy over generator and core single-stream runs
    local spy
    spy=$(spy_bin)
    for w in generator core; do
        $spy record -r 400 -f raw -o $OUT/$w.txt -- $PY -m bench.cuda.one_path \
            --model $MODEL $w 2>&1 | grep -E "^(generator|core) "
    done
}

spy32() {  # served aggregate at 32 with py-spy on the server, and the engine alone
    mkdir -p $OUT
    local spy pid port
    spy=$(spy_bin)
    $PY -m bench.cuda.engine_burst --model $MODEL --n 32 2>&1 | grep " n="
    $PY -m bench.run --model $MODEL --targets mlx-server --scenarios sweep --levels 32,32,32 \
        --no-bandwidth --ready-timeout 300 --out-dir $W/bench > $W/spy32.log 2>&1 &
    for _ in $(seq 600); do
        pid=$(pgrep -f "mlx_server --model" | head -1)
        port=$([ -n "$pid" ] && ps -o args= -p $pid | grep -o -- "--port [0-9]*" | cut -d" " -f2)
        [ -n "$port" ] && curl -sf -m 1 localhost:$port/health >/dev/null && break
        sleep 0.3
    done
    sleep 8  # past the warm-up, into the first level
    $spy record -p $pid -r 100 -d 15 --nonblocking --threads -f raw -o $W/srv32.txt 2>&1 | tail -1
    wait
    grep -E "^[|] 32 [|]" $(ls -t $W/bench/2*.md | head -1)
    $PY -m bench.cuda.spy_top $W/srv32.txt --threads --top 14 --skip load_model > $OUT/spy32.txt
    head -80 $OUT/spy32.txt
}

burst() {  # the engine alone vs mlx-lm's BatchGenerator on a 32-request burst, back to back
    # AB=--ab: also the engine with gelu_gate and proj_fuse undone
    mkdir -p $OUT
    $PY -m bench.cuda.engine_burst --model $MODEL --n 32 --reps ${REPS:-4} ${AB:-} 2>&1 \
        | grep " n=" | tee $OUT/burst.txt
}

kernels() {  # primitives per decode step with each kernel-cutting module, and CUPTI's count
    mkdir -p $OUT
    $PY -m bench.cuda.kernel_count --model $MODEL --cupti --out $OUT/kernel_count.json 2>&1 | tail -8
}

gap() {  # single-stream decode: BatchGenerator vs EngineCore vs AsyncEngine, in-process
    $PY -m bench.cuda.serve_gap --model $MODEL --out $OUT/serve_gap.json 2>&1 | tail -8
}

single() {  # $1: targets; the HTTP single-stream numbers only
    mkdir -p $OUT
    $PY -m bench.run --model $MODEL --targets "$1" --scenarios single --reps 3 \
        --no-bandwidth --ready-timeout 300 --out-dir $W/bench 2>&1 | grep -A4 -E "Single stream|^## " | tail -40
}

profile() {
    $PY -m bench.cuda.step_profile --model $MODEL --out $OUT/step_profile.json 2>&1 | tail -40
}

"$@"
