"""Qwen2.5-VL and Qwen3-VL (tiny random-weight folders, mlx-vlm's classes): image tokens sized
by the image's grid, M-RoPE positions through the image and a per-sequence position delta in
the batch after it, so the split path equals mlx-vlm's own forward, alone or batched."""

from __future__ import annotations

import asyncio

import mlx.core as mx
import pytest
from mlx_lm.models.cache import BatchKVCache
from tiny_vlm import MERGE

from mlx_server.config import EngineConfig
from mlx_server.engine.async_engine import AsyncEngine
from mlx_server.engine.loader import load_model
from mlx_server.engine.types import GenerationRequest, InvalidRequestError, SamplingParams
from mlx_server.vision.qwen import QwenVisionModel

from .conftest import chat_messages as _messages
from .conftest import chat_prompt as _prompt
from .conftest import image_bytes, running_engine

RED, BLUE = image_bytes((255, 0, 0), (100, 60)), image_bytes((0, 0, 255), (100, 60))
SMALL = image_bytes((0, 255, 0), (30, 30))




@pytest.fixture(scope="module")
def loaded(tiny_qwen_dir):
    return load_model(tiny_qwen_dir)




def _special(loaded, token):
    return loaded.tokenizer._tokenizer.convert_tokens_to_ids(token)


def test_image_tokens_follow_the_grid_where_the_template_put_them(loaded):
    v = loaded.vision
    assert isinstance(v, QwenVisionModel)
    rendered = _prompt(loaded, 2)
    at = [i for i, t in enumerate(rendered) if t == v.placeholder_id]
    prompt, images = v.prepare(rendered, [RED, SMALL])
    for im in images:
        t, h, w = im.pixels.grid
        assert im.length == t * h * w // (MERGE * MERGE)
    assert images[0].length != images[1].length  # sized by the image, not fixed
    assert prompt[:at[0]] == rendered[:at[0]] and images[0].start == at[0]
    start, end = _special(loaded, "<|vision_start|>"), _special(loaded, "<|vision_end|>")
    for im in images:
        assert prompt[im.start - 1] == start and prompt[im.start + im.length] == end
    assert images[1].start == at[1] + images[0].length - 1
    assert prompt[images[1].start + images[1].length:] == rendered[at[1] + 1:]
    assert len(prompt) == len(rendered) - 2 + sum(im.length for im in images)


def test_image_count_and_markers_must_match_the_template(loaded):
    v = loaded.vision
    with pytest.raises(InvalidRequestError, match="placed 1 images"):
        v.prepare(_prompt(loaded, 1), [RED, BLUE])
    bare = [t for t in _prompt(loaded, 1) if t != _special(loaded, "<|vision_start|>")]
    with pytest.raises(InvalidRequestError, match="vision_start"):
        v.prepare(bare, [RED])


def _reference_logits(path, v, prompt, images):
    from mlx_vlm.utils import load_model as load_vlm

    full = load_vlm(path)
    real = list(prompt)
    for im in images:
        real[im.start:im.start + im.length] = [v.image_token_id] * im.length
    ids = mx.array(real)[None]
    pixels = mx.concatenate([mx.array(im.pixels.values) for im in images])
    out = full(ids, pixel_values=pixels, image_grid_thw=mx.array([im.pixels.grid for im in images]),
               mask=mx.ones(ids.shape))
    return out.logits[0, -1]


def test_split_path_equals_mlx_vlm_forward_and_needs_the_delta(loaded, tiny_qwen_dir):
    v = loaded.vision
    prompt, images = v.prepare(_prompt(loaded, 2), [RED, SMALL])
    cache, reused = v.prefill(loaded.model, prompt, images, None, 0)
    assert reused == images[1].start + images[1].length
    assert cache[0].rope_delta < 0  # an image's positions span less than its tokens
    rest = mx.array(prompt[reused:])[None]
    ours = loaded.model(rest, cache=[c.merge([c]) for c in cache])[0, -1]
    ref = _reference_logits(tiny_qwen_dir, v, prompt, images)
    assert mx.allclose(ours, ref, atol=1e-4).item()
    # Read in chunks that cut through the images (and Qwen3-VL's deepstack rows): the same.
    cache, _ = v.prefill(loaded.model, prompt, images, None, 0, step=5)
    chunked = loaded.model(rest, cache=[c.merge([c]) for c in cache])[0, -1]
    assert mx.allclose(chunked, ref, atol=1e-4).item()
    # Without the delta the text after the image sits at the wrong positions.
    cache, _ = v.prefill(loaded.model, prompt, images, None, 0)
    plain = [BatchKVCache.merge([c]) for c in cache]
    assert not mx.allclose(loaded.model(rest, cache=plain)[0, -1], ref, atol=1e-2).item()


