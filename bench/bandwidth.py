"""Memory bandwidth of this machine, and model weight bytes for the decode roofline.

Run as a subprocess with the benchmark environment (so MLX sees the same BLAS and
threads). Four measurements on 512 MiB float32 arrays, best of 5 each:
  numpy_copy  np.copyto(b, a)      bytes moved = read + write = 2 x size
  numpy_read  a.sum()              1 x size
  mx_copy     (a * 1.0) evaluated  2 x size
  mx_read     mx.sum(a) evaluated  1 x size (read only, closest to decode's access)
``bandwidth_GBps`` is the highest of them (the roofline is an upper bound).
Decode reads every weight once per token, so roofline tok/s = bandwidth / weight bytes.

    python -m bench.bandwidth [--mib 512]
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import time
from pathlib import Path


def measure(mib: int = 512, reps: int = 5) -> dict:
    import mlx.core as mx
    import numpy as np

    n = mib * 1024 * 1024 // 4
    nbytes = n * 4
    res: dict[str, float] = {}

    a = np.ones(n, dtype=np.float32)
    b = np.empty_like(a)
    np.copyto(b, a)
    best = min(_timeit(lambda: np.copyto(b, a)) for _ in range(reps))
    res["numpy_copy_GBps"] = 2 * nbytes / best / 1e9
    best = min(_timeit(lambda: a.sum()) for _ in range(reps))
    res["numpy_read_GBps"] = nbytes / best / 1e9
    del a, b

    x = mx.ones((n,), dtype=mx.float32)
    mx.eval(x)
    mx.eval(x * 1.0)
    best = min(_timeit(lambda: mx.eval(x * 1.0)) for _ in range(reps))
    res["mx_copy_GBps"] = 2 * nbytes / best / 1e9
    mx.eval(mx.sum(x))
    best = min(_timeit(lambda: mx.eval(mx.sum(x))) for _ in range(reps))
    res["mx_read_GBps"] = nbytes / best / 1e9
    res["bandwidth_GBps"] = max(res.values())
    res["array_MiB"] = mib
    return res


def _timeit(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def weight_bytes(model_dir: str | Path) -> int:
    """Sum of tensor bytes over the folder's *.safetensors files (from headers)."""
    total = 0
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        with open(f, "rb") as fh:
            (hlen,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(hlen))
        for k, v in header.items():
            if k == "__metadata__":
                continue
            s, e = v["data_offsets"]
            total += e - s
    return total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=512)
    args = ap.parse_args(argv)
    sys.stdout.write(json.dumps(measure(args.mib)) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
