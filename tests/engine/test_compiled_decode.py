"""compiled_decode.py: compiled decode steps give the engine's own tokens and caches.

The tiny Gemma is loaded in bfloat16 so no CPU path (cpu_head's host sync) is installed
and the compiled trace can run here on MLX's CPU backend, as it runs on a GPU.
"""

import dataclasses

import mlx.core as mx
import pytest
from mlx_lm.models.cache import BatchKVCache, BatchRotatingKVCache, KVCache, RotatingKVCache

from mlx_server.cli import _engine_config, build_parser
from mlx_server.config import EngineConfig, SpecConfig
from mlx_server.engine import compiled_decode as cd
from mlx_server.engine.core import EngineCore, _compiles
from mlx_server.engine.loader import load_model
from mlx_server.engine.types import GenerationRequest, SamplingParams


@pytest.fixture(scope="module")
def loaded(tiny_gemma_dir):
    return load_model(tiny_gemma_dir, dtype="bfloat16")


def _prompt(vocab, i, n):
    return [2] + [3 + (i * 101 + 37 * j) % (vocab - 3) for j in range(n - 1)]


def _run(loaded, mode, prompts, max_tokens, prefix_cache=False, slots=4):
    core = EngineCore(loaded, EngineConfig(max_slots=slots, enable_prefix_cache=prefix_cache,
                                           compile_decode=mode))
    got, cached = {}, {}
    for i, (p, n) in enumerate(zip(prompts, max_tokens)):
        got[i] = []

        def emit(o, i=i):
            got[i].extend(o.token_ids)
            if o.finish_reason is not None:
                cached[i] = o.cached_tokens
        core.submit(GenerationRequest(f"r{i}", p, SamplingParams(max_tokens=n, temperature=0.0,
                                                                 ignore_eos=True)), emit)
    while core.has_work():
        core.step()
    return core, got, cached


def test_compiled_steps_give_the_same_tokens(loaded):
    # 5 requests through 4 slots: rows join and leave; prompts of 3-31 tokens with up to
    # 42 new ones cross the 16-token sliding window (tests/tiny_model.py)
    prompts = [_prompt(loaded.vocab_size, i, 3 + 7 * i) for i in range(5)]
    max_tokens = [30 + 3 * i for i in range(5)]
    off, want, _ = _run(loaded, "off", prompts, max_tokens)
    on, got, _ = _run(loaded, "on", prompts, max_tokens)
    assert not off._compile and on._compile
    assert got == want
    assert [len(t) for t in got.values()] == max_tokens
    assert isinstance(on.gen._generation_batch.model, cd.CompiledModel)
    assert not isinstance(off.gen._generation_batch.model, cd.CompiledModel)
    assert len(cd.compiled_model(loaded.model)._windows) == 4  # it ran: a layout was traced


def test_caches_handed_back_serve_a_prefix_hit(loaded):
    # The first request's finished cache comes from FixedKV.extract; the second resends
    # its prompt and output and must decode from that cache as from an uncompiled one.
    first = _prompt(loaded.vocab_size, 7, 20)
    results = {}
    for mode in ("off", "on"):
        core, got, _ = _run(loaded, mode, [first], [12], prefix_cache=True)
        second = first + got[0] + [5, 6, 7]
        sp = SamplingParams(max_tokens=10, temperature=0.0, ignore_eos=True)
        out, usage = [], []

        def emit(o):
            out.extend(o.token_ids)
            if o.finish_reason is not None:
                usage.append(o.cached_tokens)
        core.submit(GenerationRequest("again", second, sp), emit)
        while core.has_work():
            core.step()
        results[mode] = (got[0], out, usage)
    assert results["on"] == results["off"]
    assert results["on"][2] and results["on"][2][0] > 0  # the hit was taken


def _batch_caches(lengths, window):
    """A BatchKVCache and a BatchRotatingKVCache holding rows of these lengths,
    left-padded as mlx-lm pads; values count positions so their layout can be checked."""
    full, ring = [], []
    for n in lengths:
        k = (mx.arange(n, dtype=mx.float32) + 1)[None, None, :, None] * mx.ones((1, 1, 1, 2))
        c = KVCache()
        c.update_and_fetch(k, k)
        full.append(c)
        r = RotatingKVCache(max_size=window)
        r.update_and_fetch(k, k)
        ring.append(r)
    return BatchKVCache.merge(full), BatchRotatingKVCache.merge(ring)


