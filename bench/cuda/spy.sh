#!/usr/bin/env bash
# Sample where the server's threads spend a single stream's (or N streams') time, with py-spy.
# usage (on the device, after device.sh stage1/stage2): bash bench/cuda/spy.sh N SECONDS [server args]
set -uo pipefail
W=/tmp/w; N=${1:-1}; S=${2:-8}; shift 2
export PYTHONPATH=$W/site PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
python3 -m mlx_server --model $W/gemma3-270m-bf16 --port 8123 --max-slots 32 "$@" > $OUT/spy-server.log 2>&1 &
PID=$!
for i in $(seq 1 120); do curl -sf localhost:8123/health >/dev/null && break; sleep 1; done
python3 - <<PY &
import asyncio, httpx, time
async def one(c):
    t_end = time.time() + $S + 4
    while time.time() < t_end:
        async with c.stream("POST", "http://127.0.0.1:8123/v1/completions", json={"prompt": "Once upon a time", "max_tokens": 256, "temperature": 0, "stream": True, "ignore_eos": True}) as r:
            async for _ in r.aiter_lines(): pass
async def main():
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=64)) as c:
        await asyncio.gather(*[one(c) for _ in range($N)])
asyncio.run(main())
PY
CL=$!
sleep 2
$W/site/bin/py-spy record -p $PID -d $S -r 200 -f raw --threads -o $OUT/spy-$N.txt --nonblocking 2>&1 | tail -2
curl -s localhost:8123/metrics | grep -E "^llamacpp:(predicted_tokens_seconds|n_decode_total)" 
wait $CL; kill $PID; wait $PID 2>/dev/null
