"""Process wiring: logging, the engine on its thread, the HTTP app, uvicorn."""

from __future__ import annotations

import logging
from functools import partial
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

        from .engine.types import ModelLoadError
        from .loading.errors import GGUFImportError, ModelNotFoundError

        mc = config.model
        dtype = mc.dtype
        try:
            resolved = resolve_model(mc.model, dtype=auto_gguf_dtype() if dtype == "auto" else dtype)
        except (GGUFImportError, ModelNotFoundError) as e:
            raise ModelLoadError(str(e)) from e
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
    import threading

    import uvicorn

    from .embeddings.launch import config_problem, start_embedding_engine
    from .engine.async_engine import AsyncEngine
    from .server.app import create_app

    setup_logging(config.log)
    if config.model.chat_template_file and not Path(config.model.chat_template_file).is_file():
        log.error("--chat-template: no such file: %s", config.model.chat_template_file)
        return 2
    if problem := config_problem(config):
        log.error("cannot serve: %s", problem)
        return 2
    generation = not config.model.embedding  # llama-server's --embedding: embeddings only
    embedder = start_embedding_engine(config)
    engine = (AsyncEngine(_loader(config), config.engine, model_id(config)).start()
              if generation else None)
    engines = [e for e in (engine, embedder) if e is not None]
    app = create_app(lambda: engine if engine is not None and engine.ready else None, config,
                     health=partial(_health, engines), generation=generation,
                     embeddings=None if embedder is None else
                     (lambda: embedder if embedder.ready else None))
    server = _server_class()(uvicorn.Config(app, host=config.server.host, port=config.server.port,
                                    log_config=None, timeout_graceful_shutdown=8))
    failed = threading.Event()
    threading.Thread(target=_exit_on_load_failure, args=(engines, server, failed), daemon=True).start()
    server.run()
    for e in engines:
        e.shutdown()
    return 1 if failed.is_set() else 0


def _health(engines):
    """The first engine that is not ok (a chat and an embedding model are served together)."""
    for engine in engines:
        health = engine.health()
        if not health.ok:
            return health
    return engines[0].health()


def _exit_on_load_failure(engines, server, failed) -> None:
    """A model that cannot load is fatal: say why and exit non-zero, as llama-server does."""
    import time

    while not all(e.ready for e in engines):
        for engine in engines:
            health = engine.health()
            if health.status == "error":
                log.error("cannot serve: %s", health.detail)
                failed.set()
                server.should_exit = True
                return
        time.sleep(0.1)


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn re-raises SIGTERM after a graceful stop; orchestrators expect exit 0."""

        def handle_exit(self, sig, frame) -> None:
            super().handle_exit(sig, frame)
            self._captured_signals.clear()

    return Server