# ---------------------------------------------------------------- through the engine


@pytest.fixture(scope="module")
def engine(tiny_qwen_dir):
    yield from running_engine(tiny_qwen_dir, "tiny-qwen")


async def _generate(eng, image, rid, n=8):
    if image is None:
        prompt, images = eng.render_chat([{"role": "user", "content": "Hello world!"}]), ()
    else:
        prompt, images = eng.attach_images(eng.render_chat(_messages()), [image])
    req = GenerationRequest(rid, prompt, SamplingParams(max_tokens=n, temperature=0,
                                                        ignore_eos=True, logprobs=True),
                            images=images)
    outs = [o async for o in eng.generate(req)]
    # Greedy tokens and their log-probabilities: the latter move with any change in logits.
    return tuple((t.token_id, round(t.logprob, 3)) for o in outs for t in o.logprobs), outs[-1]


async def test_output_depends_on_the_image_and_repeats_hit_the_caches(engine):
    vision = engine.core.loaded.vision
    red, first = await _generate(engine, RED, "a")
    blue, _ = await _generate(engine, BLUE, "b")
    assert red != blue
    encoded = vision.counters["images_encoded"]
    again, final = await _generate(engine, RED, "c")
    assert again == red  # the cached prefix continues exactly like the cold run
    assert vision.counters["images_encoded"] == encoded  # not encoded again
    assert first.cached_tokens == 0 and final.cached_tokens > final.prompt_tokens // 2


@pytest.fixture(scope="module")
def cold(tiny_qwen_dir):
    """An engine without the prefix cache: every prompt read from scratch."""
    eng = AsyncEngine(lambda: load_model(tiny_qwen_dir),
                      EngineConfig(max_slots=2, enable_prefix_cache=False), "tiny-qwen").start()
    assert eng.wait_ready(120)
    yield eng
    eng.shutdown()


async def test_batched_equals_alone(cold):
    alone = [await _generate(cold, RED, "r0", 12), await _generate(cold, None, "t0", 12)]
    c = cold.core.counters
    before = c["busy_slot_steps"] - c["decode_steps"]
    both = await asyncio.gather(_generate(cold, RED, "r1", 12), _generate(cold, None, "t1", 12))
    assert c["busy_slot_steps"] - c["decode_steps"] > before  # they did share steps
    assert [b[0] for b in both] == [a[0] for a in alone]


async def _conversation(eng, rid):
    """Turn 1 shows RED; turn 2 keeps it in the history and adds SMALL after a reply."""
    turn1 = _messages()
    await _generate_messages(eng, turn1, [RED], rid + "-1")
    turn2 = turn1 + [{"role": "assistant", "content": "A color."},
                     {"role": "user", "content": [{"type": "text", "text": "And this?"},
                                                  {"type": "image"}]}]
    return await _generate_messages(eng, turn2, [RED, SMALL], rid + "-2")


async def _generate_messages(eng, messages, images, rid):
    prompt, spans = eng.attach_images(eng.render_chat(messages), images)
    req = GenerationRequest(rid, prompt, SamplingParams(max_tokens=8, temperature=0,
                                                        ignore_eos=True, logprobs=True),
                            images=spans)
    outs = [o async for o in eng.generate(req)]
    return tuple((t.token_id, round(t.logprob, 3)) for o in outs for t in o.logprobs), outs[-1]


async def test_a_new_image_in_a_later_turn_reuses_the_first_turns_cache(engine, cold):
    """The cached first turn (image and text after it at M-RoPE positions) continues into a
    second image exactly as a cold read of the whole conversation."""
    warm, final = await _conversation(engine, "w")
    assert final.cached_tokens > 0
    assert warm == (await _conversation(cold, "k"))[0]


def test_text_only_request_decodes_like_the_text_model(loaded):
    """A Qwen-VL sequence without images carries delta 0: plain RoPE positions."""
    from mlx_lm.generate import generate

    prompt = loaded.tokenizer.encode("Hello world! How are", add_special_tokens=False)
    cache, reused = loaded.vision.prefill(loaded.model, prompt, (), None, 0)
    assert reused == 0 and all(c.rope_delta == 0 for c in cache)
    ref = generate(loaded.model, loaded.tokenizer, prompt, max_tokens=4)
    batch = [c.merge([c]) for c in cache]
    out = []
    x = mx.array(prompt)[None]
    for _ in range(4):
        nxt = loaded.model(x, cache=batch)[0, -1].argmax().item()
        out.append(nxt)
        x = mx.array([[nxt]])
    assert loaded.tokenizer.decode(out) == ref
