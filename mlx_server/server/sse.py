"""Server-sent events as OpenAI streams them: `data: <json>\\n\\n`, ending `data: [DONE]\\n\\n`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from functools import partial
from typing import Any

import anyio
from pydantic import BaseModel
from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

DONE = b"data: [DONE]\n\n"
# A client that reads nothing for this long (its socket buffers full, so a send cannot
# complete) is treated as gone: otherwise it holds its connection and task forever.
SEND_TIMEOUT_S = 120.0
# JSON leaves U+0085, U+2028 and U+2029 raw, and clients that split lines as str.splitlines
# does (httpx's iter_lines) would cut an event there; escaped, they are the same JSON.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def event(payload: BaseModel | dict[str, Any]) -> bytes:
    """One SSE event; JSON never contains a raw newline, so one `data:` line suffices."""
    if isinstance(payload, BaseModel):
        data = payload.model_dump_json()
    else:
        data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"data: {data.translate(_LINE_BREAKS)}\n\n".encode()


class EventStreamResponse(StreamingResponse):
    """A streaming response that always stops the stream when the client disconnects.

    Starlette only listens for `http.disconnect` under ASGI spec < 2.4 and otherwise waits
    for a failed send, which some servers never report; an abandoned generation would then
    run to completion. Listening ourselves makes the cancellation immediate everywhere.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        content: AsyncIterator[bytes],
        on_close: Callable[[], Awaitable[None]] | None = None,
        headers: dict[str, str] | None = None,
        send_timeout_s: float = SEND_TIMEOUT_S,
    ):
        base = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        super().__init__(content, headers={**base, **(headers or {})})
        # Runs however the response ends; a client that leaves before the first chunk
        # means `content` never started, so its own cleanup would never run.
        self.on_close = on_close
        self.send_timeout_s = send_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._stream_until_disconnect(receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                # A stream cancelled while sending sits at a `yield`; closing it runs its
                # `finally` blocks now rather than whenever it is garbage-collected.
                aclose = getattr(self.body_iterator, "aclose", None)
                if aclose is not None:
                    await aclose()
                if self.on_close is not None:
                    await self.on_close()

    async def _stream_until_disconnect(self, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:

            async def run_then_cancel(func: Any) -> None:
                # A failed or timed-out send (TimeoutError is an OSError) means the client
                # is gone, which is what we stop on anyway.
                with suppress(OSError):
                    await func()
                group.cancel_scope.cancel()

            async def send_or_time_out(message: Message) -> None:
                with anyio.fail_after(self.send_timeout_s):
                    await send(message)

            group.start_soon(run_then_cancel, partial(self.stream_response, send_or_time_out))
            await run_then_cancel(partial(self.listen_for_disconnect, receive))


def named_event(payload: dict[str, Any]) -> bytes:
    """An event with an `event:` line naming its `type`, as Anthropic's Messages and OpenAI's
    Responses streams send them (they end without `[DONE]`)."""
    return f"event: {payload['type']}\n".encode() + event(payload)
