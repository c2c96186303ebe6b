"""GET /slots and GET /props, with llama-server's field names, so its dashboards, probes
and LLMKube's agent read them unchanged."""

from __future__ import annotations

import importlib.metadata
import zlib
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from mlx_server import __version__
from mlx_server.engine.types import ModelInfo, SamplingParams, SlotInfo
from mlx_server.server.state import ready_engine, server_state

router = APIRouter()


def _llama_error(status: int, message: str, kind: str) -> JSONResponse:
    # llama-server's error shape (numeric code), which its clients parse.
    return JSONResponse({"error": {"code": status, "message": message, "type": kind}}, status)


@router.get("/slots")
async def slots(request: Request, fail_on_no_slot: bool = False) -> JSONResponse:
    if not server_state(request).config.server.slots_endpoint:
        return _llama_error(501, "This server does not support slots endpoint.",
                            "not_supported_error")
    engine = ready_engine(request)
    info = engine.model_info
    all_slots = engine.slots()
    if fail_on_no_slot and all(s.is_processing for s in all_slots):
        return _llama_error(503, "no slot available", "unavailable_error")
    return JSONResponse([_slot(s, info) for s in all_slots])


def _slot(slot: SlotInfo, info: ModelInfo) -> dict[str, Any]:
    remain = max(0, slot.max_tokens - slot.generated_tokens) if slot.is_processing else -1
    return {
        "id": slot.id,
        # llama-server numbers tasks; ours are strings, so this is a stable checksum of it.
        "id_task": zlib.crc32(slot.request_id.encode()) if slot.request_id else -1,
        "n_ctx": info.ctx_size,
        "speculative": False,
        "is_processing": slot.is_processing,
        "request_id": slot.request_id,
        # Cache state: the prompt, how much of it came from the prefix cache, and the
        # tokens this slot's KV cache now holds.
        "n_prompt_tokens": slot.prompt_tokens,
        "n_prompt_tokens_cache": slot.cached_tokens,
        "n_prompt_tokens_processed": slot.prompt_tokens - slot.cached_tokens,
        "n_past": slot.prompt_tokens + slot.generated_tokens,
        "params": {"n_predict": slot.max_tokens if slot.is_processing else -1},
        "next_token": {
            "has_next_token": slot.is_processing,
            "has_new_line": False,
            "n_remain": remain,
            "n_decoded": slot.generated_tokens,
            "stopping_word": "",
        },
    }


@router.get("/props")
async def props(request: Request) -> JSONResponse:
    engine = ready_engine(request)
    info = engine.model_info
    stats = engine.stats()
    return JSONResponse({
        "default_generation_settings": {
            "id": 0, "id_task": -1, "n_ctx": info.ctx_size, "speculative": False,
            "is_processing": False, "params": default_params(),
        },
        "total_slots": info.max_slots,
        "model_alias": info.id,
        "model_path": info.path,
        "n_ctx": info.ctx_size,
        "chat_template": info.chat_template or "",
        "modalities": {"vision": False, "audio": False},
        "build_info": build_info(),
        "is_sleeping": False,
        # Not llama-server's: how the KV cache is stored (-ctk/-ctv) and what a token costs.
        "kv_cache_type_k": stats.get("kv_cache_type_k"),
        "kv_cache_type_v": stats.get("kv_cache_type_v"),
        "kv_cache_bytes_per_token": stats.get("kv_bytes_per_token"),
    })


def default_params() -> dict[str, Any]:
    """What a request that sets nothing gets (OpenAI's defaults; n_predict -1: the room
    left in the context)."""
    sp = SamplingParams()
    return {
        "n_predict": -1, "temperature": sp.temperature, "top_k": sp.top_k, "top_p": sp.top_p,
        "min_p": sp.min_p, "presence_penalty": sp.presence_penalty,
        "frequency_penalty": sp.frequency_penalty, "repeat_penalty": sp.repetition_penalty,
        "seed": -1, "ignore_eos": sp.ignore_eos, "n_probs": 0, "stream": False,
    }


def build_info() -> str:
    versions = []
    for dist in ("mlx", "mlx-lm"):
        try:
            versions.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return f"mlx-server {__version__}" + (f" ({', '.join(versions)})" if versions else "")
