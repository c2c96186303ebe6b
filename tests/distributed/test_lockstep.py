"""The lockstep cores and the broadcast channel in one process, without mlx.launch.

A leader and a follower core share one (unsharded) model but have their own batch
generators, caches and queues; the follower replays the leader's recorded step inputs and
must make the same decisions and produce the same tokens.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

import numpy as np
import pytest

from mlx_server.config import EngineConfig
from mlx_server.distributed import lockstep
from mlx_server.distributed.channel import FRAME_WORDS, Broadcast
from mlx_server.distributed.lockstep import FollowerCore, LeaderCore
from mlx_server.engine.loader import load_model
from mlx_server.engine.types import GenerationRequest, SamplingParams


class Recorded:
    """A channel whose messages the leader records and the follower replays."""

    def __init__(self, rank: int, log: deque):
        self.rank, self.log = rank, log

    def share(self, obj: Any = None, stream: Any = None) -> Any:
        if self.rank == 0:
            self.log.append(obj)
            return obj
        return self.log.popleft()


def _outputs(core_outputs: dict[str, list]):
    """Text, token ids and, at the end, (finish reason, completion tokens) per request."""
    def emit(out):
        got = core_outputs.setdefault(out.request_id, [])
        got.append((out.text, out.token_ids))
        if out.finish_reason is not None:
            got.append((out.finish_reason, out.completion_tokens))
    return emit


def test_follower_replays_the_leaders_decisions(tiny_llama_dir, monkeypatch):
    loaded = load_model(tiny_llama_dir)
    config = EngineConfig(max_slots=2, max_queue=8)  # fewer slots than requests: some wait
    log: deque = deque()
    leader = LeaderCore(loaded, config, Recorded(0, log))
    follower = FollowerCore(loaded, config, Recorded(1, log))
    assert follower.budget == leader.budget

    led: dict[str, list] = {}
    followed: dict[str, list] = {}
    monkeypatch.setattr(lockstep, "_discard", _outputs(followed))
    tok = loaded.tokenizer
    prompts = ["The quick brown fox", "Hello world! " * 4, "Paris is the capital " * 3,
               "def add(a, b):"]
    for i, p in enumerate(prompts):
        sp = SamplingParams(max_tokens=12, temperature=0.0 if i % 2 else 0.8, ignore_eos=True)
        leader.submit(GenerationRequest(f"r{i}", tok.encode(p), sp), _outputs(led))
    steps = 0
    while leader.has_work():
        leader.step()
        steps += 1
        if steps == 3:
            leader.abort("r1")  # mid-generation
    leader.stop_followers()
    sent = list(log)
    follower.follow()

    assert led == followed
    assert led["r1"][-1][0] == "abort"
    assert all(led[r][-1] == ("length", 12) for r in ("r0", "r2", "r3"))
    assert leader.counters == follower.counters
    # Sampled requests got a seed from rank 0, so the follower drew the same tokens.
    new = [r for msg in sent for r in msg.new]
    assert len(new) == 4 and all(r.sampling.seed is not None for r in new[::2])


def test_broadcast_frames_long_messages():
    """Two ranks (threads) exchange one short and one multi-frame message."""
    barrier = threading.Barrier(2)
    slots: list[Any] = [None, None]
    results: list[Any] = [None, None]

    class Group:
        def __init__(self, rank: int):
            self._rank = rank

        def rank(self) -> int:
            return self._rank

        def size(self) -> int:
            return 2

    def run(rank: int) -> None:
        b = Broadcast(Group(rank))  # type: ignore[arg-type]

        def all_sum(words: np.ndarray, stream: Any) -> np.ndarray:
            slots[rank] = words
            barrier.wait()
            total = slots[0] + slots[1]
            barrier.wait()
            return total

        b._all_sum = all_sum  # type: ignore[method-assign]
        long = {"tokens": list(range(FRAME_WORDS * 3))}
        results[rank] = [b.share({"a": 1} if rank == 0 else None),
                         b.share(long if rank == 0 else None)]

    threads = [threading.Thread(target=run, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results[0] == results[1]
    assert results[1][1]["tokens"][-1] == FRAME_WORDS * 3 - 1


@pytest.mark.parametrize("mode", ["auto", "tensor", "pipeline"])
def test_cli_flag(mode):
    from mlx_server.cli import parse_args

    assert parse_args([], env={}).distributed.mode == "off"
    argv = ["--distributed"] + ([] if mode == "auto" else [mode]) + ["--port", "9"]
    config = parse_args(argv, env={})
    assert (config.distributed.mode, config.server.port) == (mode, 9)
