"""`EngineClient.slots()`: every slot, idle or running, with its request's counts."""

import asyncio

import pytest

from mlx_server.config import EngineConfig
from mlx_server.engine.async_engine import AsyncEngine
from mlx_server.engine.loader import load_model
from mlx_server.engine.types import GenerationRequest, SamplingParams, SlotInfo


@pytest.fixture(scope="module")
def engine(tiny_llama_dir):
    eng = AsyncEngine(lambda: load_model(tiny_llama_dir), EngineConfig(max_slots=3), "t").start()
    assert eng.wait_ready(60), eng.health()
    yield eng
    eng.shutdown()


def test_idle_slots(engine):
    assert engine.slots() == [SlotInfo(0), SlotInfo(1), SlotInfo(2)]
    assert not any(s.is_processing for s in engine.slots())


async def test_running_sequences_hold_the_lowest_free_slots(engine):
    prompts = [list(range(10 + i, 50 + i)) for i in range(2)]
    requests = [GenerationRequest(f"slot-{i}", p, SamplingParams(max_tokens=40, ignore_eos=True))
                for i, p in enumerate(prompts)]
    seen: list[list[SlotInfo]] = []

    async def consume(req: GenerationRequest) -> None:
        async for out in engine.generate(req):
            if out.completion_tokens >= 5 and req.request_id == "slot-1" and not seen:
                seen.append(engine.slots())

    await asyncio.gather(*(consume(r) for r in requests))
    (snapshot,) = seen
    busy = {s.request_id: s for s in snapshot if s.is_processing}
    assert set(busy) == {"slot-0", "slot-1"}
    assert sorted(s.id for s in busy.values()) == [0, 1]
    assert not snapshot[2].is_processing and snapshot[2].id == 2
    for s in busy.values():
        assert s.prompt_tokens == 40 and s.max_tokens == 40 and 1 <= s.generated_tokens <= 40
    # All free again, once the engine thread has moved past the last outputs it sent.
    for _ in range(1000):  # generous: a loaded CI machine can lag the engine thread
        if not any(s.is_processing for s in engine.slots()):
            break
        await asyncio.sleep(0.01)
    assert engine.slots() == [SlotInfo(0), SlotInfo(1), SlotInfo(2)]
