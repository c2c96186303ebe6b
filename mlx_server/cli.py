"""Command line: flags in, frozen config out. Nothing below this module sees argparse.

The flags are llama-server's where it has one (same spellings, short forms and
`LLAMA_ARG_*` environment variables), so a llama-server launch line starts this server
unchanged; flags that mean nothing on MLX are accepted and reported (see cli_compat).
As with argparse everywhere, the last occurrence of a flag wins.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from . import __version__
from .cli_compat import EnvVar, add_compat_flags, compat_env_vars, env_args
from .config import (
    AppConfig,
    DistributedConfig,
    EngineConfig,
    LogConfig,
    ModelConfig,
    ServerConfig,
    SpecConfig,
    ToolConfig,
)

KV_CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")
REASONING_SWITCHES = ("on", "off", "auto")

# Environment variables of the flags that take effect (llama.cpp's names).
ENV_VARS = (
    EnvVar("LLAMA_ARG_MODEL", "--model"),
    EnvVar("LLAMA_ARG_ALIAS", "--alias"),
    EnvVar("LLAMA_ARG_HOST", "--host"),
    EnvVar("LLAMA_ARG_PORT", "--port"),
    EnvVar("LLAMA_ARG_CTX_SIZE", "--ctx-size"),
    EnvVar("LLAMA_ARG_N_PARALLEL", "--parallel"),
    EnvVar("LLAMA_ARG_TIMEOUT", "--timeout"),
    EnvVar("LLAMA_API_KEY", "--api-key", split=True),
    EnvVar("LLAMA_ARG_CHAT_TEMPLATE", "--chat-template"),
    EnvVar("LLAMA_ARG_CHAT_TEMPLATE_FILE", "--chat-template-file"),
    EnvVar("LLAMA_CHAT_TEMPLATE_KWARGS", "--chat-template-kwargs"),
    EnvVar("LLAMA_ARG_JINJA", "--jinja", neg="--no-jinja"),
    EnvVar("LLAMA_ARG_THINK", "--reasoning-format"),
    EnvVar("LLAMA_ARG_THINK_BUDGET", "--reasoning-budget"),
    EnvVar("LLAMA_ARG_THINK_BUDGET_MESSAGE", "--reasoning-budget-message"),
    EnvVar("LLAMA_ARG_REASONING", "--reasoning"),
    EnvVar("LLAMA_ARG_ENDPOINT_METRICS", "--metrics"),
    EnvVar("LLAMA_ARG_ENDPOINT_SLOTS", "--slots", neg="--no-slots"),
    EnvVar("LLAMA_ARG_CACHE_TYPE_K", "--cache-type-k"),
    EnvVar("LLAMA_ARG_CACHE_TYPE_V", "--cache-type-v"),
    EnvVar("LLAMA_ARG_CACHE_RAM", "--cache-ram"),
    EnvVar("LLAMA_ARG_SPEC_TYPE", "--spec-type"),
    EnvVar("LLAMA_ARG_MODEL_DRAFT", "--model-draft"),
    EnvVar("LLAMA_ARG_SPEC_DRAFT_MODEL", "--model-draft"),
    EnvVar("LLAMA_ARG_DRAFT_MAX", "--draft-max"),
    EnvVar("LLAMA_ARG_SPEC_DRAFT_N_MAX", "--draft-max"),
    EnvVar("LLAMA_ARG_DRAFT_MIN", "--draft-min"),
    EnvVar("LLAMA_ARG_DRAFT_P_MIN", "--draft-p-min"),
    EnvVar("LLAMA_ARG_SPEC_DRAFT_P_MIN", "--draft-p-min"),
    EnvVar("LLAMA_ARG_EMBEDDINGS", "--embedding"),
    EnvVar("LLAMA_ARG_RERANKING", "--reranking"),
    EnvVar("LLAMA_ARG_POOLING", "--pooling"),
    EnvVar("LLAMA_ARG_MMPROJ", "--mmproj"),
    EnvVar("LLAMA_ARG_SSL_KEY_FILE", "--ssl-key-file"),
    EnvVar("LLAMA_ARG_SSL_CERT_FILE", "--ssl-cert-file"),
    EnvVar("LLAMA_LOG_FILE", "--log-file"),
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mlx-server",
        description="OpenAI-compatible inference server for MLX models; takes llama-server's "
        "flags (and LLAMA_ARG_* variables), ignoring those with no meaning on MLX.",
        allow_abbrev=False,
    )
    p.add_argument("--version", action="version", version=f"mlx-server {__version__}")
    _model_flags(p.add_argument_group("model"))
    _server_flags(p.add_argument_group("server"))
    _engine_flags(p.add_argument_group("engine"))
    _spec_flags(p.add_argument_group("speculative decoding"))
    _tool_flags(p.add_argument_group("tool calling and reasoning"))
    _distributed_flags(p.add_argument_group("distributed (under mlx.launch)"))
    _log_flags(p.add_argument_group("logging"))
    add_compat_flags(p.add_argument_group("llama-server compatibility"))
    return p


def _model_flags(m: argparse._ArgumentGroup) -> None:
    m.add_argument("-m", "--model", help="MLX model folder, local Hugging Face id, or .gguf file "
                   "(default: the embedded Gemma 3 270M)")
    m.add_argument("-a", "--alias", help="model name served in responses and /v1/models")
    m.add_argument("--chat-template", help="a Jinja chat template, or a built-in name "
                   "(chatml, llama3, gemma), that replaces the model's own")
    m.add_argument("--chat-template-file", help="a Jinja chat template file")
    m.add_argument("--jinja", action="store_true", help="accepted: templates are always Jinja")
    m.add_argument("--no-jinja", action="store_true", help=argparse.SUPPRESS)
    m.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                   help="weight dtype (auto: float32 for GGUF on CPU, the checkpoint's own "
                   "otherwise)")
    m.add_argument("--embedding", "--embeddings", action="store_true",
                   help="embedding mode (/v1/embeddings)")
    m.add_argument("--reranking", "--rerank", action="store_true",
                   help="rerank mode: implies --embedding --pooling rank")
    m.add_argument("--pooling", choices=["none", "mean", "cls", "last", "rank"],
                   help="embedding pooling (default: the model's)")
    m.add_argument("-mm", "--mmproj", help="multimodal projector file, for vision models")
    m.add_argument("--embedding-model", help="an embedding model folder served by /v1/embeddings "
                   "next to the main model")
    m.add_argument("--embedding-alias", help="the embedding model's name in responses and "
                   "/v1/models (default: its folder name)")


def _server_flags(s: argparse._ArgumentGroup) -> None:
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--api-key", action="append", default=[],
                   help="require `Authorization: Bearer KEY` (repeat for several keys)")
    s.add_argument("--api-key-file", action="append", default=[],
                   help="a file of API keys, one per line")
    s.add_argument("--metrics-api-key", action="append", default=[],
                   help="protect /metrics: require this key (or an --api-key) there")
    s.add_argument("--cors-origins", action="append", default=[],
                   help="comma-separated origins allowed by CORS (default: CORS off)")
    s.add_argument("--max-body-bytes", type=int, default=8 * 1024 * 1024,
                   help="request bodies larger than this get a 413")
    s.add_argument("--metrics", action="store_true",
                   help="accepted: /metrics is always served")
    s.add_argument("--slots", dest="slots", action="store_true", default=True,
                   help="serve GET /slots (default)")
    s.add_argument("--no-slots", dest="slots", action="store_false", help="disable GET /slots")
    s.add_argument("--drain-timeout", type=float, default=5.0,
                   help="after SIGTERM, seconds in-flight requests may still run (default: 5)")
    s.add_argument("--allow-image-urls", action="store_true",
                   help="fetch chat images from public http(s) URLs (default: data: URLs only)")
    s.add_argument("--ssl-key-file", help="PEM private key: serve HTTPS")
    s.add_argument("--ssl-cert-file", help="PEM certificate: serve HTTPS")


def _engine_flags(e: argparse._ArgumentGroup) -> None:
    e.add_argument("-np", "--parallel", "--max-slots", dest="max_slots", type=int, default=4,
                   help="sequences decoded together in one batch (<= 0: the default, 4)")
    e.add_argument("-c", "--ctx-size", type=int, default=None,
                   help="context length (default: the model's; 0 means the model's)")
    e.add_argument("--prefill-step-size", type=int, default=2048,
                   help="prompt tokens per prefill chunk (bounds other streams' latency)")
    e.add_argument("--max-queue", type=int, default=64, help="waiting requests before 503")
    e.add_argument("-to", "--timeout", type=float, default=600.0,
                   help="per-request timeout, seconds (0: none)")
    e.add_argument("--cache-bytes", type=int, default=None,
                   help="KV-cache budget in bytes (default: derived from memory)")
    e.add_argument("--no-prefix-cache", "--no-cache-prompt", action="store_true",
                   help="disable prefix KV reuse")
    e.add_argument("-cram", "--cache-ram", type=int, default=None,
                   help="llama-server's prompt-cache size in MiB: 0 disables prefix reuse")
    e.add_argument("--compile-decode", choices=["auto", "on", "off"], default="auto",
                   help="decode steps as one compiled MLX graph (auto: on a GPU)")
    e.add_argument("-ctk", "--cache-type-k", choices=KV_CACHE_TYPES,
                   help="KV-cache dtype for K (llama.cpp names)")
    e.add_argument("-ctv", "--cache-type-v", choices=KV_CACHE_TYPES,
                   help="KV-cache dtype for V (llama.cpp names)")


# llama-server's n-gram drafters all map to one prompt-lookup drafter here; its draft-*
# types (draft-simple, draft-mtp, ...) to the -md draft model.
NGRAM_TYPES = ("ngram-simple", "ngram-map-k", "ngram-map-k4v", "ngram-mod", "ngram-cache", "ngram")


def _spec_type(value: str) -> str:
    if value in ("none", *NGRAM_TYPES) or value.startswith("draft"):
        return value
    raise argparse.ArgumentTypeError(
        f"invalid choice: {value!r} (choose from none, {', '.join(NGRAM_TYPES)}, draft-*)")


def _count(value: str) -> int:
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {n}")
    return n


def _spec_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--spec-type", type=_spec_type, default=None,
                   help="draft without a draft model: ngram-simple (and llama-server's other "
                        "ngram-* names) look the sequence's last n-gram up in its own history")
    g.add_argument("-md", "--model-draft", "--spec-draft-model", dest="model_draft",
                   help="a draft model (same vocabulary) proposing tokens the model verifies")
    g.add_argument("--spec-draft-n-max", "--draft-max", "--draft", "--draft-n", dest="draft_max",
                   type=_count, default=16, help="draft tokens per sequence per step")
    g.add_argument("--spec-draft-n-min", "--draft-min", "--draft-n-min", dest="draft_min",
                   type=_count, default=0, help="fewer drafts than this: none that step")
    g.add_argument("--spec-draft-p-min", "--draft-p-min", dest="draft_p_min", type=float,
                   default=0.8, help="a greedy draft model stops below this probability")
    g.add_argument("--spec-ngram-size-n", dest="ngram_n", type=_count, default=3,
                   help="longest n-gram looked up for ngram drafting")


def _spec_config(ns: argparse.Namespace) -> SpecConfig:
    """-md wins; a draft-* type without -md (an MTP head, say) is reported as not applied."""
    kind = "draft" if ns.model_draft else "ngram" if ns.spec_type in NGRAM_TYPES else "none"
    if ns.draft_max == 0:
        kind = "none"
    return SpecConfig(type=kind, draft_model=ns.model_draft if kind == "draft" else None,  # type: ignore[arg-type]
                      draft_max=ns.draft_max, draft_min=ns.draft_min,
                      p_min=ns.draft_p_min, ngram_n=max(1, ns.ngram_n))


def _tool_flags(t: argparse._ArgumentGroup) -> None:
    from .parsing.tool_parsers import tool_parser_names

    t.add_argument("--tool-call-format", metavar="NAME",
                   help="tool-call format, one of: " + ", ".join(tool_parser_names())
                   + " (default: inferred from the chat template)")
    t.add_argument("-rea", "--reasoning", default="auto",
                   help="on, off, auto, or a reasoning parser name (default: auto)")
    t.add_argument("--reasoning-format",
                   help="llama-server's: none, deepseek, deepseek-legacy, auto")
    t.add_argument("--reasoning-budget", type=int, default=-1,
                   help="thinking tokens allowed: -1 unlimited, 0 no thinking")
    t.add_argument("--reasoning-budget-message",
                   help="text injected when the reasoning budget runs out")
    t.add_argument("--chat-template-kwargs", help="JSON object of extra chat-template variables")
    t.add_argument("--mirror-reasoning-field", action="store_true",
                   help="also send the thought as `reasoning`, beside `reasoning_content`")


def _distributed_flags(d: argparse._ArgumentGroup) -> None:
    d.add_argument("--distributed", nargs="?", const="auto", default="off",
                   choices=["off", "auto", "tensor", "pipeline"],
                   help="shard the model across the ranks of an mlx.launch job; rank 0 serves "
                   "HTTP (auto: tensor parallel where supported, else pipeline)")
    d.add_argument("--distributed-backend", default="any",
                   choices=["any", "ring", "jaccl", "mpi", "nccl"],
                   help="MLX distributed backend (default: whichever mlx.launch set up)")


def _log_flags(lg: argparse._ArgumentGroup) -> None:
    lg.add_argument("--log-format", choices=["text", "json"], default="text")
    lg.add_argument("--log-level", default="info",
                    choices=["debug", "info", "warning", "error", "critical"])
    lg.add_argument("-v", "--verbose", "--log-verbose", action="store_true",
                    help="same as --log-level debug")
    lg.add_argument("--log-disable", action="store_true", help="only warnings and errors")
    lg.add_argument("--log-file", help="also write the log to this file")


def parse_args(argv: Sequence[str], env: Mapping[str, str] | None = None) -> AppConfig:
    """Flags (and `LLAMA_ARG_*` variables from `env`, default `os.environ`) to config."""
    parser = build_parser()
    argv = list(argv)
    variables = [*ENV_VARS, *compat_env_vars()]
    from_env = env_args(parser, argv, os.environ if env is None else env, variables)
    ns = parser.parse_args(from_env + argv)
    compat: list[tuple[str, str, str]] = ns.compat or []
    ignored = [shown for _, shown, why in compat if not why]
    pending = [f"{shown}: {why}" for _, shown, why in compat if why]
    if ns.no_jinja:
        ignored.append("--no-jinja")
    if ns.cache_ram not in (None, 0):
        pending.append(f"--cache-ram {ns.cache_ram}: the KV budget is --cache-bytes")
    if (ns.spec_type or "").startswith("draft") and not ns.model_draft:
        pending.append(f"--spec-type {ns.spec_type}: only -md draft models and ngram-* "
                       "drafting are implemented")
    return AppConfig(
        model=_model_config(parser, ns),
        engine=_engine_config(ns),
        server=_server_config(parser, ns),
        log=_log_config(ns),
        tools=_tool_config(parser, ns),
        distributed=DistributedConfig(mode=ns.distributed, backend=ns.distributed_backend),
        ignored_flags=tuple(ignored),
        pending_flags=tuple(pending),
    )


def _model_config(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> ModelConfig:
    template = _chat_template(parser, ns.chat_template) if ns.chat_template else None
    if ns.chat_template_file and not Path(ns.chat_template_file).is_file():
        parser.error(f"--chat-template-file: no such file: {ns.chat_template_file}")
    return ModelConfig(
        model=ns.model, alias=ns.alias, chat_template_file=ns.chat_template_file,
        chat_template=template, dtype=ns.dtype,
        embedding=ns.embedding or ns.reranking, reranking=ns.reranking,
        pooling="rank" if ns.reranking and ns.pooling is None else ns.pooling,
        mmproj=ns.mmproj, embedding_model=ns.embedding_model, embedding_alias=ns.embedding_alias,
    )


def _chat_template(parser: argparse.ArgumentParser, value: str) -> str:
    """llama-server takes a template or a built-in name; a file path is accepted too."""
    from .loading.chat_templates import CHATML, GEMMA3, LLAMA3

    builtin = {"chatml": CHATML, "llama3": LLAMA3, "gemma": GEMMA3, "gemma3": GEMMA3}
    if value in builtin:
        return builtin[value]
    if "{{" in value or "{%" in value:
        return value
    if Path(value).is_file():
        return Path(value).read_text()
    parser.error(f"--chat-template: {value!r} is neither a Jinja template, a file, nor a "
                 f"built-in name ({', '.join(builtin)})")


def _engine_config(ns: argparse.Namespace) -> EngineConfig:
    return EngineConfig(
        max_slots=ns.max_slots if ns.max_slots > 0 else 4,
        ctx_size=ns.ctx_size or None,
        prefill_step_size=max(16, ns.prefill_step_size),
        max_queue=max(0, ns.max_queue),
        request_timeout_s=ns.timeout if ns.timeout and ns.timeout > 0 else None,
        cache_bytes=ns.cache_bytes,
        enable_prefix_cache=not ns.no_prefix_cache and ns.cache_ram != 0,
        kv_cache_type_k=ns.cache_type_k,
        kv_cache_type_v=ns.cache_type_v,
        spec=_spec_config(ns),
        # Untested across ranks (collectives inside a trace): off when distributed.
        compile_decode="off" if ns.distributed != "off" else ns.compile_decode,
    )


def _server_config(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> ServerConfig:
    keys = [k for k in ns.api_key if k]
    for path in ns.api_key_file:
        try:
            keys += [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
        except OSError as e:
            parser.error(f"--api-key-file: cannot read {path}: {e.strerror}")
    origins = [o.strip() for value in ns.cors_origins for o in value.split(",") if o.strip()]
    if bool(ns.ssl_key_file) != bool(ns.ssl_cert_file):
        parser.error("--ssl-key-file and --ssl-cert-file go together")
    return ServerConfig(
        host=ns.host, port=ns.port, max_body_bytes=ns.max_body_bytes,
        api_keys=tuple(dict.fromkeys(keys)), cors_origins=tuple(origins),
        metrics_api_keys=tuple(k for k in ns.metrics_api_key if k),
        slots_endpoint=ns.slots, drain_timeout_s=max(0.0, ns.drain_timeout),
        ssl_keyfile=ns.ssl_key_file, ssl_certfile=ns.ssl_cert_file,
        allow_image_urls=ns.allow_image_urls,
    )


def _tool_config(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> ToolConfig:
    from .parsing import reasoning_parser_names, tool_parser_names

    fmt = ns.tool_call_format
    if fmt is not None and fmt not in tool_parser_names():
        parser.error(f"--tool-call-format: unknown format {fmt!r}; choose from "
                     f"{', '.join(tool_parser_names())}")
    if ns.reasoning not in (*REASONING_SWITCHES, *reasoning_parser_names()):
        parser.error(f"--reasoning: expected on, off, auto or one of "
                     f"{', '.join(reasoning_parser_names())}; got {ns.reasoning!r}")
    return ToolConfig(
        tool_call_format=fmt, reasoning=ns.reasoning, reasoning_format=ns.reasoning_format,
        reasoning_budget=ns.reasoning_budget, reasoning_budget_message=ns.reasoning_budget_message,
        mirror_reasoning=ns.mirror_reasoning_field,
        chat_template_kwargs=_template_kwargs(parser, ns.chat_template_kwargs),
    )


def _template_kwargs(parser: argparse.ArgumentParser, raw: str | None) -> Mapping[str, Any]:
    if not raw:
        return MappingProxyType({})
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as e:
        parser.error(f"--chat-template-kwargs: not valid JSON: {e}")
    if not isinstance(value, dict):
        parser.error("--chat-template-kwargs: expected a JSON object")
    return MappingProxyType(value)


def _log_config(ns: argparse.Namespace) -> LogConfig:
    level = "debug" if ns.verbose else "warning" if ns.log_disable else ns.log_level
    return LogConfig(format=ns.log_format, level=level, file=ns.log_file)


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    config = parse_args(args)
    from .platform import bound_malloc, ensure_fast_blas

    ensure_fast_blas(args)
    bound_malloc()
    from .serve import serve  # heavy imports (mlx, fastapi) only after the re-exec

    code = serve(config)
    # Skip interpreter teardown: native threads (MLX streams, tokenizer and grammar
    # libraries) can abort in static destructors, turning a clean stop into SIGABRT,
    # and orchestrators read the exit status. Everything is closed by now.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
