"""The Responses API's input items → the chat request every API shares, and blocks → output
items.

`instructions` become the system message; messages keep their roles (developer becomes
system on the chat path); `function_call` items join the assistant turn before them as
`tool_calls`, `function_call_output` items become `tool` messages, and `reasoning` items
the next assistant turn's `reasoning_content`.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from typing import Any

from pydantic import ValidationError

from mlx_server.config import ToolConfig
from mlx_server.server.blocks import Block
from mlx_server.server.errors import from_validation_errors, invalid, not_supported
from mlx_server.server.protocol import ChatCompletionRequest
from mlx_server.server.responses.protocol import (
    FunctionCall,
    InputItem,
    InputPart,
    OutputItem,
    OutputMessage,
    OutputText,
    Reasoning,
    ReasoningText,
    ResponsesRequest,
    Status,
    ToolDef,
)

logger = logging.getLogger(__name__)
_warned: set[str] = set()
Messages = list[dict[str, Any]]
_CHAT_PARTS = {"input_file": "file", "input_audio": "input_audio"}


def warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)


def input_messages(req: ResponsesRequest) -> Messages:
    """This request's own input as chat messages (without `instructions`)."""
    if req.input is None:
        return []
    if isinstance(req.input, str):
        return [{"role": "user", "content": req.input}]
    out: Messages = []
    for i, item in enumerate(req.input):
        _add_item(out, f"input.{i}", item)
    return out


def chat_request(req: ResponsesRequest, history: Messages, cfg: ToolConfig
                 ) -> tuple[ChatCompletionRequest, ToolConfig]:
    """The equivalent chat request over `history` (earlier turns and this input)."""
    if req.model_extra:
        warn_once(f"/v1/responses: ignoring fields {sorted(req.model_extra)}")
    messages = list(history)
    if req.instructions:
        messages.insert(0, {"role": "system", "content": req.instructions})
    if not messages:
        raise invalid("Missing required parameter: 'input'.", "input",
                      "missing_required_parameter")
    body: dict[str, Any] = {"messages": messages, "max_tokens": req.max_output_tokens,
                            "temperature": req.temperature, "top_p": req.top_p,
                            "parallel_tool_calls": req.parallel_tool_calls}
    tools = function_tools(req.tools or [])
    if tools:
        body["tools"] = [{"type": "function", "function": {
            k: t[k] for k in ("name", "description", "parameters") if t.get(k) is not None}}
            for t in tools]
    if req.tool_choice is not None:
        body["tool_choice"] = _tool_choice(req.tool_choice)
    if req.text is not None and req.text.format is not None:
        body["response_format"] = _response_format(req.text.format)
    effort = req.reasoning.effort if req.reasoning else None
    if effort == "none":
        cfg = dataclasses.replace(cfg, reasoning_budget=0)
    elif effort is not None:
        body["reasoning_effort"] = effort
    try:
        return ChatCompletionRequest.model_validate(body), cfg
    except ValidationError as exc:
        raise from_validation_errors(list(exc.errors())) from None


def _add_item(out: Messages, param: str, item: InputItem) -> None:
    kind = item.type or ("message" if item.role else None)
    if kind == "message":
        if item.role is None or item.content is None:
            raise invalid(f"Missing required parameter: '{param}.role' and '{param}.content'.",
                          param, "missing_required_parameter")
        if item.role == "assistant":
            turn = _assistant(out)
            turn["content"] = "\n".join(filter(None, [turn["content"], _text(item.content)]))
        else:
            out.append({"role": item.role, "content": _parts(f"{param}.content", item.content)})
    elif kind == "function_call":
        if item.call_id is None or item.name is None:
            raise invalid(f"Missing required parameter: '{param}.call_id' or '{param}.name'.",
                          param, "missing_required_parameter")
        _assistant(out).setdefault("tool_calls", []).append({
            "id": item.call_id, "type": "function",
            "function": {"name": item.name, "arguments": item.arguments or "{}"}})
    elif kind == "function_call_output":
        if item.call_id is None:
            raise invalid(f"Missing required parameter: '{param}.call_id'.", f"{param}.call_id",
                          "missing_required_parameter")
        output = item.output if item.output is not None else ""
        out.append({"role": "tool", "tool_call_id": item.call_id,
                    "content": output if isinstance(output, str)
                    else _parts(f"{param}.output", output)})
    elif kind == "reasoning":
        parts = item.content if isinstance(item.content, list) else item.summary or []
        thought = "\n".join(p.text for p in parts if p.text)
        out.append({"role": "assistant", "content": "", "reasoning_content": thought})
    else:
        raise not_supported(f"{param}.type", f"Input items of type '{kind}'")


