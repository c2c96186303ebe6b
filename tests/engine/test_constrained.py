"""Grammar-constrained decoding and the thought budget, on a tiny random-weight model."""

import json

import jsonschema
import pytest

from mlx_server.engine.types import (
    Grammar,
    GenerationRequest,
    InvalidRequestError,
    SamplingParams,
    ThoughtControl,
)

from mlx_server.config import EngineConfig
from mlx_server.engine.async_engine import AsyncEngine
from mlx_server.engine.loader import load_model

_ids = iter(range(10**9))

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 8},
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "tags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 3},
    },
    "required": ["city", "unit", "days", "tags"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def llama(tiny_llama_dir):
    eng = AsyncEngine(lambda: load_model(tiny_llama_dir), EngineConfig(max_slots=4), "tiny").start()
    assert eng.wait_ready(60), eng.health()
    yield eng
    eng.shutdown()


async def generate(eng, prompt_ids, **kw):
    kw.setdefault("temperature", 0.0)
    req = GenerationRequest(f"c{next(_ids)}", prompt_ids, SamplingParams(**kw))
    outs = [o async for o in eng.generate(req)]
    return "".join(o.text for o in outs), outs, outs[-1]


def position(outs, token):
    """The 0-based position of `token` in the output (an output may carry several tokens)."""
    return next(o.completion_tokens - len(o.token_ids) + o.token_ids.index(token)
                for o in outs if token in o.token_ids)


def chat(eng, text, **template):
    return eng.render_chat([{"role": "user", "content": text}], template_kwargs=template)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
async def test_json_schema_output_validates(llama, temperature):
    for seed in range(3):
        text, _, last = await generate(llama, chat(llama, f"weather {seed}"), max_tokens=80,
                                       temperature=temperature, seed=seed,
                                       grammar=Grammar("json_schema", SCHEMA))
        assert last.finish_reason == "stop", text
        jsonschema.validate(json.loads(text), SCHEMA)


async def test_grammar_stops_even_with_ignore_eos(llama):
    schema = {"enum": ["yes", "no"]}
    text, _, last = await generate(llama, chat(llama, "ok?"), max_tokens=30, ignore_eos=True,
                                   grammar=Grammar("json_schema", schema))
    assert json.loads(text) in ("yes", "no") and last.finish_reason == "stop"


async def test_lark_grammar_with_special_tokens(llama):
    lark = ('start: <tool_call> "\\n" call "\\n" </tool_call>\n'
            'call: %json{"type": "object", "properties": {"name": {"const": "f"}, '
            '"arguments": {"type": "object", "properties": {"x": {"type": "integer"}}, '
            '"required": ["x"], "additionalProperties": false}}, '
            '"required": ["name", "arguments"], "additionalProperties": false, '
            '"x-guidance": {"whitespace_flexible": false}}')
    text, _, last = await generate(llama, chat(llama, "call f"), max_tokens=60,
                                   grammar=Grammar("lark", lark))
    assert text.startswith("<tool_call>\n") and text.endswith("\n</tool_call>"), text
    call = json.loads(text.removeprefix("<tool_call>\n").removesuffix("\n</tool_call>"))
    assert call["name"] == "f" and isinstance(call["arguments"]["x"], int)


@pytest.mark.parametrize("grammar, param", [
    (Grammar("json_schema", {"type": "bogus"}), "response_format"),
    (Grammar("json_schema", {"$ref": "#/nowhere"}), "response_format"),
    (Grammar("lark", "start: undefined_rule"), "tool_choice"),
])
async def test_invalid_grammar_is_a_request_error(llama, grammar, param):
    with pytest.raises(InvalidRequestError) as err:
        await generate(llama, chat(llama, "x"), max_tokens=4, grammar=grammar)
    assert err.value.param == param


def _ids_of(eng, marker):
    ids = eng.encode(marker, add_special_tokens=False)
    assert len(ids) == 1
    return tuple(ids)


async def test_thought_budget_forces_the_end_marker(llama):
    think, end = _ids_of(llama, "<think>"), _ids_of(llama, "</think>")
    prompt = chat(llama, "think hard", enable_thinking=True)
    assert think[0] in prompt[-3:]
    control = ThoughtControl(think, end, prefilled=True, budget=5)
    # A tiny random model rarely closes its thought on its own; the budget must.
    _, outs, _ = await generate(llama, prompt, max_tokens=12, ignore_eos=True, thought=control)
    assert position(outs, end[0]) == 5


async def test_grammar_waits_for_the_thought_to_end(llama):
    think, end = _ids_of(llama, "<think>"), _ids_of(llama, "</think>")
    prompt = chat(llama, "think then answer", enable_thinking=True)
    text, outs, last = await generate(
        llama, prompt, max_tokens=80, thought=ThoughtControl(think, end, True, budget=4),
        grammar=Grammar("json_schema", SCHEMA))
    assert position(outs, end[0]) == 4
    answer = text.split("</think>", 1)[1]
    jsonschema.validate(json.loads(answer), SCHEMA)
    assert last.finish_reason == "stop"


async def test_grammar_lets_the_model_open_a_thought(llama):
    """Not prefilled: the first token may open a thought, or the grammar starts at once."""
    think, end = _ids_of(llama, "<think>"), _ids_of(llama, "</think>")
    bias = {think[0]: 100.0}  # make the model open a thought
    text, outs, _ = await generate(
        llama, chat(llama, "maybe think"), max_tokens=80, logit_bias=bias,
        thought=ThoughtControl(think, end, False, budget=3),
        grammar=Grammar("json_schema", SCHEMA))
    assert position(outs, think[0]) == 0 and position(outs, end[0]) == 4
    jsonschema.validate(json.loads(text.split("</think>", 1)[1]), SCHEMA)
