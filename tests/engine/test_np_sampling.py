"""The numpy sampler (engine/np_sampling.py): mlx-lm's filters' distribution, seeded draws."""

import math

import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.sample_utils import apply_top_p

from mlx_server.engine import np_sampling
from mlx_server.engine.np_sampling import NumpySampler
from mlx_server.engine.sampling import greedy, make_sampler
from mlx_server.engine.spec_draft import target_logprobs
from mlx_server.engine.types import SamplingParams


def _reference(lp: mx.array, sp: SamplingParams) -> np.ndarray:
    """The distribution the MLX path (and speculative verification) draws from."""
    return np.exp(np.array(target_logprobs(lp, sp)))[0]


PARAMS = [{"temperature": 1.0}, {"temperature": 0.5}, {"temperature": 0.8, "top_p": 0.7},
          {"temperature": 1.3, "min_p": 0.1}, {"temperature": 0.9, "top_k": 5},
          {"temperature": 0.7, "top_p": 0.9, "min_p": 0.05, "top_k": 8}]


@pytest.mark.parametrize("kw", PARAMS)
def test_draws_follow_the_mlx_filters_distribution(kw):
    rng = np.random.default_rng(0)
    lp = mx.array(rng.normal(size=(1, 40)).astype(np.float32) * 2)
    lp = lp - mx.logsumexp(lp, axis=-1, keepdims=True)
    sp = SamplingParams(**kw)
    want = _reference(lp, sp)
    s = NumpySampler(sp, seed=1)
    n = 20_000
    draws = np.array([s(lp).item() for _ in range(n)])
    got = np.bincount(draws, minlength=40) / n
    assert set(np.flatnonzero(got)) <= set(np.flatnonzero(want))  # never a filtered token
    # Each probability within 5 standard errors (a wrong filter or temperature is far off).
    se = np.sqrt(want * (1 - want) / n) + 1e-9
    assert np.all(np.abs(got - want) <= 5 * se + 1e-3), (got.round(3), want.round(3))


@pytest.mark.parametrize("candidates", [1024, 3])
@pytest.mark.parametrize("top_p", [0.05, 0.5, 0.9, 0.999])
def test_top_p_keeps_what_mlx_lm_keeps(monkeypatch, candidates, top_p):
    monkeypatch.setattr(np_sampling, "TOP_P_CANDIDATES", candidates)  # 3: the full-sort path
    rng = np.random.default_rng(2)
    for _ in range(20):
        x = rng.normal(size=300).astype(np.float32) * 3
        x[rng.integers(0, 300, 20)] = x[0]  # ties
        lp = x - np.log(np.exp(x).sum())
        ref = np.isfinite(np.array(apply_top_p(mx.array(lp)[None], top_p))[0])
        ours = lp >= np_sampling._top_p_threshold(lp, top_p)
        assert (ours == ref).all()


def test_seeded_draws_repeat_and_batch_rows_are_independent():
    lp = mx.log(mx.softmax(mx.random.normal((1, 1000)), axis=-1))
    sp = SamplingParams(temperature=1.0, top_p=0.95)
    a = [NumpySampler(sp, 7)(lp).item() for _ in range(1)] + [0]
    s1, s2 = NumpySampler(sp, 7), NumpySampler(sp, 7)
    seq1 = [s1(lp).item() for _ in range(30)]
    seq2 = [s2(lp).item() for _ in range(30)]
    assert seq1 == seq2 and seq1[0] == a[0]
    assert seq1 != [NumpySampler(sp, 8)(lp).item() for _ in range(30)]
    two = NumpySampler(sp, 7)(mx.concatenate([lp, lp]))  # several rows: one draw each
    assert two.shape == (2,) and two.dtype == mx.uint32


def test_make_sampler_on_cpu():
    assert make_sampler(SamplingParams(temperature=0.0)) is greedy
    s = make_sampler(SamplingParams(temperature=0.7, seed=3))
    assert isinstance(s, NumpySampler) == (mx.default_device() == mx.cpu)
    assert math.isclose(s.inv_temp, 1 / 0.7) if isinstance(s, NumpySampler) else True


def test_overflowed_rows_draw_without_warnings():
    """A repetition penalty near 0 turns logits into +-inf; raw logits reach the sampler
    when the step skips normalization (step_logprobs.py)."""
    sampler = NumpySampler(SamplingParams(temperature=0.8, top_p=0.9, min_p=0.05, top_k=5), 3)
    inf, nan = np.inf, np.nan
    rows = [[1.0, inf, -inf, nan, inf, 2.0], [nan, -inf, 3.0, 1.0, nan, 0.5],
            [-inf, -inf, -inf, -inf, -inf, -inf], [nan] * 6]
    with np.errstate(all="raise"):
        for _ in range(20):
            got = sampler(mx.array(np.array(rows, dtype=np.float32))).tolist()
            assert got[0] in (1, 4)  # only the +inf tokens
            assert got[1] in (2, 3, 5)  # never a NaN
            assert 0 <= got[2] < 6 and 0 <= got[3] < 6
