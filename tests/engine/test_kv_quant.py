"""KV-cache storage types (-ctk/-ctv) in the batched engine and the prefix cache."""

import asyncio

import mlx.core as mx
import pytest
from mlx_lm.models.cache import KVCache, QuantizedKVCache
from tiny_model import build_model

from mlx_server.config import EngineConfig
from mlx_server.engine.async_engine import AsyncEngine
from mlx_server.engine.core import detach
from mlx_server.engine.kv_budget import KVBudget
from mlx_server.engine.kv_quant import (
    BatchFormattedKVCache,
    FormattedKVCache,
    FormattedRotatingKVCache,
    KVCacheFormat,
)
from mlx_server.engine.loader import load_model
from mlx_server.engine.types import GenerationRequest, SamplingParams

# Bytes per stored value relative to float32: codes plus a float32 scale and bias per 32.
RATIO = {"f32": 1, "f16": 1 / 2, "bf16": 1 / 2, "q8_0": 40 / 128, "q4_0": 24 / 128,
         "q5_1": 28 / 128}
TYPES = list(RATIO)
F32_BYTES_PER_TOKEN = 4 * 2 * 32 * 4 * 2  # layers x KV heads x head dim x float32 x (K, V)


# Quantization groups 32 channels: these tiny models have 32-wide heads (the shared
# fixtures' are 16 wide, which only the float types can store).
@pytest.fixture(scope="module")
def llama32(tmp_path_factory):
    return build_model(tmp_path_factory.mktemp("kvq") / "llama", "llama", head_dim=32)


@pytest.fixture(scope="module")
def gemma32(tmp_path_factory):
    # A 16-token window: the prompts below run past it, so rotation is exercised.
    return build_model(tmp_path_factory.mktemp("kvq") / "gemma", "gemma3_text", head_dim=32)


@pytest.fixture(scope="module")
def gemma32_wide(tmp_path_factory):
    # A window longer than every prompt: rotating caches stay trimmable (partial hits).
    return build_model(tmp_path_factory.mktemp("kvq") / "gemmaw", "gemma3_text", window=256,
                       head_dim=32)


def make_engine(path, cache_type, **cfg):
    cfg = {"max_slots": 4, "kv_cache_type_k": cache_type, "kv_cache_type_v": cache_type, **cfg}
    eng = AsyncEngine(lambda: load_model(path), EngineConfig(**cfg), "tiny").start()
    assert eng.wait_ready(60), eng.health()
    return eng


_ids = iter(range(10**9))


async def run(eng, text, n=12):
    ids = eng.render_chat([{"role": "user", "content": text}])
    req = GenerationRequest(f"q{next(_ids)}", ids,
                            SamplingParams(max_tokens=n, ignore_eos=True, temperature=0.0))
    outs = [o async for o in eng.generate(req)]
    assert outs[-1].finish_reason == "length", outs[-1]
    return [t for o in outs for t in o.token_ids], outs[-1].cached_tokens


PROMPTS = [f"Hello world {i}: the quick brown fox jumps over the lazy dog" for i in range(4)]


# -- the format ------------------------------------------------------------------------
@pytest.mark.parametrize(("k", "v"), [("q8_0", "f16"), (None, "q4_0"), ("q8_0", "q4_0")])
def test_quantized_k_and_v_must_match(k, v):
    with pytest.raises(ValueError, match="K and V quantized alike"):
        KVCacheFormat.parse(k, v)


def test_parse_accepts_mixed_floats_and_llama_aliases():
    assert KVCacheFormat.parse("f16", "f32").bits is None
    assert KVCacheFormat.parse("q4_0", "q4_1").bits == 4  # both 4-bit affine on MLX
    assert KVCacheFormat.parse("q5_0", "q5_1").bits == 5
    with pytest.raises(ValueError, match="unknown KV-cache type"):
        KVCacheFormat.parse("q3_k", "q3_k")


def test_bytes_per_token_follow_the_type(llama32):
    model = load_model(llama32).model
    per = {t: KVBudget.measure(model, 1 << 20, KVCacheFormat(t, t).make_cache).bytes_per_token
           for t in ("f32", "f16", "q8_0", "q4_0")}
    assert per["f32"] == KVBudget.measure(model, 1 << 20).bytes_per_token  # model runs f32
    assert per["f16"] * 2 == per["f32"]
    # 32 channels: 32 (8-bit) or 16 (4-bit) bytes of codes + a float32 scale and bias.
    assert per["q8_0"] * 128 == per["f32"] * (32 + 8)
    assert per["q4_0"] * 128 == per["f32"] * (16 + 8)


