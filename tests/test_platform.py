"""platform.bound_malloc: freed large buffers go back to the OS (glibc's ratchet is off)."""

import subprocess
import sys

import pytest

PROBE = """
import sys
import numpy as np
if sys.argv[1] == "bound":
    from mlx_server.platform import bound_malloc
    assert bound_malloc()
def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
big = np.ones(20 << 18, np.float32)  # 20 MiB, mmapped; freeing it raises glibc's threshold
del big
keep = [np.ones(10 << 18, np.float32) for _ in range(30)]  # now 10 MiB blocks come from the heap
last = keep.pop()
del keep  # free all but the block on top
print(rss_mib())
"""

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")


def _rss_after_frees(mode: str, env: dict | None = None) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         check=True, env=env)
    return int(out.stdout.strip())


def test_freed_buffers_leave_resident_memory():
    ratchet = _rss_after_frees("default")
    bounded = _rss_after_frees("bound")
    # glibc alone keeps the ~290 MiB of freed blocks under the last one resident.
    assert ratchet - bounded > 200, (ratchet, bounded)


def test_can_be_turned_off(monkeypatch):
    from mlx_server import platform

    monkeypatch.setenv("MLX_SERVER_MMAP_THRESHOLD", "0")
    assert platform.bound_malloc() is False
