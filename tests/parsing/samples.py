"""Model outputs per tool-call format, with the parse each one must give.

Every format gets the same five situations (no call, one call, parallel calls, text
around a call, unicode and nested arguments) plus a malformed call and its own quirks.
The text is what the model writes; the expectations are data, so a renderer bug
cannot hide a parser bug.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


def _tool(name: str, **properties: Any) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties, "required": list(properties)}
    return {"type": "function", "function": {"name": name, "parameters": schema}}


TOOLS = [
    _tool(
        "get_weather",
        city={"type": "string"},
        days={"type": "integer"},
        units={"type": "string", "enum": ["celsius", "fahrenheit"]},
    ),
    _tool(
        "search",
        query={"type": "string"},
        filters={"type": "object"},
        limit={"type": "integer"},
        exact={"type": "boolean"},
    ),
    _tool("write_file", path={"type": "string"}, content={"type": "string"}),
    _tool(
        "set_level",
        value={"type": "number"},
        tags={"type": "array"},
        note={"type": ["string", "null"]},
    ),
    _tool("get_time"),
]

Call = tuple[str, dict[str, Any]]

PARIS: Call = ("get_weather", {"city": "Paris", "days": 3})
RAMEN: Call = ("search", {"query": "ramen near Shibuya", "limit": 5})
UNICODE: Call = (
    "search",
    {
        "query": "café „Zürich“ 東京 🍜",
        "filters": {"price": ["$", "$$"], "open": {"now": True, "hours": [9, 21.5]}, "note": None},
    },
)
CODE: Call = (
    "write_file",
    {"path": "src/main.py", "content": 'def main():\n    print("hi {x}")\n'},
)

PLAIN = "The capital of France is Paris.\n\nIt has about 2.1 million inhabitants."
BEFORE = "Let me check the weather for you."
AFTER = "I'll summarize once the results are in."


@dataclass(frozen=True)
class Sample:
    id: str
    text: str
    content: str
    calls: list[Call] = field(default_factory=list)
    malformed: bool = False
    reasoning: str = ""
    ids: list[str] | None = None  # model-chosen ids the parser must keep


def _j(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _standard(render: Any, around: Any = None) -> list[Sample]:
    """The five situations every format covers; `around` wraps calls in text if the
    format needs a different rendering there (formats whose bare form is start-only)."""
    around = around or render
    return [
        Sample("no_calls", PLAIN, PLAIN),
        Sample("one_call", render([PARIS]), "", [PARIS]),
        Sample("parallel", render([PARIS, RAMEN]), "", [PARIS, RAMEN]),
        Sample(
            "text_around",
            f"{BEFORE}\n\n{around([PARIS])}\n\n{AFTER}",
            f"{BEFORE}\n\n{AFTER}",
            [PARIS],
        ),
        Sample("unicode_nested", render([UNICODE, CODE]), "", [UNICODE, CODE]),
    ]


# --- hermes -------------------------------------------------------------------------------


def _hermes(calls: list[Call]) -> str:
    return "\n".join(
        f"<tool_call>\n{_j({'name': n, 'arguments': a})}\n</tool_call>" for n, a in calls
    )


HERMES = _standard(_hermes) + [
    Sample(
        "literal",
        'I will look that up.\n<tool_call>\n{"name": "get_weather", "arguments": '
        '{"city": "Paris", "days": 3}}\n</tool_call>',
        "I will look that up.",
        [PARIS],
    ),
    Sample(
        "malformed",
        'Checking.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"\n</tool_call>',
        'Checking.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"\n</tool_call>',
        malformed=True,
    ),
    Sample(
        "unclosed_at_end",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}',
        "",
        [PARIS],
    ),
    Sample(
        "arguments_as_string",
        '<tool_call>\n{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\", \\"days\\": 3}"}\n</tool_call>',
        "",
        [PARIS],
    ),
    Sample("partial_marker_prose", "Use <tool_c or <tool_call", "Use <tool_c or <tool_call"),
]


# --- xml_function (Qwen3-Coder) ----------------------------------------------------------


def _xml(calls: list[Call]) -> str:
    def value(v: Any) -> str:
        return v if isinstance(v, str) else _j(v)

    out = []
    for name, args in calls:
        params = "".join(f"<parameter={k}>\n{value(v)}\n</parameter>\n" for k, v in args.items())
        out.append(f"<tool_call>\n<function={name}>\n{params}</function>\n</tool_call>")
    return "\n".join(out)


XML_FUNCTION = _standard(_xml) + [
    Sample(
        "typed_values",
        "<tool_call>\n<function=set_level>\n<parameter=value>\n-2.5e1\n</parameter>\n"
        "<parameter=tags>\n['a', \"b\"]\n</parameter>\n<parameter=note>\nnull\n</parameter>\n"
        "</function>\n</tool_call>\n<tool_call>\n<function=search>\n<parameter=query>\n"
        "a < b && c\n</parameter>\n<parameter=exact>\nTrue\n</parameter>\n<parameter=limit>\n"
        "10\n</parameter>\n</function>\n</tool_call>",
        "",
        [
            ("set_level", {"value": -25, "tags": ["a", "b"], "note": None}),
            ("search", {"query": "a < b && c", "exact": True, "limit": 10}),
        ],
    ),
    Sample(
        "missing_parameter_close",
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n<parameter=days>\n3\n"
        "</function>\n</tool_call>",
        "",
        [PARIS],
    ),
    Sample(
        "untyped_value_kept_as_string",
        "<tool_call>\n<function=get_weather>\n<parameter=days>\nthree\n</parameter>\n</function>\n</tool_call>",
        "",
        [("get_weather", {"days": "three"})],
    ),
    Sample(
        "malformed",
        '<tool_call>\n<function_call name="get_weather">Paris</function_call>\n</tool_call>',
        '<tool_call>\n<function_call name="get_weather">Paris</function_call>\n</tool_call>',
        malformed=True,
    ),
]


# --- llama3_json --------------------------------------------------------------------------


def _llama_bare(calls: list[Call]) -> str:
    return "; ".join(_j({"name": n, "parameters": a}) for n, a in calls)


def _llama_tagged(calls: list[Call]) -> str:
    return "<|python_tag|>" + _llama_bare(calls)


LLAMA3_JSON = [
    *_standard(_llama_bare, around=_llama_tagged),
    Sample("tagged_parallel", _llama_tagged([PARIS, RAMEN]), "", [PARIS, RAMEN]),
    Sample(
        "literal",
        '{"name": "get_weather", "parameters": {"city": "Paris", "days": 3}}',
        "",
        [PARIS],
    ),
    Sample(
        "type_function_and_arguments",
        ' {"type": "function", "name": "get_weather", "arguments": {"city": "Paris", "days": 3}}',
        "",
        [PARIS],
    ),
    Sample(
        "json_answer_is_content",
        '{"name": "John", "age": 30}',
        '{"name": "John", "age": 30}',
    ),
    Sample(
        "json_in_prose",
        'Here: {"name": "x", "parameters": {}}',
        'Here: {"name": "x", "parameters": {}}',
    ),
    Sample(
        "malformed",
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"',
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"',
        malformed=True,
    ),
]


# --- mistral ------------------------------------------------------------------------------


def _mistral(calls: list[Call]) -> str:
    return "".join(f"[TOOL_CALLS]{n}[ARGS]{_j(a)}" for n, a in calls)


MISTRAL = _standard(_mistral) + [
    Sample(
        "old_list_form",
        '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}, '
        '{"name": "search", "arguments": {"query": "ramen near Shibuya", "limit": 5}}]',
        "",
        [PARIS, RAMEN],
    ),
    Sample(
        "call_id_form",
        '[TOOL_CALLS]get_weather[CALL_ID]a1B2c3D4e[ARGS]{"city": "Paris", "days": 3}',
        "",
        [PARIS],
        ids=["a1B2c3D4e"],
    ),
    Sample(
        "malformed",
        'Sure.[TOOL_CALLS]get_weather[ARGS]{"city": "Paris", "days": }',
        'Sure.[TOOL_CALLS]get_weather[ARGS]{"city": "Paris", "days": }',
        malformed=True,
    ),
]


# --- gemma --------------------------------------------------------------------------------


def _gemma_value(v: Any, q: str) -> str:
    if isinstance(v, str):
        return f"{q}{v}{q}"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{_gemma_value(x, q)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ",".join(_gemma_value(x, q) for x in v) + "]"
    return _j(v)


def _function_gemma(calls: list[Call]) -> str:
    return "".join(
        f"<start_function_call>call:{n}{_gemma_value(a, '<escape>')}<end_function_call>"
        for n, a in calls
    )


GEMMA = _standard(_function_gemma) + [
    Sample(
        "literal",
        "<start_function_call>call:get_weather{city:<escape>Paris<escape>,days:3}<end_function_call>",
        "",
        [PARIS],
    ),
    Sample(
        "gemma4",
        '<|tool_call>call:get_weather{city:<|"|>Paris<|"|>,days:3}<tool_call|>'
        '<|tool_call>call:search{query:<|"|>ramen near Shibuya<|"|>,limit:5}<tool_call|>',
        "",
        [PARIS, RAMEN],
    ),
    Sample(
        "string_with_syntax_chars",
        "<start_function_call>call:write_file{path:<escape>a,b.txt<escape>,"
        "content:<escape>{x: [1, 2]}, 'q'<escape>}<end_function_call>",
        "",
        [("write_file", {"path": "a,b.txt", "content": "{x: [1, 2]}, 'q'"})],
    ),
    Sample(
        "tool_code",
        'I\'ll check.\n```tool_code\nget_weather(city="Paris", days=3)\n'
        "print(default_api.search(query='ramen near Shibuya', limit=5))\n```\n",
        "I'll check.",
        [PARIS, RAMEN],
    ),
    Sample("code_fence_is_content", "```python\nprint(1)\n```", "```python\nprint(1)\n```"),
    Sample(
        "malformed",
        "<start_function_call>get_weather{city:<escape>Paris<escape>}<end_function_call>",
        "<start_function_call>get_weather{city:<escape>Paris<escape>}<end_function_call>",
        malformed=True,
    ),
]


# --- glm45 --------------------------------------------------------------------------------


def _glm(calls: list[Call]) -> str:
    def value(v: Any) -> str:
        return v if isinstance(v, str) else _j(v)

    return "\n".join(
        f"<tool_call>{n}\n"
        + "".join(
            f"<arg_key>{k}</arg_key>\n<arg_value>{value(v)}</arg_value>\n" for k, v in a.items()
        )
        + "</tool_call>"
        for n, a in calls
    )


GLM45 = _standard(_glm) + [
    Sample(
        "glm47_compact",
        "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value>"
        "<arg_key>days</arg_key><arg_value>3</arg_value></tool_call>",
        "",
        [PARIS],
    ),
    Sample("no_arguments", "<tool_call>get_time\n</tool_call>", "", [("get_time", {})]),
    Sample(
        "string_that_looks_like_json",
        "<tool_call>write_file\n<arg_key>path</arg_key>\n<arg_value>42</arg_value>\n"
        '<arg_key>content</arg_key>\n<arg_value>{"a": 1}</arg_value>\n</tool_call>',
        "",
        [("write_file", {"path": "42", "content": '{"a": 1}'})],
    ),
    Sample(
        "malformed",
        "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris\n</tool_call>",
        "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris\n</tool_call>",
        malformed=True,
    ),
]


# --- harmony (gpt-oss) --------------------------------------------------------------------

_ANALYSIS = (
    "<|channel|>analysis<|message|>The user wants the weather. I should call the tool.<|end|>"
)
_THOUGHT = "The user wants the weather. I should call the tool."


def _harmony_calls(calls: list[Call]) -> str:
    return "".join(
        f"<|start|>assistant<|channel|>commentary to=functions.{n} <|constrain|>json"
        f"<|message|>{_j(a)}<|call|>"
        for n, a in calls
    )


HARMONY = [
    Sample(
        "no_calls",
        "<|channel|>analysis<|message|>Simple fact.<|end|><|start|>assistant<|channel|>final"
        f"<|message|>{PLAIN}<|return|>",
        PLAIN,
        reasoning="Simple fact.",
    ),
    Sample("one_call", _ANALYSIS + _harmony_calls([PARIS]), "", [PARIS], reasoning=_THOUGHT),
    Sample(
        "parallel",
        _ANALYSIS + _harmony_calls([PARIS, RAMEN]),
        "",
        [PARIS, RAMEN],
        reasoning=_THOUGHT,
    ),
    Sample(
        "text_around",
        _ANALYSIS
        + f"<|start|>assistant<|channel|>commentary<|message|>{BEFORE}<|end|>"
        + _harmony_calls([PARIS])
        + f"<|start|>assistant<|channel|>final<|message|>{AFTER}<|return|>",
        f"{BEFORE}\n\n{AFTER}",
        [PARIS],
        reasoning=_THOUGHT,
    ),
    Sample(
        "unicode_nested",
        _ANALYSIS + _harmony_calls([UNICODE, CODE]),
        "",
        [UNICODE, CODE],
        reasoning=_THOUGHT,
    ),
    Sample(
        "recipient_before_channel_and_stop_token_stripped",
        _ANALYSIS + "<|start|>assistant to=functions.get_weather<|channel|>commentary json"
        '<|message|>{"city": "Paris", "days": 3}',
        "",
        [PARIS],
        reasoning=_THOUGHT,
    ),
    Sample("plain_text", PLAIN, PLAIN),
    Sample(
        "malformed",
        _ANALYSIS
        + "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json"
        '<|message|>{"city": "Paris",}<|call|>',
        "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json"
        '<|message|>{"city": "Paris",}<|call|>',
        malformed=True,
        reasoning=_THOUGHT,
    ),
]


# --- deepseek_v31 -------------------------------------------------------------------------


def _deepseek(calls: list[Call]) -> str:
    body = "".join(
        f"<｜tool▁call▁begin｜>{n}<｜tool▁sep｜>{_j(a)}<｜tool▁call▁end｜>" for n, a in calls
    )
    return f"<｜tool▁calls▁begin｜>{body}<｜tool▁calls▁end｜>"


DEEPSEEK_V31 = _standard(_deepseek) + [
    Sample(
        "v3_fenced_form",
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n"
        '```json\n{"city": "Paris", "days": 3}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>',
        "",
        [PARIS],
    ),
    Sample(
        "malformed",
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{city: Paris}"
        "<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
        "<｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{city: Paris}<｜tool▁call▁end｜>",
        malformed=True,
    ),
]


# --- kimi_k2 ------------------------------------------------------------------------------


def _kimi(calls: list[Call]) -> str:
    body = "".join(
        f"<|tool_call_begin|>functions.{n}:{i}<|tool_call_argument_begin|>{_j(a)}<|tool_call_end|>"
        for i, (n, a) in enumerate(calls)
    )
    return f"<|tool_calls_section_begin|>{body}<|tool_calls_section_end|>"


KIMI_K2 = _standard(_kimi) + [
    Sample(
        "model_ids_kept",
        _kimi([PARIS, RAMEN]),
        "",
        [PARIS, RAMEN],
        ids=["functions.get_weather:0", "functions.search:1"],
    ),
    Sample(
        "malformed",
        "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
        '{"city": "Paris"}<|tool_call_end|><|tool_calls_section_end|>',
        '<|tool_call_begin|>functions.get_weather:0{"city": "Paris"}<|tool_call_end|>',
        malformed=True,
    ),
]


# --- pythonic -----------------------------------------------------------------------------


def _py(v: Any) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_j(k)}: {_py(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(_py(x) for x in v) + "]"
    if v is True or v is False or v is None:
        return repr(v)
    return _j(v)


def _pythonic(calls: list[Call]) -> str:
    def call(name: str, args: dict[str, Any]) -> str:
        return f"{name}({', '.join(f'{k}={_py(v)}' for k, v in args.items())})"

    return "[" + ", ".join(call(n, a) for n, a in calls) + "]"


def _lfm(calls: list[Call]) -> str:
    return f"<|tool_call_start|>{_pythonic(calls)}<|tool_call_end|>"


PYTHONIC = _standard(_pythonic, around=_lfm) + [
    Sample("lfm_markers", _lfm([PARIS, RAMEN]), "", [PARIS, RAMEN]),
    Sample(
        "json_literals_and_dotted_name",
        '[tools.set_level(value=0.5, tags=["x"], note=null), get_time()]',
        "",
        [("tools.set_level", {"value": 0.5, "tags": ["x"], "note": None}), ("get_time", {})],
    ),
    Sample("bracket_prose", "[1] See the docs (section 2).", "[1] See the docs (section 2)."),
    Sample("name_bracket_prose", "[Note] This (and that).", "[Note] This (and that)."),
    Sample(
        "malformed",
        '[get_weather("Paris", days=3)]',
        '[get_weather("Paris", days=3)]',
        malformed=True,
    ),
]


SAMPLES: dict[str, list[Sample]] = {
    "hermes": HERMES,
    "xml_function": XML_FUNCTION,
    "llama3_json": LLAMA3_JSON,
    "mistral": MISTRAL,
    "gemma": GEMMA,
    "glm45": GLM45,
    "harmony": HARMONY,
    "deepseek_v31": DEEPSEEK_V31,
    "kimi_k2": KIMI_K2,
    "pythonic": PYTHONIC,
}
