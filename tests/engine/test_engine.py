"""The engine through its public interface, on tiny random-weight models."""

import asyncio

import pytest

from tiny_model import build_model

from mlx_server.config import EngineConfig
from mlx_server.engine.async_engine import AsyncEngine
from mlx_server.engine.loader import load_model
from mlx_server.engine.types import (
    CapacityError,
    GenerationRequest,
    InvalidRequestError,
    PromptTooLongError,
    QueueFullError,
    SamplingParams,
)


def make_engine(path, **cfg):
    eng = AsyncEngine(lambda: load_model(path), EngineConfig(**cfg), "tiny").start()
    assert eng.wait_ready(60), eng.health()
    return eng


@pytest.fixture(scope="module")
def llama(tiny_llama_dir):
    eng = make_engine(tiny_llama_dir, max_slots=8)
    yield eng
    eng.shutdown()


@pytest.fixture(scope="module")
def gemma(tiny_gemma_dir):
    eng = make_engine(tiny_gemma_dir, max_slots=8)
    yield eng
    eng.shutdown()


_ids = iter(range(10**9))


async def run(eng, prompt, n=16, **kw):
    ids = eng.render_chat([{"role": "user", "content": prompt}]) if isinstance(prompt, str) else prompt
    kw.setdefault("temperature", 0.0)
    req = GenerationRequest(f"r{next(_ids)}", ids, SamplingParams(max_tokens=n, ignore_eos=True, **kw))
    outs = [o async for o in eng.generate(req)]
    return "".join(o.text for o in outs), outs


PROMPTS = [f"Hello world {i}: the quick brown fox jumps" for i in range(8)]


@pytest.mark.parametrize("which", ["llama", "gemma"])
async def test_batched_equals_alone(which, request):
    eng = request.getfixturevalue(which)
    alone = [(await run(eng, p, cache_prompt_salt(i)))[0] for i, p in enumerate(PROMPTS)]
    together = await asyncio.gather(*[run(eng, p, cache_prompt_salt(i)) for i, p in enumerate(PROMPTS)])
    assert [t[0] for t in together] == alone
    assert len(set(alone)) > 1  # outputs depend on the prompt


def cache_prompt_salt(i):
    return 16


async def test_usage_and_finish(llama):
    text, outs = await run(llama, "Paris is the capital", n=5)
    last = outs[-1]
    assert last.finish_reason == "length" and last.completion_tokens == 5
    assert last.prompt_tokens == len(llama.render_chat([{"role": "user", "content": "Paris is the capital"}]))
    assert all(o.finish_reason is None for o in outs[:-1])


async def test_prefix_cache_hit_and_same_output(llama):
    long = "Paris is the capital of France. " * 12
    a, oa = await run(llama, long + "A")
    b, ob = await run(llama, long + "A")
    assert ob[-1].cached_tokens >= ob[-1].prompt_tokens - 1
    assert a == b
    c, oc = await run(llama, long + "B different ending")
    assert oc[-1].cached_tokens >= len(llama.encode(long)) - 2


async def test_multiturn_history_hits(gemma):
    """A resent history with the assistant's reply hits beyond the sliding window."""
    system = "You are terse. " * 30
    msgs = [{"role": "system", "content": system}, {"role": "user", "content": "Hi there"}]
    reply, o1 = await run(gemma, gemma.render_chat(msgs), n=8)
    msgs += [{"role": "assistant", "content": reply}, {"role": "user", "content": "And then?"}]
    ids2 = gemma.render_chat(msgs)
    _, o2 = await run(gemma, ids2, n=8)
    # Everything up to turn 1's generation header is reused, well past the 16-token window.
    assert o2[-1].cached_tokens >= o1[-1].prompt_tokens - 5


async def test_rotating_cache_hit_is_exact(tiny_gemma_dir):
    eng = make_engine(tiny_gemma_dir, max_slots=2)
    cold = make_engine(tiny_gemma_dir, max_slots=2, enable_prefix_cache=False)
    try:
        msgs = [{"role": "user", "content": "The quick brown fox jumps over the lazy dog. " * 6}]
        reply, _ = await run(eng, msgs[0]["content"])
        msgs += [{"role": "assistant", "content": reply}, {"role": "user", "content": "more"}]
        warm_text, warm = await run(eng, eng.render_chat(msgs))
        cold_text, cold_out = await run(cold, cold.render_chat(msgs))
        assert warm[-1].cached_tokens > 16  # past the window: only exact prefixes serve
        assert cold_out[-1].cached_tokens == 0
        assert warm_text == cold_text
        # A prompt that diverges inside the window's past cannot reuse the rotated cache.
        await run(eng, msgs[0]["content"] + " but different")
        assert eng.stats()["prefix_cache_untrimmable_skips"] >= 1
    finally:
        eng.shutdown()
        cold.shutdown()


