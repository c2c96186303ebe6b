"""Server-sent events as OpenAI streams them: `data: <json>\\n\\n`, ending `data: [DONE]\\n\\n`."""

from __future__ import annotations

import json
from functools import partial
from typing import Any, AsyncIterator

import anyio
from pydantic import BaseModel
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

DONE = b"data: [DONE]\n\n"


def event(payload: BaseModel | dict[str, Any]) -> bytes:
    """One SSE event; JSON never contains a raw newline, so one `data:` line suffices."""
    if isinstance(payload, BaseModel):
        data = payload.model_dump_json()
    else:
        data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


class EventStreamResponse(StreamingResponse):
    """A streaming response that always stops the stream when the client disconnects.

    Starlette only listens for `http.disconnect` under ASGI spec < 2.4 and otherwise waits
    for a failed send, which some servers never report; an abandoned generation would then
    run to completion. Listening ourselves makes the cancellation immediate everywhere.
    """

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[bytes], headers: dict[str, str] | None = None):
        base = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        super().__init__(content, headers={**base, **(headers or {})})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:

            async def run_then_cancel(func: Any) -> None:
                try:
                    await func()
                except OSError:
                    pass  # the send failed: the client is gone, which is what we stop on anyway
                group.cancel_scope.cancel()

            group.start_soon(run_then_cancel, partial(self.stream_response, send))
            await run_then_cancel(partial(self.listen_for_disconnect, receive))
