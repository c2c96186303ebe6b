"""OpenAI chat messages and tools → the Hugging Face chat-template form `render_chat` takes.

Content-part arrays become strings, tool-call arguments become dicts, and `developer`
becomes `system` (templates written before OpenAI added that role reject it).
"""

from __future__ import annotations

import json
from typing import Any

from mlx_server.server.errors import APIError, invalid, not_supported
from mlx_server.server.protocol import ChatCompletionRequest, ChatMessage, ContentPart, ToolCall

_UNSUPPORTED_PARTS = {
    "image_url": "this model does not accept images",
    "input_audio": "this model does not accept audio",
    "file": "this model does not accept files",
}


def normalize_messages(messages: list[ChatMessage], keep_images: bool = False
                       ) -> list[dict[str, Any]]:
    """`keep_images` (a vision model, images already checked): messages with images keep
    their parts, as `{"type": "image"}` and `{"type": "text"}`, for the template to place."""
    return [_message(i, m, keep_images) for i, m in enumerate(messages)]


def _message(i: int, m: ChatMessage, keep_images: bool = False) -> dict[str, Any]:
    if m.content is None and m.role != "assistant":
        raise invalid(f"Missing required parameter: 'messages.{i}.content'.",
                      f"messages.{i}.content", "missing_required_parameter")
    out: dict[str, Any] = dict(m.model_extra or {})  # e.g. reasoning_content, which templates use
    if isinstance(out.get("reasoning"), str):  # the other name clients send a thought under
        out.setdefault("reasoning_content", out["reasoning"])
    out["role"] = "system" if m.role == "developer" else m.role
    out["content"] = _parts(i, m.content) if keep_images and _has_image(m) else _text(i, m.content)
    if m.name is not None:
        out["name"] = m.name
    if m.tool_calls:
        out["tool_calls"] = [_tool_call(f"messages.{i}.tool_calls.{j}", c)
                             for j, c in enumerate(m.tool_calls)]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    return out


def _text(i: int, content: str | list[ContentPart] | None) -> str:
    if content is None:
        return ""  # an assistant turn that only calls tools; templates expect a string
    if isinstance(content, str):
        return content
    texts = []
    for j, part in enumerate(content):
        if part.type in _UNSUPPORTED_PARTS:
            raise APIError(400, f"Invalid content part: {_UNSUPPORTED_PARTS[part.type]}.",
                           param=f"messages.{i}.content.{j}", code="unsupported_content")
        text = part.text if part.type == "text" else part.refusal
        if text is None:
            raise invalid(f"Missing required parameter: 'messages.{i}.content.{j}.{part.type}'.",
                          f"messages.{i}.content.{j}.{part.type}", "missing_required_parameter")
        texts.append(text)
    return "\n".join(texts)


def _has_image(m: ChatMessage) -> bool:
    return isinstance(m.content, list) and any(p.type == "image_url" for p in m.content)


def _parts(i: int, content: list[ContentPart]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for j, p in enumerate(content):
        if p.type == "image_url":
            parts.append({"type": "image"})
            continue
        try:
            parts.append({"type": "text", "text": _text(i, [p])})
        except APIError as e:  # name the part by its place in the whole array
            e.detail.param = f"messages.{i}.content.{j}"
            raise
    return parts


def _tool_call(param: str, call: ToolCall) -> dict[str, Any]:
    args: Any = call.function.arguments
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            args = None
    if not isinstance(args, dict):
        raise invalid(f"Invalid value for '{param}.function.arguments': expected a JSON object.",
                      f"{param}.function.arguments")
    out: dict[str, Any] = {"type": "function",
                           "function": {"name": call.function.name, "arguments": args}}
    if call.id is not None:
        out["id"] = call.id
    return out


def template_inputs(
    req: ChatCompletionRequest,
) -> tuple[list[dict[str, Any]] | None, dict[str, Any]]:
    """The tools the template should see and its extra kwargs; rejects what we cannot honor."""
    _reject_unsupported(req)
    tools = None
    if req.tools and req.tool_choice != "none":
        tools = [t.model_dump(exclude_none=True) for t in req.tools]
    kwargs = dict(req.chat_template_kwargs or {})
    if req.reasoning_effort is not None:  # templates such as gpt-oss's read it
        kwargs.setdefault("reasoning_effort", req.reasoning_effort)
    return tools, kwargs


def _reject_unsupported(req: ChatCompletionRequest) -> None:
    choice = req.tool_choice
    if isinstance(choice, str) and choice not in ("auto", "none", "required"):
        raise invalid(f"Invalid value for 'tool_choice': {choice!r}; expected 'none', 'auto', "
                      "'required' or a named function.", "tool_choice")
    if choice not in (None, "auto", "none") and not req.tools:
        raise invalid("Invalid value for 'tool_choice': it requires 'tools'.", "tool_choice")
    for i, tool in enumerate(req.tools or []):
        if tool.type != "function" or tool.function is None:
            raise not_supported(f"tools.{i}", "Tools other than functions")
    if req.functions:
        raise not_supported("functions", "The deprecated 'functions' parameter")
    if req.function_call not in (None, "none", "auto"):
        raise not_supported("function_call", "The deprecated 'function_call' parameter")
    if req.audio is not None or (req.modalities and set(req.modalities) - {"text"}):
        raise not_supported("modalities", "Audio output")
    if req.web_search_options is not None:
        raise not_supported("web_search_options", "Web search")
    if req.top_logprobs and not req.logprobs:
        raise invalid("Invalid value for 'top_logprobs': it requires 'logprobs' to be true.",
                      "top_logprobs")