@pytest.mark.parametrize("lengths", [[3, 7], [20, 5], [8, 8]])
def test_fixed_layout_and_extract_round_trip(lengths):
    window = 8
    bfull, bring = _batch_caches(lengths, window)
    want_full = [bfull.extract(i) for i in range(len(lengths))]
    want_ring = [bring.extract(i) for i in range(len(lengths))]
    ffull, fring = cd.FixedKV.from_batch(bfull), cd.FixedKV.from_batch(bring)
    assert ffull.host == lengths == fring.host
    assert ffull.keys.shape[2] == 256 and fring.keys.shape[2] == window
    for i, n in enumerate(lengths):
        # position p (value p + 1) sits at slot p, or p mod window in the ring
        assert ffull.keys[i, 0, :n, 0].tolist() == [float(p + 1) for p in range(n)]
        for p in range(max(0, n - window), n):
            assert fring.keys[i, 0, p % window, 0].item() == p + 1
        got_f, got_r = ffull.extract(i), fring.extract(i)
        assert isinstance(got_f, KVCache) and isinstance(got_r, RotatingKVCache)
        assert got_f.offset == want_full[i].offset == n
        assert mx.array_equal(got_f.keys, want_full[i].keys)
        assert got_r.offset == want_ring[i].offset and got_r._idx == want_ring[i]._idx
        assert mx.array_equal(got_r.keys, want_ring[i].keys)


def test_mask_marks_what_was_written():
    keys = mx.zeros((2, 1, 4, 8))
    pos = mx.array([1, 6], dtype=mx.int32)
    # row 0 at position 1: slots 0-1 written; row 1 at 6: every slot of a 4-slot ring
    # holds one of positions 3..6, all inside the window
    for window in (4, None):
        mask = cd.FixedKV(keys, keys, pos, window, [1, 6]).make_mask(1)
        assert mask[:, 0, 0].tolist() == [[True, True, False, False], [True, True, True, True]]


def test_filter_extend_and_room():
    bfull, _ = _batch_caches([3, 7], 8)
    f = cd.FixedKV.from_batch(bfull)
    f.filter([1])
    assert f.host == [7] and f.keys.shape[0] == 1
    other, _ = _batch_caches([300], 8)
    f.extend(other)  # converted and padded to the longer capacity
    assert f.host == [7, 300] and f.keys.shape[2] == 512 and f.offset.tolist() == [7, 300]
    f.host = [7, 512]
    f.ensure_room()
    assert f.keys.shape[2] == 768
    assert f.nbytes == f.keys.nbytes * 2
    f.filter([0])  # the long row leaves: capacity back to what the short one needs
    assert f.host == [7] and f.keys.shape[2] == 256
    assert f.keys[0, 0, :7, 0].tolist() == [float(p + 1) for p in range(7)]


def test_warm_up_and_bounded_traces(loaded, monkeypatch):
    cm = cd.compiled_model(loaded.model)
    cm._shapes.clear()
    cd.warm_up(loaded.model, [1, 2, 4])
    assert {s[0] for s in cm._shapes} == {1, 2, 4}
    # Past MAX_TRACES the traces are dropped and rebuilt: the tokens do not change.
    monkeypatch.setattr(cd, "MAX_TRACES", 2)
    prompts = [_prompt(loaded.vocab_size, i, 3 + 7 * i) for i in range(5)]
    max_tokens = [30 + 3 * i for i in range(5)]
    _, want, _ = _run(loaded, "off", prompts, max_tokens)
    before = cm._fn
    _, got, _ = _run(loaded, "on", prompts, max_tokens)
    assert got == want
    assert cm._fn is not before and len(cm._shapes) <= 2


def test_when_it_compiles(loaded):
    base = EngineConfig()
    assert not _compiles(base, loaded, False)  # "auto" stays off on CPU
    assert _compiles(dataclasses.replace(base, compile_decode="on"), loaded, False)
    on = dataclasses.replace(base, compile_decode="on")
    assert not _compiles(on, loaded, True)  # speculative decoding
    assert not _compiles(dataclasses.replace(on, kv_cache_type_k="q8_0"), loaded, False)
    assert not _compiles(on, dataclasses.replace(loaded, sync_forward=True), False)
    assert not _compiles(dataclasses.replace(on, spec=SpecConfig()), loaded, True)
    assert not _compiles(on, dataclasses.replace(loaded, vision=object()), False)


def test_llama_layout_too(tiny_llama_dir):
    # Full attention only (no sliding window): every layer a growing FixedKV.
    llama = load_model(tiny_llama_dir, dtype="bfloat16")
    prompts = [_prompt(llama.vocab_size, i, 4 + 9 * i) for i in range(3)]
    max_tokens = [20, 9, 14]
    _, want, _ = _run(llama, "off", prompts, max_tokens, slots=2)
    on, got, _ = _run(llama, "on", prompts, max_tokens, slots=2)
    assert on._compile and got == want


def test_cli_flag_and_distributed_off():
    p = build_parser()
    assert _engine_config(p.parse_args([])).compile_decode == "auto"
    assert _engine_config(p.parse_args(["--compile-decode", "off"])).compile_decode == "off"
    assert _engine_config(p.parse_args(["--compile-decode", "on", "--distributed"])
                          ).compile_decode == "off"
