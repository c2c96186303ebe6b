"""Process management: one server at a time, in its own process group, always killed.

Every child gets ``start_new_session`` (its own process group, so Ctrl-C in the
terminal reaches only the harness, which then tears the group down) and, on Linux,
``PR_SET_PDEATHSIG`` so it dies with the harness even if the harness is SIGKILLed.
``stop_all`` runs from ``finally`` blocks, ``atexit`` and the SIGTERM/SIGHUP handler.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import httpx

OPENBLAS = "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3"

_LIVE: list["Proc"] = []


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_env(preload_blas: bool = True) -> tuple[dict[str, str], str]:
    """The one environment every measured process gets, and a BLAS description."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    # No proxies for loopback traffic.
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    if preload_blas and sys.platform.startswith("linux") and os.path.exists(OPENBLAS):
        cur = env.get("LD_PRELOAD", "")
        if OPENBLAS not in cur.split(":"):
            env["LD_PRELOAD"] = f"{OPENBLAS}:{cur}" if cur else OPENBLAS
        blas = f"OpenBLAS via LD_PRELOAD={OPENBLAS}"
    else:
        blas = "default BLAS linked by mlx (no preload)"
    return env, blas


def blas_in_maps(pid: int) -> str | None:
    """Which BLAS libraries a running process has mapped (Linux only)."""
    try:
        text = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return None
    libs = set()
    for line in text.splitlines():
        path = line.split()[-1] if line.split() else ""
        base = os.path.basename(path)
        if "openblas" in path or base.startswith("libblas") or "accelerate" in base.lower():
            libs.add(path)
    return ", ".join(sorted(libs)) or "none mapped"


def _preexec() -> None:  # runs in the child between fork and exec
    os.setsid()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except Exception:  # noqa: BLE001
            pass


class Proc:
    """A child process in its own process group, logging to a file."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log_path: Path,
                 stdout_path: Path | None = None, cwd: str | Path | None = None):
        self.name = name
        self.stdout_path = stdout_path  # separate stdout file (else stdout goes to the log)
        self.cwd = cwd
        self.cmd = cmd
        self.env = env
        self.log_path = log_path
        self.popen: subprocess.Popen | None = None
        self._log: IO[bytes] | None = None
        self._stdout: IO[bytes] | None = None

    def start(self) -> "Proc":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self._log.write(f"$ {' '.join(self.cmd)}\n".encode())
        self._log.flush()
        if self.stdout_path is not None:
            self._stdout = open(self.stdout_path, "wb")
        self.popen = subprocess.Popen(
            self.cmd,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._stdout or self._log,
            stderr=self._log if self._stdout else subprocess.STDOUT,
            preexec_fn=_preexec,
        )
        _LIVE.append(self)
        return self

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, n: int = 30) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def stop(self, grace: float = 10.0) -> None:
        p = self.popen
        if p is None:
            return
        try:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    p.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    pass
            # Kill whatever is left in the group (the leader or its children).
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        finally:
            for f in (self._log, self._stdout):
                if f:
                    f.close()
            self._log = self._stdout = None
            if self in _LIVE:
                _LIVE.remove(self)


def stop_all() -> None:
    for p in list(_LIVE):
        p.stop(grace=5.0)


def install_handlers() -> None:
    """Turn SIGTERM/SIGHUP into KeyboardInterrupt so ``finally`` blocks run."""
    atexit.register(stop_all)

    def _raise(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            signal.signal(sig, _raise)
        except (ValueError, OSError):
            pass
    # Also when started with SIGINT ignored (e.g. `cmd &` from a script).
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    except (ValueError, OSError):
        pass


class ServerNotReady(RuntimeError):
    pass


def wait_ready(proc: Proc, base_url: str, path: str = "/health", timeout: float = 900.0) -> float:
    """Poll ``GET base_url+path`` until 200; return seconds waited. Fails fast if
    the process exits."""
    t0 = time.perf_counter()
    last = "no response"
    with httpx.Client(timeout=5.0, trust_env=False) as c:
        while time.perf_counter() - t0 < timeout:
            if not proc.alive():
                raise ServerNotReady(
                    f"{proc.name} exited with code {proc.popen.returncode if proc.popen else '?'}"
                    f" before becoming ready; log tail:\n{proc.log_tail()}"
                )
            try:
                r = c.get(base_url + path)
                if r.status_code == 200:
                    return time.perf_counter() - t0
                last = f"HTTP {r.status_code}"
            except httpx.HTTPError as e:
                last = type(e).__name__
            time.sleep(0.5)
    raise ServerNotReady(f"{proc.name} not ready after {timeout:.0f}s ({last}); log tail:\n{proc.log_tail()}")


# --- CPU used by processes outside this harness (other users of a shared box) ---

def _stat_busy() -> tuple[float, float] | None:
    """(busy seconds, wall-clock seconds summed over cores) since boot."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    v = [int(x) for x in fields]
    hz = os.sysconf("SC_CLK_TCK")
    idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
    total = sum(v[:8])  # user nice system idle iowait irq softirq steal
    return (total - idle) / hz, total / hz


def _own_cpu() -> float:
    import resource

    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


class ForeignCpu:
    """Average number of cores that processes *other than* this harness and its
    (already reaped) children kept busy between ``start()`` and ``stop()``.
    Call ``stop()`` after the measured children have been waited for."""

    def __init__(self) -> None:
        self._t0: tuple[float, float] | None = None
        self._own0 = 0.0
        self._w0 = 0.0

    def start(self) -> "ForeignCpu":
        self._t0 = _stat_busy()
        self._own0 = _own_cpu()
        self._w0 = time.monotonic()
        return self

    def stop(self) -> float | None:
        t1 = _stat_busy()
        if self._t0 is None or t1 is None:
            return None
        wall = time.monotonic() - self._w0
        if wall <= 0:
            return None
        foreign = (t1[0] - self._t0[0]) - (_own_cpu() - self._own0)
        return max(0.0, foreign / wall)


def wait_idle(max_wait: float, threshold: float = 0.25, log=print) -> float | None:
    """Wait (up to ``max_wait`` s) until other processes use < ``threshold`` cores
    over a 2 s window; return the last measured foreign load (cores)."""
    t0 = time.monotonic()
    last_log = -1e9
    load = None
    while True:
        fc = ForeignCpu().start()
        time.sleep(2.0)
        load = fc.stop()
        if load is None or load < threshold or time.monotonic() - t0 >= max_wait:
            if load is not None and load >= threshold:
                log(f"    machine still busy after {max_wait:.0f}s (other processes use {load:.2f} cores); going on")
            return load
        if time.monotonic() - last_log >= 20:
            last_log = time.monotonic()
            log(f"    waiting for the machine to go idle (other processes use {load:.2f} cores)...")
