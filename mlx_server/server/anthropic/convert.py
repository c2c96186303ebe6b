"""Anthropic's Messages request → the chat request every API shares, and blocks → Anthropic's
content blocks.

Blocks map onto chat messages one for one: `system` becomes a system message, `tool_use`
blocks an assistant's `tool_calls`, `tool_result` blocks `tool` messages, `thinking` blocks
the assistant's `reasoning_content`, images `image_url` parts (which the chat path refuses
unless the served model takes images).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

from pydantic import ValidationError

from mlx_server.config import ToolConfig
from mlx_server.server.anthropic.protocol import (
    ContentBlock,
    ContentBlockParam,
    MessageParam,
    MessagesRequest,
    TextBlock,
    ThinkingBlock,
    ToolParam,
    ToolUseBlock,
    _Request,
)
from mlx_server.server.blocks import Block
from mlx_server.server.errors import from_validation_errors, invalid, not_supported
from mlx_server.server.protocol import ChatCompletionRequest

logger = logging.getLogger(__name__)
_warned: set[str] = set()


def warn_once(message: str) -> None:
    """Agents repeat the same request shape every turn; one line in the log is enough."""
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)


def chat_request(req: _Request, cfg: ToolConfig) -> tuple[ChatCompletionRequest, ToolConfig]:
    """The equivalent chat request, and the tool config with `thinking` applied to it."""
    if req.model_extra:
        warn_once(f"/v1/messages: ignoring fields {sorted(req.model_extra)}")
    messages: list[dict[str, Any]] = []
    system = _system(req.system)
    if system:
        messages.append({"role": "system", "content": system})
    for i, m in enumerate(req.messages):
        messages += _messages(i, m)
    body: dict[str, Any] = {"messages": messages}
    tools = _tools(req.tools or [])
    if tools:
        body["tools"] = tools
    if req.tool_choice is not None:
        body["tool_choice"] = _tool_choice(req.tool_choice.type, req.tool_choice.name)
        if req.tool_choice.disable_parallel_tool_use:
            body["parallel_tool_calls"] = False
    if req.output_config is not None:
        if req.output_config.effort is not None:
            body["reasoning_effort"] = req.output_config.effort
        if req.output_config.format is not None:
            body["response_format"] = _response_format(req.output_config.format)
    if isinstance(req, MessagesRequest):
        body.update(max_tokens=req.max_tokens, stop=req.stop_sequences,
                    temperature=req.temperature, top_p=req.top_p, top_k=req.top_k)
    cfg, kwargs = _thinking(req, cfg)
    if kwargs:
        body["chat_template_kwargs"] = kwargs
    try:
        return ChatCompletionRequest.model_validate(body), cfg
    except ValidationError as exc:  # our own translation's values, out of the chat ranges
        raise from_validation_errors(list(exc.errors())) from None


def _system(system: str | list[ContentBlockParam] | None) -> str:
    if system is None or isinstance(system, str):
        return system or ""
    texts = []
    for j, block in enumerate(system):
        if block.type != "text" or block.text is None:
            raise invalid(f"Invalid value for 'system.{j}': system blocks must be text.",
                          f"system.{j}")
        texts.append(block.text)
    return "\n".join(texts)


def _messages(i: int, m: MessageParam) -> list[dict[str, Any]]:
    if isinstance(m.content, str):
        return [{"role": m.role, "content": m.content}]
    if m.role == "assistant":
        return [_assistant(i, m.content)]
    out: list[dict[str, Any]] = []
    for j, block in enumerate(m.content):
        param = f"messages.{i}.content.{j}"
        if block.type == "tool_result":
            out.append({"role": "tool", "tool_call_id": _need(block.tool_use_id, param,
                                                               "tool_use_id"),
                        "content": _tool_result(param, block)})
            continue
        if not out or out[-1]["role"] != "user":
            out.append({"role": "user", "content": []})
        out[-1]["content"].append(_part(param, block))
    return out


def _assistant(i: int, blocks: list[ContentBlockParam]) -> dict[str, Any]:
    texts, calls, thoughts = [], [], []
    for j, block in enumerate(blocks):
        param = f"messages.{i}.content.{j}"
        if block.type == "text":
            texts.append(_need(block.text, param, "text"))
        elif block.type == "tool_use":
            calls.append({"id": _need(block.id, param, "id"), "type": "function", "function": {
                "name": _need(block.name, param, "name"), "arguments": block.input or {}}})
        elif block.type == "thinking":
            thoughts.append(block.thinking or "")
        elif block.type != "redacted_thinking":  # encrypted elsewhere: nothing to render
            raise not_supported(param, f"Content blocks of type '{block.type}' in assistant "
                                       "messages")
    out: dict[str, Any] = {"role": "assistant", "content": "".join(texts)}
    if calls:
        out["tool_calls"] = calls
    if thoughts:
        out["reasoning_content"] = "\n".join(thoughts)
    return out


def _part(param: str, block: ContentBlockParam) -> dict[str, Any]:
    if block.type == "text":
        return {"type": "text", "text": _need(block.text, param, "text")}
    if block.type == "image":
        source = block.source
        if source is None:
            raise invalid(f"Missing required parameter: '{param}.source'.", f"{param}.source",
                          "missing_required_parameter")
        if source.type == "base64":
            url = f"data:{source.media_type or 'image/png'};base64,{source.data or ''}"
        elif source.type == "url" and source.url:
            url = source.url
        else:
            raise not_supported(f"{param}.source", "Images given as files")
        return {"type": "image_url", "image_url": {"url": url}}
    raise not_supported(param, f"Content blocks of type '{block.type}' in user messages")


def _tool_result(param: str, block: ContentBlockParam) -> str | list[dict[str, Any]]:
    content = block.content
    prefix = "Error: " if block.is_error else ""
    if content is None or isinstance(content, str):
        return prefix + (content or "")
    parts = [_part(f"{param}.content.{k}", b) for k, b in enumerate(content)]
    if prefix:
        parts.insert(0, {"type": "text", "text": prefix.strip()})  # "Error:"
    return parts


def _need(value: str | None, param: str, name: str) -> str:
    if value is None:
        raise invalid(f"Missing required parameter: '{param}.{name}'.", f"{param}.{name}",
                      "missing_required_parameter")
    return value


def _tools(tools: list[ToolParam]) -> list[dict[str, Any]]:
    out = []
    for tool in tools:
        if tool.type not in (None, "custom"):
            warn_once(f"/v1/messages: ignoring tool '{tool.name}' of type '{tool.type}': "
                      "this server runs no Anthropic-defined tools")
            continue
        function: dict[str, Any] = {"name": tool.name,
                                    "parameters": tool.input_schema or {"type": "object"}}
        if tool.description:
            function["description"] = tool.description
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(kind: str, name: str | None) -> str | dict[str, Any]:
    if kind == "tool":
        if not name:
            raise invalid("Missing required parameter: 'tool_choice.name'.", "tool_choice.name",
                          "missing_required_parameter")
        return {"type": "function", "function": {"name": name}}
    return {"auto": "auto", "any": "required", "none": "none"}[kind]


def _response_format(fmt: dict[str, Any]) -> dict[str, Any]:
    if fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
        raise invalid("Invalid value for 'output_config.format': expected "
                      '{"type": "json_schema", "schema": {...}}.', "output_config.format")
    return {"type": "json_schema",
            "json_schema": {"name": "output", "schema": fmt["schema"], "strict": True}}


def _thinking(req: _Request, cfg: ToolConfig) -> tuple[ToolConfig, dict[str, Any]]:
    """`thinking` → the reasoning budget (disabled is a budget of 0, which also tells the
    template not to think) and the template's `enable_thinking`."""
    thinking = req.thinking
    if thinking is None:
        return cfg, {}
    if thinking.type == "disabled":
        return dataclasses.replace(cfg, reasoning_budget=0), {}
    if thinking.type == "enabled" and thinking.budget_tokens:
        cfg = dataclasses.replace(cfg, reasoning_budget=thinking.budget_tokens)
    return cfg, {"enable_thinking": True}


# ---------------------------------------------------------------- output


def tool_id(chat_id: str) -> str:
    """Anthropic's `toolu_` ids for the parsers' `call_` ones."""
    return "toolu_" + chat_id.removeprefix("call_")


def content_block(block: Block) -> ContentBlock:
    if block.type == "thinking":
        return ThinkingBlock(thinking=block.text)
    if block.type == "text":
        return TextBlock(text=block.text)
    return ToolUseBlock(id=tool_id(block.id), name=block.name, input=tool_input(block.text))


def tool_input(arguments: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except json.JSONDecodeError:
        value = None
    return value if isinstance(value, dict) else {}
