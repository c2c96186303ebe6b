"""What a chat request's output becomes: tool calls, reasoning and content.

`plan_chat` decides, before the prompt is rendered, which parsers read the output and
which grammar constrains it; `ChoiceOutput` turns engine text into OpenAI deltas and
messages. Malformed calls come back as content, with a warning in the log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlx_server.config import ToolConfig
from mlx_server.engine.types import Grammar, ModelInfo, ThoughtControl
from mlx_server.parsing import (
    OutputParser,
    ParsedOutput,
    StreamDelta,
    get_reasoning_parser,
    get_tool_parser,
    infer_reasoning_parser,
    infer_tool_parser,
    reasoning_parser_names,
)
from mlx_server.server.protocol import (
    ChatCompletionRequest,
    ChatDelta,
    DeltaFunction,
    DeltaToolCall,
    ResponseFunction,
    ResponseMessage,
    ResponseToolCall,
)
from mlx_server.server.structured import (
    GENERIC_PARSER,
    answer_schema,
    named_tool,
    tool_call_grammar,
)
from mlx_server.server.tool_prompt import plain_messages, template_supports_tools

logger = logging.getLogger(__name__)
Encode = Callable[[str], list[int]]


@dataclass
class ChatPlan:
    """Everything the route needs to render, constrain and parse one chat request."""

    messages: list[dict[str, Any]]
    template_tools: list[dict[str, Any]] | None
    template_kwargs: dict[str, Any]
    tools: list[dict[str, Any]] | None = None  # what the tool parser checks calls against
    tool_parser: str | None = None
    reasoning_parser: str | None = None
    parallel: bool = True
    mirror_reasoning: bool = False
    grammar: Grammar | None = None
    prefilled: bool = False
    thought: ThoughtControl | None = None
    budget: int = -1

    def after_render(self, prompt_tail: str, encode: Encode) -> None:
        """Learn from the rendered prompt whether it opened a thought; set its controls."""
        if self.reasoning_parser is None:
            return
        parser = get_reasoning_parser(self.reasoning_parser)
        self.prefilled = bool(getattr(parser, "always_prefilled", False)
                              or parser.prompt_is_prefilled(prompt_tail))
        start, end = getattr(parser, "start", None), getattr(parser, "end", None)
        if start and end and (self.grammar is not None or self.budget >= 0):
            self.thought = ThoughtControl(tuple(encode(start)), tuple(encode(end)),
                                          self.prefilled,
                                          self.budget if self.budget >= 0 else None)


def plan_chat(req: ChatCompletionRequest, info: ModelInfo, cfg: ToolConfig,
              messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
              template_kwargs: dict[str, Any], encode: Encode) -> ChatPlan:
    kwargs = {**cfg.chat_template_kwargs, **template_kwargs}
    if cfg.reasoning_budget == 0:
        kwargs.setdefault("enable_thinking", False)
    fmt = cfg.tool_call_format or infer_tool_parser(info.chat_template)
    plan = ChatPlan(messages, tools, kwargs, parallel=req.parallel_tool_calls is not False,
                    mirror_reasoning=cfg.mirror_reasoning, budget=cfg.reasoning_budget,
                    reasoning_parser=_reasoning_parser(cfg, info.chat_template))
    if not template_supports_tools(info.chat_template):
        if tools or any(m.get("tool_calls") or m["role"] == "tool" for m in messages):
            plan.messages, plan.template_tools = plain_messages(messages, tools), None
        fmt = None
    if tools:
        plan.tools, plan.tool_parser = tools, fmt or GENERIC_PARSER
    _constrain(plan, req, fmt, encode)
    return plan


def _reasoning_parser(cfg: ToolConfig, template: str | None) -> str | None:
    if cfg.reasoning == "off" or cfg.reasoning_format == "none":
        return None
    if cfg.reasoning in reasoning_parser_names():
        return cfg.reasoning
    inferred = infer_reasoning_parser(template)
    return inferred or ("think" if cfg.reasoning == "on" else None)


def _constrain(plan: ChatPlan, req: ChatCompletionRequest, fmt: str | None,
               encode: Encode) -> None:
    answer = answer_schema(req.response_format)
    choice, tools = req.tool_choice, plan.tools

    def token_id(marker: str) -> int | None:
        ids = encode(marker)
        return ids[0] if len(ids) == 1 else None

    if tools and (choice == "required" or isinstance(choice, dict)):
        forced = [named_tool(choice, tools)] if isinstance(choice, dict) else tools
        plan.grammar, plan.tool_parser = tool_call_grammar(
            fmt, forced, parallel=plan.parallel and not isinstance(choice, dict),
            token_id=token_id)
    elif tools and answer is not None:
        plan.grammar, plan.tool_parser = tool_call_grammar(
            fmt, tools, parallel=plan.parallel, answer=answer, required=False,
            token_id=token_id)
    elif answer is not None:
        plan.grammar = Grammar("json_schema", answer)


@dataclass
class ChoiceOutput:
    """One choice's output through the parsers: deltas while streaming, or a message."""

    plan: ChatPlan
    request_id: str = ""
    called: bool = False
    _parser: OutputParser | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        p = self.plan
        if p.tool_parser is None and p.reasoning_parser is None:
            return
        self._parser = OutputParser(
            get_reasoning_parser(p.reasoning_parser) if p.reasoning_parser else None,
            get_tool_parser(p.tool_parser) if p.tool_parser else None,
            p.tools, prefilled=p.prefilled)

    def feed(self, text: str) -> ChatDelta | None:
        if self._parser is None:
            return ChatDelta(content=text) if text else None
        return self._delta(self._parser.feed(text))

    def finish(self) -> ChatDelta | None:
        return self._delta(self._parser.finish()) if self._parser is not None else None

    def _delta(self, d: StreamDelta) -> ChatDelta | None:
        self._warn(d.warnings)
        calls = [c for c in d.tool_calls if self.plan.parallel or c.index == 0]
        self.called = self.called or bool(calls)
        if not (d.content or d.reasoning or calls):
            return None
        return ChatDelta(
            content=d.content or None,
            tool_calls=[DeltaToolCall(
                index=c.index, id=c.id, type="function" if c.id else None,
                function=DeltaFunction(name=c.name, arguments=c.arguments_fragment))
                for c in calls] or None,
            **self._reasoning(d.reasoning))

    def message(self, text: str) -> ResponseMessage:
        if self._parser is None:
            return ResponseMessage(content=text)
        parsed: ParsedOutput = self._parser.parse_full(text)
        self._warn(parsed.warnings)
        calls = parsed.tool_calls if self.plan.parallel else parsed.tool_calls[:1]
        self.called = bool(calls)
        return ResponseMessage(
            content=parsed.content or (None if calls else ""),
            tool_calls=[ResponseToolCall(id=c.id, function=ResponseFunction(
                name=c.name, arguments=c.arguments)) for c in calls] or None,
            **self._reasoning(parsed.reasoning))

    def _reasoning(self, text: str) -> dict[str, str | None]:
        if not text:
            return {}
        return {"reasoning_content": text,
                "reasoning": text if self.plan.mirror_reasoning else None}

    def _warn(self, warnings: Sequence[str]) -> None:
        for w in warnings:
            logger.warning("request %s: %s", self.request_id, w)
