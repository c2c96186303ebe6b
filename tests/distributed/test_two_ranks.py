"""Two ranks on loopback (`mlx.launch -n 2 --hosts 127.0.0.1`, ring backend) serve the same
greedy tokens over HTTP as one process does: one request at a time, four at once (so
requests join a running batch), prefix-cache hits, a client that hangs up mid-stream,
seeded sampling, and a clean stop of every rank when rank 0 gets SIGTERM."""

from __future__ import annotations

import concurrent.futures as cf
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from .sharded_model import build_sharded_model

READY_TIMEOUT_S = 300
PROMPTS = [
    "The quick brown fox",
    "Hello world! How are you today? " * 3,
    "Paris is the capital of France. " * 6,  # long enough for a prompt snapshot
    "def add(a, b):",
]
MAX_TOKENS = 20
# `mlx.launch`, run by this interpreter (the module has no __main__ guard of its own).
LAUNCH = "import sys; from mlx._distributed_utils.launch import main; sys.exit(main())"

pytestmark = pytest.mark.distributed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m mlx_server`, alone or under `mlx.launch`, with its log."""

    def __init__(self, model: Path, log: Path, launch: list[str] | None = None,
                 extra: tuple[str, ...] = ()):
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        cmd = [sys.executable, "-m", "mlx_server", "--model", str(model), "--port",
               str(self.port), "--max-slots", "4", *extra]
        if launch is not None:
            cmd = [sys.executable, "-c", LAUNCH, *launch, "--", *cmd]
        self._out = open(log, "wb")  # noqa: SIM115 - open for the process's lifetime
        self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(self.base + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(self.tail())

    def tail(self) -> str:
        return self.log.read_bytes()[-4000:].decode(errors="replace")

    def complete(self, prompt: str, **extra) -> dict:
        body = {"prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0,
                "ignore_eos": True, **extra}
        r = httpx.post(self.base + "/v1/completions", json=body, timeout=180)
        assert r.status_code == 200, r.text
        return r.json()

    def text(self, prompt: str, **extra) -> str:
        return self.complete(prompt, **extra)["choices"][0]["text"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._out.close()


@pytest.fixture(scope="module", params=[("qwen3", "tensor"), ("qwen2", "pipeline")],
                ids=["tensor-qwen3", "pipeline-qwen2"])
def servers(request, tmp_path_factory):
    arch, mode = request.param
    root = tmp_path_factory.mktemp(f"dist-{arch}")
    model = build_sharded_model(root / arch, arch)
    single = Server(model, root / "single.log")
    dist = Server(model, root / "dist.log", launch=["-n", "2", "--hosts", "127.0.0.1"],
                  extra=("--distributed", mode))
    try:
        single.wait_ready()
        dist.wait_ready()
        yield single, dist
    finally:
        single.stop()
        dist.stop()


def test_one_at_a_time_matches_one_process(servers):
    single, dist = servers
    expected = [single.text(p) for p in PROMPTS]
    assert [dist.text(p) for p in PROMPTS] == expected
    assert len(set(expected)) == len(expected)  # the model really depends on its input


def test_concurrent_requests_and_prefix_hits_match(servers):
    single, dist = servers
    expected = [single.text(p) for p in PROMPTS]
    with cf.ThreadPoolExecutor(len(PROMPTS)) as ex:
        got = list(ex.map(dist.complete, PROMPTS))
    assert [g["choices"][0]["text"] for g in got] == expected
    # The prompts were seen before: every rank reuses the same cached prefix.
    assert dist.complete(PROMPTS[2])["usage"]["prompt_tokens_details"]["cached_tokens"] > 0


def test_client_hangup_then_next_request_matches(servers):
    single, dist = servers
    body = {"prompt": PROMPTS[1], "max_tokens": 200, "temperature": 0, "ignore_eos": True,
            "stream": True}
    with httpx.stream("POST", dist.base + "/v1/completions", json=body, timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                break  # hang up after the first chunk: rank 0 aborts, the others follow
    assert dist.text(PROMPTS[3]) == single.text(PROMPTS[3])


def test_seeded_sampling_matches(servers):
    single, dist = servers
    extra = {"temperature": 0.9, "seed": 11}
    assert dist.text(PROMPTS[0], **extra) == single.text(PROMPTS[0], **extra)


def test_sigterm_to_rank0_stops_every_rank(servers):
    _, dist = servers
    pid = int(re.search(r"Started server process \[(\d+)\]", dist.log.read_text()).group(1))
    os.kill(pid, signal.SIGTERM)
    assert dist.proc.wait(60) == 0, dist.tail()
    assert "rank 0 stopped; exiting" in dist.log.read_text()
