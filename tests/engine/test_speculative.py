"""Speculative decoding inside the batch: same greedy output, same sampling distribution."""

from __future__ import annotations

import itertools
import random
from collections import Counter

import pytest
from tiny_model import build_model

from mlx_server.config import EngineConfig, SpecConfig
from mlx_server.engine.core import EngineCore
from mlx_server.engine.loader import load_model
from mlx_server.engine.ngram import NgramIndex
from mlx_server.engine.types import GenerationRequest, ModelLoadError, SamplingParams

_ids = itertools.count()


@pytest.fixture(scope="module")
def llama(tiny_llama_dir):
    return load_model(tiny_llama_dir)


@pytest.fixture(scope="module")
def other_llama_dir(tmp_path_factory):
    return build_model(tmp_path_factory.mktemp("tiny") / "llama_seed1", "llama", seed=1)


def make_core(loaded, spec: SpecConfig | None = None, slots: int = 4,
              prefix_cache: bool = False) -> EngineCore:
    return EngineCore(loaded, EngineConfig(max_slots=slots, enable_prefix_cache=prefix_cache,
                                           spec=spec or SpecConfig()))


def run(core: EngineCore, prompts: list[list[int]], n: int = 24, seeds=None,
        **sampling) -> list[list[int]]:
    """Submit every prompt at once and step until all finish; the tokens of each."""
    outs: dict[str, list[int]] = {}
    done: set[str] = set()
    rids = []
    for i, p in enumerate(prompts):
        if seeds is not None:
            sampling["seed"] = seeds[i]
        rid = f"s{next(_ids)}"
        rids.append(rid)
        outs[rid] = []
        sampling.setdefault("ignore_eos", True)
        sampling.setdefault("logprobs", True)  # every token is then emitted, text or not
        params = SamplingParams(max_tokens=n, **{"temperature": 0.0, **sampling})

        def emit(o, rid=rid):
            outs[rid].extend(o.token_ids)
            if o.finish_reason is not None:
                done.add(rid)
        core.submit(GenerationRequest(rid, p, params), emit)
    for _ in range(10 * n + 100):
        if len(done) == len(prompts):
            break
        core.step()
    assert len(done) == len(prompts)
    return [outs[r] for r in rids]


def prompts_for(loaded, count: int) -> list[list[int]]:
    """Different lengths; some repetitive, so prompt lookup has something to find."""
    enc = loaded.tokenizer.encode
    texts = ["The quick brown fox jumps over the lazy dog. " * 3,
             "Paris is the capital of France.",
             "def add(a, b):\n    return a + b\n" * 4,
             "Hello world! How are you today? I am fine, thank you. Hello world!"]
    return [enc(t) for t in texts[:count]]


SPECS = {
    "ngram": lambda d: SpecConfig(type="ngram", draft_max=6),
    "draft-same": lambda d: SpecConfig(type="draft", draft_model=str(d["self"]), draft_max=4,
                                       p_min=0.0),
    "draft-other": lambda d: SpecConfig(type="draft", draft_model=str(d["other"]), draft_max=4,
                                        p_min=0.0),
}


@pytest.mark.parametrize("mode", list(SPECS))
@pytest.mark.parametrize("count", [1, 4])
def test_greedy_identical(llama, tiny_llama_dir, other_llama_dir, mode, count):
    prompts = prompts_for(llama, count)
    want = run(make_core(llama), prompts)
    core = make_core(llama, SPECS[mode]({"self": tiny_llama_dir, "other": other_llama_dir}))
    got = run(core, prompts)
    assert got == want
    stats = core.stats()
    assert stats["spec_steps"] > 0 and stats["spec_draft_tokens"] > 0
    if mode == "draft-same":  # its own draft: every draft accepted
        assert stats["spec_accepted_tokens"] == stats["spec_draft_tokens"]
    if mode == "draft-other":
        assert stats["spec_accepted_tokens"] < stats["spec_draft_tokens"]


def test_sliding_window_cache(tiny_gemma_dir):
    """Gemma's rotating caches (window 16 here), left-padded rows of different lengths,
    far past the window: cut back exactly, same output, no fallback steps."""
    gemma = load_model(tiny_gemma_dir)
    prompts = prompts_for(gemma, 4)
    want = run(make_core(gemma), prompts, n=40)
    for spec in (SpecConfig(type="ngram", draft_max=5),
                 SpecConfig(type="draft", draft_model=str(tiny_gemma_dir), draft_max=3, p_min=0.0)):
        core = make_core(gemma, spec)
        assert run(core, prompts, n=40) == want
        stats = core.stats()
        assert stats["spec_fallback_steps"] == 0 and stats["spec_accepted_tokens"] > 0


def test_stops_and_max_tokens_cut_accepted_runs(llama, tiny_llama_dir):
    prompts = prompts_for(llama, 4)
    spec = SpecConfig(type="draft", draft_model=str(tiny_llama_dir), draft_max=6, p_min=0.0)
    full = run(make_core(llama), prompts, n=20)
    stop = full[0][7]  # a token the first sequence emits mid-run
    want = run(make_core(llama), prompts, n=13, stop_token_ids=(stop,))
    got = run(make_core(llama, spec), prompts, n=13, stop_token_ids=(stop,))
    assert got == want
    assert len(got[0]) <= 8 and got[0][-1] == stop
    assert all(len(g) <= 13 for g in got)


