"""Process wiring: logging, the engine on its thread, the HTTP app, uvicorn."""

from __future__ import annotations

import logging
from pathlib import Path

from .config import AppConfig
from .logs import setup_logging

log = logging.getLogger("mlx_server")


def _loader(config: AppConfig):
    """The engine thread calls this: resolve (import GGUF if needed), then load."""

    def load():
        import mlx.core as mx

        from .engine.loader import load_model
        from .loading.resolve import resolve_model
        from .platform import auto_gguf_dtype, loaded_blas

        mc = config.model
        dtype = mc.dtype
        resolved = resolve_model(mc.model, dtype=auto_gguf_dtype() if dtype == "auto" else dtype)
        template = Path(mc.chat_template_file).read_text() if mc.chat_template_file else None
        loaded = load_model(resolved.path, dtype=dtype, chat_template=template,
                            ctx_size=config.engine.ctx_size)
        log.info("device=%s blas=%s dtype=%s", mx.default_device(), loaded_blas(), loaded.dtype)
        return loaded

    return load


def model_id(config: AppConfig) -> str:
    if config.model.alias:
        return config.model.alias
    if config.model.model is None:
        return "gemma-3-270m"
    return Path(config.model.model.rstrip("/")).name.removesuffix(".gguf")


def serve(config: AppConfig) -> int:
    import uvicorn

    from .engine.async_engine import AsyncEngine
    from .server.app import create_app

    setup_logging(config.log)
    if config.model.chat_template_file and not Path(config.model.chat_template_file).is_file():
        log.error("--chat-template: no such file: %s", config.model.chat_template_file)
        return 2
    engine = AsyncEngine(_loader(config), config.engine, model_id(config)).start()
    app = create_app(lambda: engine if engine.ready else None, config, health=engine.health)
    uvicorn.run(app, host=config.server.host, port=config.server.port,
                log_config=None, timeout_graceful_shutdown=8)
    engine.shutdown()
    return 0
