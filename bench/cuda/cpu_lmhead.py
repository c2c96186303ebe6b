"""The output projection (262144 x 640, float32) on MLX's CPU backend vs numpy, by batch size."""
import time

import mlx.core as mx
import numpy as np

mx.set_default_device(mx.cpu)
V, D = 262144, 640
W = mx.random.normal((V, D))
Wt = mx.contiguous(W.T)
mx.eval(W, Wt)
Wn = np.asarray(W)


def t(f, n=9):
    f()
    ts = []
    for _ in range(n):
        s = time.perf_counter()
        f()
        ts.append(time.perf_counter() - s)
    return sorted(ts)[n // 2] * 1000


for B in (1, 2, 4, 8):
    x = mx.random.normal((B, D))
    mx.eval(x)
    xn = np.asarray(x)
    print(f"B={B}: x@W.T {t(lambda: mx.eval(x @ W.T)):.1f} ms | x@Wt {t(lambda: mx.eval(x @ Wt)):.1f} ms"
          f" | W@x.T {t(lambda: mx.eval(W @ x.T)):.1f} ms | numpy xn@Wn.T {t(lambda: xn @ Wn.T):.1f} ms"
          f" | numpy Wn@xn.T {t(lambda: Wn @ xn.T):.1f} ms", flush=True)
a = mx.random.normal((1024, 1024)); mx.eval(a)
ms = t(lambda: mx.eval(a @ a))
print(f"1024^2 matmul {ms:.1f} ms = {2 * 1024**3 / ms / 1e6:.1f} GFLOP/s")