async def test_prompt_inside_window_snapshots_without_a_split(tmp_path):
    """A prompt shorter than the sliding window is kept whole once read (no extra step),
    so a later prompt that diverges near its end still reuses it, with exact output."""
    path = build_model(tmp_path / "gemma128", "gemma3_text", window=128)
    eng = make_engine(path, max_slots=2)
    cold = make_engine(path, max_slots=2, enable_prefix_cache=False)
    try:
        base = "The quick brown fox jumps over the lazy dog. " * 4
        first = eng.render_chat([{"role": "user", "content": base + "A"}])
        assert 32 < len(first) < 128
        steps0 = eng.stats()["steps"]
        _, o1 = await run(eng, first, n=40)  # prompt + 40 > window: the final cache can't trim
        # prompt read, first token, 39 more: no extra step for a snapshot segment
        assert eng.stats()["steps"] - steps0 == 2 + 40
        second = eng.render_chat([{"role": "user", "content": base + "B, then more"}])
        warm_text, warm = await run(eng, second, n=8)
        cold_text, _ = await run(cold, second, n=8)
        shared = next(i for i, (a, b) in enumerate(zip(first, second)) if a != b)
        assert warm[-1].cached_tokens == shared
        assert warm_text == cold_text
    finally:
        eng.shutdown()
        cold.shutdown()


async def test_abort_before_the_engine_sees_a_request_ends_its_stream(tiny_llama_dir):
    """The abort's final output comes from the aborting thread, not from an engine step:
    it must still reach the reader (here no step will ever run again)."""
    eng = make_engine(tiny_llama_dir)
    eng.shutdown()  # the engine loop is gone; the core still takes requests
    req = GenerationRequest("early", eng.render_chat([{"role": "user", "content": "hi"}]),
                            SamplingParams(max_tokens=4))
    stream = eng.generate(req)
    first = asyncio.ensure_future(stream.__anext__())
    await asyncio.sleep(0.05)  # the request now sits in the engine's inbox
    await eng.abort("early")
    out = await asyncio.wait_for(first, 5)
    assert out.finish_reason == "abort"
    await stream.aclose()


async def test_stop_string_not_in_output(llama):
    full, _ = await run(llama, "Hello", n=24)
    stop = full[5:8]
    text, outs = await run(llama, "Hello", n=24, stop=(stop,))
    assert stop not in text and full.startswith(text) and outs[-1].finish_reason == "stop"
    assert len(text) <= full.index(stop)


async def test_seeded_sampling_reproducible(llama):
    a, _ = await run(llama, "Hello", n=12, temperature=1.0, seed=7)
    b, _ = await run(llama, "Hello", n=12, temperature=1.0, seed=7)
    c, _ = await run(llama, "Hello", n=12, temperature=1.0, seed=8)
    assert a == b and a != c


async def test_logprobs(llama):
    _, outs = await run(llama, "Hello", n=4, logprobs=True, top_logprobs=3)
    lps = [lp for o in outs for lp in o.logprobs]
    assert len(lps) == 4
    for lp in lps:
        assert lp.logprob <= 0 and len(lp.top) == 3
        assert lp.top[0][2] >= lp.logprob - 1e-4  # greedy picks the top token
        assert lp.top[0][0] == lp.token_id


async def test_logit_bias_forces_token(llama):
    _, outs = await run(llama, "Hello", n=4, logit_bias={42: 100.0})
    assert [t for o in outs for t in o.token_ids] == [42] * 4
    with pytest.raises(InvalidRequestError):
        await run(llama, "Hello", n=2, logit_bias={10**6: 1.0})


async def test_prompt_too_long(llama):
    with pytest.raises(PromptTooLongError) as e:
        await run(llama, [5] * 600, n=2)
    assert "600" in str(e.value) and "512" in str(e.value)