def test_head_dim_not_a_multiple_of_the_group_is_refused(tiny_llama_dir):
    model = load_model(tiny_llama_dir).model  # 16-wide heads
    with pytest.raises(ValueError, match="multiples of 32"):
        KVBudget.measure(model, None, KVCacheFormat("q8_0", "q8_0").make_cache)
    KVBudget.measure(model, None, KVCacheFormat("f16", "f16").make_cache)  # floats are fine


# -- the caches -------------------------------------------------------------------------
def test_batch_round_trip_matches_single_sequence_cache():
    fmt = KVCacheFormat("q8_0", "q8_0")
    ks = [mx.random.normal((1, 2, n, 64)) for n in (5, 9)]
    singles = [FormattedKVCache(fmt) for _ in ks]
    for c, k in zip(singles, ks):
        c.update_and_fetch(k, k * 2)
    batch = singles[0].merge(singles)
    assert isinstance(batch, BatchFormattedKVCache) and batch.bits == 8
    step = mx.random.normal((2, 2, 1, 64))
    bk, _ = batch.update_and_fetch(step, step)
    assert len(bk) == 3 and bk[0].dtype == mx.uint32  # (codes, scales, biases) for attention
    back = batch.extract(1)
    assert isinstance(back, FormattedKVCache) and back.offset == 10
    ref = QuantizedKVCache(group_size=32, bits=8)
    ref.update_and_fetch(mx.concatenate([ks[1], step[1:]], axis=2),
                         mx.concatenate([ks[1] * 2, step[1:]], axis=2))
    got = back.fmt.decode(back.keys[..., :back.offset, :], step)
    for a, b in zip(got, ref.keys_and_values()[0]):
        assert mx.array_equal(a, b)


def test_detach_copies_quantized_tuples_and_packed_arrays():
    q = QuantizedKVCache(group_size=32, bits=4)
    k = mx.random.normal((1, 1, 40, 64))
    q.update_and_fetch(k, k)
    f = FormattedRotatingKVCache(KVCacheFormat("q4_0", "q4_0"), max_size=16)
    f.update_and_fetch(k, k)
    out = detach([q, f, KVCache()])
    assert isinstance(out[0].keys, tuple) and len(out[0].keys) == 3
    assert out[1].keys.dtype == mx.uint16 and out[1].bits == 4


# -- the engine -------------------------------------------------------------------------
@pytest.mark.parametrize("cache_type", TYPES)
@pytest.mark.parametrize("which", ["llama32", "gemma32"])
async def test_batched_equals_alone(which, cache_type, request):
    eng = make_engine(request.getfixturevalue(which), cache_type, enable_prefix_cache=False)
    try:
        alone = [(await run(eng, p))[0] for p in PROMPTS]
        together = await asyncio.gather(*[run(eng, p) for p in PROMPTS])
        assert [t[0] for t in together] == alone
        assert len({tuple(a) for a in alone}) > 1  # outputs depend on the prompt
        stats = eng.stats()
        assert stats["kv_cache_type_k"] == stats["kv_cache_type_v"] == cache_type
        assert stats["kv_bytes_per_token"] == F32_BYTES_PER_TOKEN * RATIO[cache_type]
    finally:
        eng.shutdown()


@pytest.mark.parametrize("cache_type", ["q8_0", "q4_0", "f16"])
@pytest.mark.parametrize("which", ["llama32", "gemma32", "gemma32_wide"])
async def test_prefix_hit_matches_cold_run(which, cache_type, request):
    path = request.getfixturevalue(which)
    long = "Paris is the capital of France. " * 6
    cold = make_engine(path, cache_type, enable_prefix_cache=False)
    warm = make_engine(path, cache_type)
    try:
        partial = []
        for text in (long + "Tell me more.", long + "And Berlin?"):
            expect, _ = await run(cold, text)
            first, cached_first = await run(warm, text)
            again, cached = await run(warm, text)
            assert first == expect and again == expect
            assert cached > 0
            partial.append(cached_first)
        # The second prompt shares only `long` with the first: a trimmed partial reuse,
        # except where the 16-token window has already rotated (untrimmable caches).
        assert (partial[1] > 0) == (which != "gemma32"), partial
    finally:
        cold.shutdown()
        warm.shutdown()
