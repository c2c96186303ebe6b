"""The vision half on a tiny Gemma 3 VLM: image tokens go where the template says, the split
path (mlx-vlm vision + mlx-lm text) equals mlx-vlm's own forward, output depends on the
image, and a repeated image is neither re-encoded nor re-read."""

from __future__ import annotations

import mlx.core as mx
import pytest
from tiny_vlm import IMAGE_TOKENS

from mlx_server.engine.loader import load_model
from mlx_server.engine.types import GenerationRequest, InvalidRequestError, SamplingParams

from .conftest import chat_messages as _messages
from .conftest import chat_prompt as _prompt
from .conftest import image_bytes, running_engine

RED, BLUE = image_bytes((255, 0, 0)), image_bytes((0, 0, 255))




@pytest.fixture(scope="module")
def loaded(tiny_vlm_dir):
    return load_model(tiny_vlm_dir)




def test_vlm_folder_loads_with_its_vision_half(loaded):
    assert loaded.vision is not None and loaded.vision.tokens_per_image == IMAGE_TOKENS


def test_image_tokens_go_where_the_template_put_the_image(loaded):
    v = loaded.vision
    rendered = _prompt(loaded, 2)
    at = [i for i, t in enumerate(rendered) if t == v.placeholder_id]
    prompt, images = v.prepare(rendered, [RED, BLUE])
    assert len(images) == 2 and [im.length for im in images] == [IMAGE_TOKENS] * 2
    first = v.expansion.index(v.image_token_id)
    assert prompt[:at[0]] == rendered[:at[0]]  # the text before the first image is untouched
    assert images[0].start == at[0] + first
    assert prompt[images[0].start - first:images[0].start] == v.expansion[:first]
    assert prompt[-(len(rendered) - at[1] - 1):] == rendered[at[1] + 1:]  # and after the last
    keys = [prompt[im.start:im.start + im.length] for im in images]
    assert keys[0] != keys[1]  # prefix-cache keys tell the images apart
    assert v.prepare(rendered, [RED, RED])[0][images[1].start:][:IMAGE_TOKENS] == keys[0]


def test_image_count_must_match_the_template(loaded):
    with pytest.raises(InvalidRequestError, match="placed 1 images"):
        loaded.vision.prepare(_prompt(loaded, 1), [RED, BLUE])


def test_split_prefill_equals_mlx_vlm_forward(loaded, tiny_vlm_dir):
    from mlx_vlm.utils import load_model as load_vlm

    v = loaded.vision
    prompt, images = v.prepare(_prompt(loaded), [RED])
    cache, reused = v.prefill(loaded.model, prompt, images, None, 0)
    assert reused == images[0].start + IMAGE_TOKENS
    ours = loaded.model(mx.array(prompt[reused:])[None], cache=cache)[0, -1]

    full = load_vlm(tiny_vlm_dir)
    real = list(prompt)
    real[images[0].start:reused] = [v.image_token_id] * IMAGE_TOKENS
    ids = mx.array(real)[None]
    emb = full.get_input_embeddings(ids, mx.array(images[0].pixels)[None],
                                    mask=mx.ones(ids.shape)).inputs_embeds
    ref = full.language_model(ids, inputs_embeds=emb).logits[0, -1]
    assert mx.allclose(ours, ref, atol=1e-4).item()


# ---------------------------------------------------------------- through the engine


@pytest.fixture(scope="module")
def engine(tiny_vlm_dir):
    yield from running_engine(tiny_vlm_dir, "tiny-vlm")


async def _generate(eng, image, rid):
    prompt, images = eng.attach_images(eng.render_chat(_messages()), [image])
    req = GenerationRequest(rid, prompt, SamplingParams(max_tokens=8, temperature=0,
                                                        ignore_eos=True, logprobs=True),
                            images=images)
    outs = [o async for o in eng.generate(req)]
    # Greedy tokens and their log-probabilities: the latter move with any change in logits.
    return tuple((t.token_id, round(t.logprob, 4)) for o in outs for t in o.logprobs), outs[-1]


async def test_output_depends_on_the_image_and_repeats_hit_the_caches(engine):
    assert engine.model_info.vision
    vision = engine.core.loaded.vision
    red, first = await _generate(engine, RED, "a")
    blue, _ = await _generate(engine, BLUE, "b")
    assert red != blue
    encoded = vision.counters["images_encoded"]
    again, final = await _generate(engine, RED, "c")
    assert again == red
    assert vision.counters["images_encoded"] == encoded  # not encoded again
    assert final.cached_tokens > final.prompt_tokens // 2  # the prefix cache held the image
    assert first.cached_tokens == 0
