"""Shared checks for the reliability tests: the server is back to idle, with nothing
leaked, and still answers a greedy request the same way."""

from __future__ import annotations

import json
import os
import re
import socket
import time
from contextlib import contextmanager

import httpx
import pytest

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")
GREEDY = {"model": "x", "prompt": "The capital of France is", "max_tokens": 6,
          "temperature": 0}


def metrics(base: str, headers: dict | None = None) -> dict[str, float]:
    """Prometheus text -> {series name: value} (labels dropped; one model per server)."""
    text = httpx.get(base + "/metrics", headers=headers, timeout=10).text
    out = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m:
            out[m.group(1)] = float(m.group(3))
    return out


def idle_problems(base: str, headers: dict | None = None) -> list[str]:
    slots = httpx.get(base + "/slots", headers=headers, timeout=10).json()
    m = metrics(base, headers)
    problems = [f"slot {s['id']} busy with {s['request_id']}" for s in slots if s["is_processing"]]
    for name in ("llamacpp:requests_processing", "llamacpp:requests_deferred",
                 "vllm:num_requests_running", "vllm:num_requests_waiting",
                 "vllm:kv_cache_usage_perc", "mlxserver:kv_reserved_bytes",
                 "mlxserver:kv_active_bytes"):
        if m.get(name, 0.0) != 0.0:
            problems.append(f"{name} = {m[name]}")
    if "mlxserver:kv_reserved_bytes" not in m:
        problems.append("/metrics lacks mlxserver:kv_reserved_bytes")
    return problems


def assert_idle(base: str, timeout: float = 30.0, headers: dict | None = None) -> None:
    """Every slot idle, nothing queued, no KV held by the batch: within `timeout`."""
    deadline = time.monotonic() + timeout
    while (problems := idle_problems(base, headers)) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert not problems, problems


def greedy_text(base: str, headers: dict | None = None) -> str:
    r = httpx.post(base + "/v1/completions", json=GREEDY, headers=headers, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["text"]


@contextmanager
def env(**values: str):
    """Environment for a server started inside the block (Popen copies it at start)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def raw_post(port: int, path: str, body: dict, extra_headers: str = "",
             rcvbuf: int | None = None) -> socket.socket:
    """A POST on a plain socket, so a test controls exactly how (and whether) it reads."""
    sock = socket.socket()
    if rcvbuf is not None:  # before connect, so the window is small from the start
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    data = json.dumps(body).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n{extra_headers}\r\n")
    sock.sendall(head.encode() + data)
    return sock


def read_events(sock: socket.socket, n: int, timeout: float = 120.0) -> tuple[int, bytes]:
    """Read until `n` SSE data events arrived (or the stream ended): how many, and what
    was read (its first line is the status line)."""
    sock.settimeout(timeout)
    buf, seen = b"", 0
    while seen < n:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
        seen = buf.count(b"data: ")
    return seen, buf


def abort_connection(sock: socket.socket) -> None:
    """Close with a RST rather than a FIN: the harshest way a client can vanish."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()


def keep_log(srv, name: str) -> None:
    """Copy the server's log where pytest's rotating temp dirs will not remove it."""
    import shutil
    from pathlib import Path

    out = Path(os.environ.get("RELIABILITY_LOG_DIR", "/tmp/reliability-logs"))
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(srv.log_path, out / f"{name}.log")


def log_lines(path) -> list[str]:
    return path.read_text(errors="replace").splitlines()


def wait_for_log(path, needle: str, timeout: float = 10.0) -> str:
    """The first log line containing `needle` (the server flushes as it goes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log_lines(path):
            if needle in line:
                return line
        time.sleep(0.1)
    pytest.fail(f"no log line with {needle!r}; tail:\n" + "\n".join(log_lines(path)[-15:]))
