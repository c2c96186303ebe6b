"""Command line: flags in, frozen config out. Nothing below this module sees argparse."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from . import __version__
from .config import AppConfig, EngineConfig, LogConfig, ModelConfig, ServerConfig


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mlx-server",
        description="OpenAI-compatible inference server for MLX models.",
        allow_abbrev=False,
    )
    p.add_argument("--version", action="version", version=f"mlx-server {__version__}")
    m = p.add_argument_group("model")
    m.add_argument("-m", "--model", help="MLX model folder, local Hugging Face id, or .gguf file "
                   "(default: the embedded Gemma 3 270M)")
    m.add_argument("-a", "--alias", help="model name served in responses and /v1/models")
    m.add_argument("--chat-template", "--chat-template-file", dest="chat_template",
                   help="Jinja chat template file that replaces the model's own")
    m.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                   help="weight dtype (auto: float32 for GGUF on CPU, the checkpoint's own otherwise)")
    s = p.add_argument_group("server")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--max-body-bytes", type=int, default=8 * 1024 * 1024)
    e = p.add_argument_group("engine")
    e.add_argument("--max-slots", "-np", "--parallel", dest="max_slots", type=int, default=4,
                   help="sequences decoded together in one batch")
    e.add_argument("-c", "--ctx-size", type=int, default=None,
                   help="context length (default: the model's; 0 means the model's)")
    e.add_argument("--prefill-step-size", type=int, default=512,
                   help="prompt tokens per prefill chunk (bounds other streams' latency)")
    e.add_argument("--max-queue", type=int, default=64, help="waiting requests before 503")
    e.add_argument("--timeout", type=float, default=600.0, help="per-request timeout, seconds")
    e.add_argument("--cache-bytes", type=int, default=None,
                   help="KV-cache budget in bytes (default: derived from memory)")
    e.add_argument("--no-prefix-cache", action="store_true", help="disable prefix KV reuse")
    lg = p.add_argument_group("logging")
    lg.add_argument("--log-format", choices=["text", "json"], default="text")
    lg.add_argument("--log-level", default="info",
                    choices=["debug", "info", "warning", "error", "critical"])
    return p


def parse_args(argv: Sequence[str]) -> AppConfig:
    ns = build_parser().parse_args(list(argv))
    return AppConfig(
        model=ModelConfig(model=ns.model, alias=ns.alias, chat_template_file=ns.chat_template,
                          dtype=ns.dtype),
        engine=EngineConfig(
            max_slots=max(1, ns.max_slots),
            ctx_size=ns.ctx_size or None,
            prefill_step_size=max(16, ns.prefill_step_size),
            max_queue=max(0, ns.max_queue),
            request_timeout_s=ns.timeout if ns.timeout and ns.timeout > 0 else None,
            cache_bytes=ns.cache_bytes,
            enable_prefix_cache=not ns.no_prefix_cache,
        ),
        server=ServerConfig(host=ns.host, port=ns.port, max_body_bytes=ns.max_body_bytes),
        log=LogConfig(format=ns.log_format, level=ns.log_level),
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    config = parse_args(args)
    from .platform import ensure_fast_blas

    ensure_fast_blas(args)
    from .serve import serve  # heavy imports (mlx, fastapi) only after the re-exec

    sys.exit(serve(config))
