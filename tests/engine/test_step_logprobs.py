"""The batched step's log-softmax: skipped when no row reads it, exact when one does."""

import importlib
import math
import threading

import mlx.core as mx
import pytest

from mlx_server.config import EngineConfig
from mlx_server.engine import step_logprobs
from mlx_server.engine.core import EngineCore
from mlx_server.engine.loader import load_model
from mlx_server.engine.np_sampling import NumpySampler
from mlx_server.engine.sampling import greedy, make_sampler, reads_logprobs
from mlx_server.engine.types import GenerationRequest, SamplingParams


def _generate_mx():
    return importlib.import_module("mlx_lm.generate").mx


def test_shim_skips_only_inside_and_only_on_its_thread():
    step_logprobs.install()
    gmx = _generate_mx()
    x = mx.array([[1.0, 2.0, 3.0], [0.0, -1.0, 5.0]])
    real = mx.logsumexp(x, axis=-1, keepdims=True)
    assert mx.allclose(gmx.logsumexp(x, axis=-1, keepdims=True), real).item()
    seen = []
    with step_logprobs.skipping(True):
        assert gmx.logsumexp(x, axis=-1, keepdims=True).item() == 0
        # Any other reduction (axis, keepdims) is the real one.
        assert mx.allclose(gmx.logsumexp(x, axis=0), mx.logsumexp(x, axis=0)).item()
        t = threading.Thread(target=lambda: seen.append(gmx.logsumexp(x, axis=-1, keepdims=True)[:, 0].tolist()))
        t.start()
        t.join()
        with step_logprobs.skipping(False):
            assert mx.allclose(gmx.logsumexp(x, axis=-1, keepdims=True), real).item()
        assert gmx.logsumexp(x, axis=-1, keepdims=True).item() == 0
    assert seen[0] == pytest.approx(real[:, 0].tolist())  # (MLX streams are per thread: read there)
    assert mx.allclose(gmx.logsumexp(x, axis=-1, keepdims=True), real).item()
    assert gmx.argmax is mx.argmax  # everything else is mlx.core's


def test_reads_logprobs():
    g = SamplingParams(temperature=0.0)
    assert make_sampler(g) is greedy and not reads_logprobs(g, greedy)
    assert reads_logprobs(SamplingParams(temperature=0.0, logprobs=True), greedy)
    hot = SamplingParams(temperature=0.8, top_p=0.9, seed=1)
    assert not reads_logprobs(hot, NumpySampler(hot, 1))
    assert reads_logprobs(hot, lambda lp: mx.argmax(lp, axis=-1))  # MLX's top-p needs them


@pytest.fixture(scope="module")
def core(tiny_gemma_dir):
    return EngineCore(load_model(tiny_gemma_dir), EngineConfig(max_slots=4, enable_prefix_cache=False))


def _run(core, specs):
    """Submit [(prompt, SamplingParams)], step until done; per request: (tokens, outputs)."""
    outs = {i: [] for i in range(len(specs))}
    for i, (prompt, sp) in enumerate(specs):
        core.submit(GenerationRequest(f"lp{id(specs)}-{i}", prompt, sp), outs[i].append)
    while core.has_work():
        core.step()
    return [([t for o in outs[i] for t in o.token_ids], outs[i]) for i in outs]


PROMPTS = [[5, 9, 23, 7, 81, 3, 14], [11, 2, 40], [40, 41, 42, 43, 44]]


def _counting(calls):
    def count(x, **kw):
        calls.append(x.shape)
        return mx.logsumexp(x, **kw)
    return count


def test_greedy_steps_skip_and_logprob_rows_are_normalized(core, monkeypatch):
    vocab = core.loaded.vocab_size
    calls = []
    monkeypatch.setitem(step_logprobs._impl, "logsumexp", _counting(calls))
    plain = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
    # Reference tokens, read through the logprobs path (every step normalized).
    want = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True, logprobs=True,
                          top_logprobs=vocab)
    ref_runs = _run(core, [(p, want) for p in PROMPTS])
    ref = [toks for toks, _ in ref_runs]
    assert calls and all(len(ref_i) == 6 for ref_i in ref)

    # Greedy rows that report nothing: no reduction at all, the same tokens.
    calls.clear()
    got = _run(core, [(p, plain) for p in PROMPTS])
    assert calls == []
    assert [toks for toks, _ in got] == ref

    # Mixed: the one that asks gets log-probabilities that are normalized over the vocabulary.
    calls.clear()
    mixed = _run(core, [(PROMPTS[0], want), (PROMPTS[1], plain), (PROMPTS[2], plain)])
    assert calls
    toks, outs = mixed[0]
    assert toks == ref[0]
    for o in outs:
        for lp in o.logprobs:
            assert len(lp.top) == vocab
            mass = math.fsum(math.exp(v) for _, _, v in lp.top)
            assert mass == pytest.approx(1.0, abs=1e-4)
            assert lp.logprob <= 1e-6


def _text(outs):
    return "".join(o.text for o in outs)


def test_same_text_with_and_without_skipping(core, monkeypatch):
    plain = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
    skipped = [_text(outs) for _, outs in _run(core, [(p, plain) for p in PROMPTS])]
    real = step_logprobs.skipping
    monkeypatch.setattr(step_logprobs, "skipping", lambda skip: real(False))
    assert [_text(outs) for _, outs in _run(core, [(p, plain) for p in PROMPTS])] == skipped
    assert len(set(skipped)) > 1