def _assistant(out: Messages) -> dict[str, Any]:
    """The assistant turn being built: reasoning, text and calls in a row make one turn."""
    if out and out[-1]["role"] == "assistant":
        return out[-1]
    out.append({"role": "assistant", "content": ""})
    return out[-1]


def _text(content: str | list[InputPart]) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.text or p.refusal or "" for p in content)


def _parts(param: str, content: str | list[InputPart]) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for j, p in enumerate(content):
        if p.type in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": p.text or ""})
        elif p.type == "input_image" and p.image_url:
            parts.append({"type": "image_url", "image_url": {"url": p.image_url}})
        elif p.type == "input_image":
            raise not_supported(f"{param}.{j}", "Images given by file id")
        elif p.type in _CHAT_PARTS:  # the chat path refuses these with its own message
            parts.append({"type": _CHAT_PARTS[p.type]})
        else:
            raise not_supported(f"{param}.{j}.type", f"Content parts of type '{p.type}'")
    return parts


def function_tools(tools: list[ToolDef]) -> list[dict[str, Any]]:
    """The function tools, as the response echoes them; other types are logged and dropped."""
    out = []
    for i, tool in enumerate(tools):
        if tool.type != "function":
            warn_once(f"/v1/responses: ignoring tool of type '{tool.type}': this server runs "
                      "no hosted tools")
            continue
        if not tool.name:
            raise invalid(f"Missing required parameter: 'tools.{i}.name'.", f"tools.{i}.name",
                          "missing_required_parameter")
        out.append({"type": "function", "name": tool.name, "description": tool.description,
                    "parameters": tool.parameters or {"type": "object", "properties": {}},
                    "strict": tool.strict})
    return out


def _tool_choice(choice: str | dict[str, Any]) -> str | dict[str, Any]:
    if isinstance(choice, str):
        return choice
    kind = choice.get("type")
    if kind == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    if kind == "allowed_tools":
        raise not_supported("tool_choice", "'allowed_tools'")
    warn_once(f"/v1/responses: ignoring tool_choice of type '{kind}' (a hosted tool)")
    return "auto"


def _response_format(fmt: dict[str, Any]) -> dict[str, Any] | None:
    kind = fmt.get("type")
    if kind == "json_schema":
        spec = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": spec}
    if kind in ("json_object", "text"):
        return {"type": kind}
    raise invalid(f"Invalid value for 'text.format.type': {kind!r}.", "text.format.type")


# ---------------------------------------------------------------- output


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


@dataclasses.dataclass
class ItemIds:
    """Stable output-item ids per block, the same while streaming and at the end."""

    ids: dict[int, str] = dataclasses.field(default_factory=dict)

    def __call__(self, block: Block) -> str:
        prefix = {"thinking": "rs", "text": "msg", "tool_use": "fc"}[block.type]
        return self.ids.setdefault(block.index, new_id(prefix))


def output_item(block: Block, item_id: str, status: Status = "completed") -> OutputItem:
    done = status == "completed"
    if block.type == "thinking":
        return Reasoning(id=item_id, content=[ReasoningText(text=block.text)] if done else [],
                         status=status)
    if block.type == "text":
        return OutputMessage(id=item_id, status=status,
                             content=[OutputText(text=block.text)] if done else [])
    return FunctionCall(id=item_id, call_id=block.id, name=block.name,
                        arguments=block.text if done else "", status=status)


def assistant_turn(blocks: list[Block]) -> dict[str, Any]:
    """The output as a chat assistant message, for the next turn's history."""
    message: dict[str, Any] = {"role": "assistant", "content": ""}
    for block in blocks:
        if block.type == "thinking":
            message["reasoning_content"] = block.text
        elif block.type == "text":
            message["content"] += block.text
        else:
            message.setdefault("tool_calls", []).append({
                "id": block.id, "type": "function",
                "function": {"name": block.name, "arguments": block.text or "{}"}})
    return message