def test_logprobs_for_every_accepted_token(llama, tiny_llama_dir):
    core = make_core(llama, SpecConfig(type="draft", draft_model=str(tiny_llama_dir), p_min=0.0))
    outs = []
    core.submit(GenerationRequest("lp", prompts_for(llama, 1)[0],
                                  SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True,
                                                 logprobs=True, top_logprobs=2)), outs.append)
    while not (outs and outs[-1].finish_reason):
        core.step()
    lps = [lp for o in outs for lp in o.logprobs]
    toks = [t for o in outs for t in o.token_ids]
    assert [lp.token_id for lp in lps] == toks and len(toks) == 12
    assert all(lp.top[0][0] == lp.token_id for lp in lps)  # greedy: the best one
    assert any(len(o.token_ids) > 1 for o in outs) or core.stats()["spec_accepted_tokens"] > 0


def test_processor_rows_do_not_draft(llama):
    prompts = prompts_for(llama, 2)
    bias = {"logit_bias": {5: 3.0}}
    want = run(make_core(llama), prompts, **bias)
    assert run(make_core(llama, SpecConfig(type="ngram")), prompts, **bias) == want


@pytest.mark.parametrize("mode", ["draft", "ngram"])
def test_sampling_distribution_matches(llama, other_llama_dir, mode):
    """Rejection sampling keeps the target's distribution: the third token's histogram
    over many seeds, with a mismatched draft model or one-hot prompt-lookup drafts, is as
    close to the plain sampler's as a second plain run is."""
    # Every token in the prompt: prompt lookup always finds the last token and drafts.
    prompt = prompts_for(llama, 2)[1] if mode == "draft" else list(range(5, llama.vocab_size))
    n_samples = 300

    def histogram(spec, seed0):
        core = make_core(llama, spec, slots=16, prefix_cache=True)  # the prompt is read once
        toks = []
        for chunk in range(0, n_samples, 50):
            outs = run(core, [prompt] * 50, n=3, temperature=0.8,
                       seeds=[seed0 + chunk + i for i in range(50)])
            toks += [tuple(o) for o in outs]
        return Counter(t[2] for t in toks), core

    def tv(a, b):
        return 0.5 * sum(abs(a[t] - b[t]) for t in set(a) | set(b)) / n_samples

    base, _ = histogram(None, 0)
    again, _ = histogram(None, 20_000)  # the sampling noise at this sample size
    cfg = (SpecConfig(type="draft", draft_model=str(other_llama_dir), draft_max=2, p_min=0.0)
           if mode == "draft" else SpecConfig(type="ngram", draft_max=2, ngram_min=1))
    spec, core = histogram(cfg, 10_000)
    assert core.stats()["spec_draft_tokens"] > 0
    assert mode == "ngram" or core.stats()["spec_accepted_tokens"] > 0
    assert tv(base, spec) < tv(base, again) + 0.08, (tv(base, spec), tv(base, again))


def test_vocabulary_mismatch_is_a_clear_error(llama, tmp_path):
    bad = build_model(tmp_path / "small_vocab", "llama", vocab_size=100)
    with pytest.raises(ModelLoadError, match="vocabulary"):
        make_core(llama, SpecConfig(type="draft", draft_model=str(bad)))


def test_ngram_index():
    idx = NgramIndex([1, 2, 3, 4, 5, 1, 2, 3], max_n=3)
    assert idx.propose(4) == [4, 5, 1, 2]
    idx.extend([9])
    assert idx.propose(3) == []
    assert NgramIndex([7, 7, 7], max_n=2).propose(2) == [7]


def test_quantized_kv_cache(tmp_path_factory):
    """-ctk/-ctv q8_0 caches (engine/kv_quant.py) are batched KV caches too: cut back alike."""
    path = build_model(tmp_path_factory.mktemp("tiny") / "llama_hd32", "llama", head_dim=32)
    loaded = load_model(path)
    prompts = prompts_for(loaded, 4)

    def core(spec=None):
        return EngineCore(loaded, EngineConfig(max_slots=4, enable_prefix_cache=False,
                                               kv_cache_type_k="q8_0", kv_cache_type_v="q8_0",
                                               spec=spec or SpecConfig()))
    want = run(core(), prompts)
    spec_core = core(SpecConfig(type="draft", draft_model=str(path), draft_max=4, p_min=0.0))
    assert run(spec_core, prompts) == want
    stats = spec_core.stats()
    assert stats["spec_fallback_steps"] == 0 and stats["spec_accepted_tokens"] > 0


@pytest.mark.parametrize("q", [None, [0.1, 0.6, 0.1, 0.1, 0.1]])
def test_rejection_sampling_keeps_the_distribution(q):
    """The first emitted token (accepted draft or resampled) follows p exactly, for a
    one-hot draft (prompt lookup) and for a draft distribution q that disagrees with p."""
    import mlx.core as mx

    from mlx_server.engine.speculative import SpeculativeBatch, _Row

    logits = mx.array([[2.0, 1.0, 0.5, 0.0, -1.0]] * 2)
    lp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    p = mx.exp(lp[0]).tolist()
    row = _Row(pending=[0], index=NgramIndex([]), params=SamplingParams(temperature=1.0),
               key=mx.random.key(7))
    row.dists = [] if q is None else [mx.log(mx.array(q))]
    rng = random.Random(3)
    n = 3000
    counts: Counter = Counter()
    for _ in range(n):  # a draft is a sample of q (q one-hot: the most likely token)
        row.drafts = [0] if q is None else rng.choices(range(5), weights=q)
        acc, new, _ = SpeculativeBatch._rejection_sample(None, row, lp)  # type: ignore[arg-type]
        counts[acc[0] if acc else new] += 1
    tv = 0.5 * sum(abs(counts[t] / n - p[t]) for t in range(5))
    assert tv < 0.03, (tv, counts, p)
