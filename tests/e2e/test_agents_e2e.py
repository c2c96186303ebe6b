"""Anthropic's Messages API and OpenAI's Responses API on the real server and the real default
model, driven by the official `anthropic` and `openai` SDKs, with requests shaped like the
traffic of Claude Code and Codex: a long system prompt, many tools, tool calls and results.

The default model is a base model, so tool calls are forced by grammar (`tool_choice`
any/tool, required/function) to make them deterministic; generations are kept short.
"""

from __future__ import annotations

import json

import anthropic
import pytest

pytestmark = pytest.mark.e2e
# The anthropic SDK no longer has sampling parameters; the API (and this server) still take them.
GREEDY = {"temperature": 0}

AGENT_RULES = " ".join(
    f"Rule {i}: keep changes small, read files before editing them, run the tests after "
    "every change, and never guess at an API you have not read." for i in range(24))
# JSON schemas as agents send them; `path` is bounded so a forced call always closes.
PATH = {"type": "string", "maxLength": 16}
SCHEMAS = {
    "Read": {"file_path": PATH}, "Write": {"file_path": PATH, "content": {"type": "string"}},
    "Edit": {"file_path": PATH, "old_string": {"type": "string"},
             "new_string": {"type": "string"}},
    "Bash": {"command": {"type": "string"}, "timeout": {"type": "integer"}},
    "Glob": {"pattern": {"type": "string"}}, "Grep": {"pattern": {"type": "string"}},
    "LS": {"path": PATH}, "WebFetch": {"url": {"type": "string"}},
    "TodoWrite": {"todos": {"type": "array", "items": {"type": "string"}}},
    "Task": {"description": {"type": "string"}, "prompt": {"type": "string"}},
    "NotebookEdit": {"notebook_path": PATH, "new_source": {"type": "string"}},
    "ExitPlanMode": {"plan": {"type": "string"}},
}


def schema(name: str) -> dict:
    props = SCHEMAS[name]
    return {"type": "object", "properties": props, "required": list(props)[:1]}


@pytest.fixture(scope="module")
def claude(server):
    return anthropic.Anthropic(base_url=server.base, api_key="unused", max_retries=0,
                               timeout=300)


# ---------------------------------------------------------------- Anthropic


def test_messages_text_and_stream(claude):
    messages = [{"role": "user", "content": "Name a color."}]
    out = claude.messages.create(model="claude-local-1", max_tokens=6, extra_body=GREEDY,
                                 system="Answer briefly.", messages=messages)
    assert out.model == "claude-local-1" and out.content[0].type == "text"
    assert out.stop_reason in ("max_tokens", "end_turn") and 0 < out.usage.output_tokens <= 6
    with claude.messages.stream(model="claude-local-1", max_tokens=6, extra_body=GREEDY,
                                system="Answer briefly.", messages=messages) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == final.content[0].text == out.content[0].text  # greedy: the same tokens
    assert final.usage.cache_read_input_tokens > 0  # the same prompt, a second time


def test_claude_code_shaped_conversation(claude):
    """A long system prompt in blocks, a dozen tools, a forced tool call streamed, and the
    tool result sent back: the second turn reuses the first one's KV cache."""
    system = [{"type": "text", "text": "You are Claude Code, a coding agent."},
              {"type": "text", "text": AGENT_RULES, "cache_control": {"type": "ephemeral"}}]
    tools = [{"name": n, "description": f"The {n} tool.", "input_schema": schema(n)}
             for n in SCHEMAS]
    messages = [{"role": "user", "content": [{"type": "text", "text": "Open setup.py."}]}]
    with claude.messages.stream(model="claude-local-1", max_tokens=64, extra_body=GREEDY,
                                system=system, tools=tools, messages=messages,
                                tool_choice={"type": "tool", "name": "Read"}) as stream:
        first = stream.get_final_message()
    (call,) = [b for b in first.content if b.type == "tool_use"]
    assert call.name == "Read" and isinstance(call.input["file_path"], str)
    assert first.stop_reason == "tool_use" and call.id.startswith("toolu_")
    messages += [{"role": "assistant",
                  "content": [b.model_dump(exclude_none=True) for b in first.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                               "content": "from setuptools import setup"}]}]
    second = claude.messages.create(model="claude-local-1", max_tokens=4, extra_body=GREEDY,
                                    system=system, tools=tools, messages=messages)
    prompt = first.usage.input_tokens + first.usage.cache_read_input_tokens
    assert second.usage.cache_read_input_tokens >= prompt - 8  # all but the generation header
    assert second.usage.input_tokens > 0  # the new turn, computed fresh
    count = claude.messages.count_tokens(model="claude-local-1", system=system, tools=tools,
                                         messages=messages)
    usage = second.usage
    assert count.input_tokens == usage.input_tokens + usage.cache_read_input_tokens


# ---------------------------------------------------------------- Responses


def test_responses_text_stream_and_previous(client):
    first = client.responses.create(model="gpt-5", input="Name a color.", store=True,
                                    instructions="Answer briefly.", max_output_tokens=6,
                                    temperature=0)
    assert first.status in ("completed", "incomplete") and first.output_text
    # Instructions are not inherited (as OpenAI documents): clients send them every turn.
    stream = client.responses.create(model="gpt-5", input="And another?", max_output_tokens=6,
                                     instructions="Answer briefly.", temperature=0,
                                     previous_response_id=first.id, stream=True)
    events = list(stream)
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    final = events[-1].response  # completed, or incomplete when max_output_tokens cut it
    assert events[-1].type == f"response.{final.status}"
    assert "".join(deltas) == final.output_text
    assert final.usage.input_tokens_details.cached_tokens > 0


def test_codex_shaped_conversation(client):
    """Codex's traffic: instructions, a developer message, function tools, stateless turns
    (`store: false`, the whole input again), a forced call and its output sent back."""
    tools = [{"type": "function", "name": n, "description": f"The {n} tool.",
              "parameters": schema(n), "strict": False} for n in SCHEMAS]
    tools.append({"type": "web_search"})  # hosted: ignored with a warning
    items = [{"type": "message", "role": "developer",
              "content": [{"type": "input_text", "text": AGENT_RULES}]},
             {"type": "message", "role": "user",
              "content": [{"type": "input_text", "text": "List the repository."}]}]
    common = {"model": "gpt-5-codex", "instructions": "You are Codex, a coding agent.",
              "tools": tools, "store": False, "temperature": 0,
              "include": ["reasoning.encrypted_content"], "prompt_cache_key": "session-1"}
    with client.responses.stream(input=items, max_output_tokens=64,
                                 tool_choice={"type": "function", "name": "LS"},
                                 **common) as stream:
        first = stream.get_final_response()
    (call,) = [o for o in first.output if o.type == "function_call"]
    assert call.name == "LS" and isinstance(json.loads(call.arguments)["path"], str)
    items += [o.model_dump(exclude_none=True) for o in first.output]
    items.append({"type": "function_call_output", "call_id": call.call_id,
                  "output": "setup.py\nREADME.md"})
    second = client.responses.create(input=items, max_output_tokens=4, **common)
    cached = second.usage.input_tokens_details.cached_tokens
    assert cached >= first.usage.input_tokens - 8  # all but the generation header
    assert second.usage.input_tokens > cached