async def test_capacity_error(tiny_llama_dir):
    eng = make_engine(tiny_llama_dir, cache_bytes=1000)
    try:
        with pytest.raises(CapacityError):
            await run(eng, "Hello", n=100)
    finally:
        eng.shutdown()


async def test_abort_frees_slot(llama):
    req = GenerationRequest("abort-me", llama.render_chat([{"role": "user", "content": "x"}]),
                            SamplingParams(max_tokens=400, temperature=0, ignore_eos=True))
    agen = llama.generate(req)
    await agen.__anext__()
    await agen.aclose()
    for _ in range(100):
        if llama.stats()["slots_busy"] == 0:
            break
        await asyncio.sleep(0.02)
    assert llama.stats()["slots_busy"] == 0


async def test_queue_full(tiny_llama_dir):
    eng = make_engine(tiny_llama_dir, max_slots=1, max_queue=1)
    try:
        tasks = [asyncio.create_task(run(eng, "x", n=300)) for _ in range(4)]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert any(isinstance(r, QueueFullError) for r in results)
        assert any(isinstance(r, tuple) for r in results)
    finally:
        eng.shutdown()


async def test_timeout(tiny_llama_dir):
    eng = make_engine(tiny_llama_dir)
    try:
        ids = eng.render_chat([{"role": "user", "content": "x"}])
        req = GenerationRequest("t", ids, SamplingParams(max_tokens=400, temperature=0, ignore_eos=True),
                                timeout_s=0.05)
        outs = [o async for o in eng.generate(req)]
        assert outs[-1].finish_reason == "timeout"
    finally:
        eng.shutdown()


async def test_health_ok_and_stats(llama):
    assert llama.health().ok
    s = llama.stats()
    assert s["slots_total"] == 8 and s["kv_budget_bytes"] > 0


async def test_health_reports_wedged_loop(tiny_llama_dir):
    """A step that never returns turns health non-ok; it recovers once the loop moves again."""
    import threading

    eng = make_engine(tiny_llama_dir, wedge_timeout_s=0.3)
    release = threading.Event()
    real_step = eng.core.step

    def stuck_step():
        release.wait(10)
        real_step()

    eng.core.step = stuck_step
    try:
        task = asyncio.create_task(run(eng, "Hello", n=2))
        await asyncio.sleep(0.8)
        h = eng.health()
        assert not h.ok and h.status == "wedged"
        release.set()
        await task
        await asyncio.sleep(0.1)
        assert eng.health().ok
    finally:
        release.set()
        eng.shutdown()


async def test_failing_step_ends_only_that_batch_and_engine_recovers(tiny_llama_dir):
    eng = make_engine(tiny_llama_dir)
    real = eng.core.gen._next
    calls = {"n": 0}

    def boom():
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("injected")
        return real()

    eng.core.gen._next = boom
    try:
        _, outs = await run(eng, "Hello", n=8)
        assert outs[-1].finish_reason == "error"
        text, outs = await run(eng, "Hello", n=4)  # a fresh generator serves the next request
        assert outs[-1].finish_reason == "length"
    finally:
        eng.shutdown()


async def test_one_failing_sequence_does_not_hurt_the_others(llama):
    """An exception inside one request's generation ends that request only."""
    from mlx_server.engine import sequence as seqmod

    real = seqmod.Sequence.on_token

    def on_token(self, token, logprobs, finish):
        if self.request.request_id.startswith("bad"):
            raise ValueError("injected fault")
        return real(self, token, logprobs, finish)

    seqmod.Sequence.on_token = on_token
    try:
        ids = llama.render_chat([{"role": "user", "content": "Hello"}])
        bad = GenerationRequest("bad-1", ids, SamplingParams(max_tokens=8, temperature=0, ignore_eos=True))

        async def run_bad():
            return [o async for o in llama.generate(bad)]

        good_alone, _ = await run(llama, "Hello", n=8)
        bad_outs, (good_text, good_outs) = await asyncio.gather(run_bad(), run(llama, "Hello", n=8))
        assert bad_outs[-1].finish_reason == "error" and "injected" in bad_outs[-1].error
        assert good_outs[-1].finish_reason == "length" and good_text == good_alone
    finally:
        seqmod.Sequence.on_token = real
