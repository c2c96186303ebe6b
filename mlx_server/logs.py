"""Process-wide logging: human text or one JSON object per line."""

from __future__ import annotations

import json
import logging
import time

from .config import LogConfig


class JsonFormatter(logging.Formatter):
    """One JSON object per line; `extra={"event": {...}}` fields are merged in."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        event = getattr(record, "event", None)
        if isinstance(event, dict):
            out.update(event)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """Human-readable lines. Control characters in the message (which can carry a
    client's path, model name or prompt) are escaped, so no client can start a forged
    log line; a traceback after the message keeps its own lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return super().formatMessage(record).translate(_ESCAPES)


# C0 controls and DEL (tab kept), plus the Unicode line and paragraph separators.
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(9), *range(10, 32), 127)}
_ESCAPES.update({0x2028: "\\u2028", 0x2029: "\\u2029"})


def setup_logging(config: LogConfig) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if config.file:
        handlers.append(logging.FileHandler(config.file))
    for handler in handlers:
        if config.format == "json":
            handler.setFormatter(JsonFormatter())
        else:
            handler.setFormatter(
                TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(config.level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    # Per-request lines come from our own middleware; uvicorn's access log would double them.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
