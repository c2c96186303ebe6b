"""Tool-call and reasoning parsers: model output text in, plain data out.

Nothing here imports mlx, FastAPI or pydantic. The server typically does:

    tool_parser = get_tool_parser(name) if request has tools else None
    out = OutputParser(get_reasoning_parser(rname), tool_parser, tools, prefilled=...)
    for text in engine chunks: delta = out.feed(text)   # -> StreamDelta
    delta = out.finish()
"""

from mlx_server.parsing.infer import infer_reasoning_parser, infer_tool_parser
from mlx_server.parsing.output import OutputParser, ParsedOutput
from mlx_server.parsing.reasoning import (
    ReasoningParser,
    ReasoningStream,
    get_reasoning_parser,
    reasoning_parser_names,
)
from mlx_server.parsing.tool_parsers import (
    ToolCallStream,
    ToolParser,
    get_tool_parser,
    tool_parser_names,
)
from mlx_server.parsing.types import ParseResult, StreamDelta, ToolCall, ToolCallDelta, Tools

__all__ = [
    "OutputParser",
    "ParseResult",
    "ParsedOutput",
    "ReasoningParser",
    "ReasoningStream",
    "StreamDelta",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallStream",
    "ToolParser",
    "Tools",
    "get_reasoning_parser",
    "get_tool_parser",
    "infer_reasoning_parser",
    "infer_tool_parser",
    "reasoning_parser_names",
    "tool_parser_names",
]
