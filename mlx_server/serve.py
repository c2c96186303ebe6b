"""Process wiring: logging, the engine on its thread, the HTTP app, uvicorn."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from functools import partial
from pathlib import Path

from .config import AppConfig
from .logs import setup_logging

log = logging.getLogger("mlx_server")


def _loader(config: AppConfig, **load_kwargs):
    """The engine thread calls this: resolve (import GGUF if needed), then load.
    `load_kwargs` go to `load_model` (a distributed run passes its sharded `load`)."""

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
        template = mc.chat_template or (
            Path(mc.chat_template_file).read_text() if mc.chat_template_file else None)
        loaded = load_model(resolved.path, dtype=dtype, chat_template=template,
                            ctx_size=config.engine.ctx_size, **load_kwargs)
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

    from .embeddings.launch import config_problem, start_embedding_engine
    from .server.app import create_app

    setup_logging(config.log)
    started = time.monotonic()
    _log_startup(config)
    if config.model.chat_template_file and not Path(config.model.chat_template_file).is_file():
        log.error("--chat-template: no such file: %s", config.model.chat_template_file)
        return 2
    if problem := config_problem(config) or _kv_cache_problem(config):
        log.error("cannot serve: %s", problem)
        return 2
    if config.distributed.mode != "off":
        from .distributed.launch import follow, is_follower

        if is_follower(config):  # ranks > 0 serve no HTTP: they step with rank 0
            return follow(config, _loader)
    generation = not config.model.embedding  # llama-server's --embedding: embeddings only
    engine = _generation_engine(config).start() if generation else None
    embedder = start_embedding_engine(config, after=engine)
    engines = [e for e in (engine, embedder) if e is not None]
    app = create_app(lambda: engine if engine is not None and engine.ready else None, config,
                     health=partial(_health, engines), generation=generation,
                     embeddings=None if embedder is None else
                     (lambda: embedder if embedder.ready else None))
    server = _server_class()(_uvicorn_config(app, config), app.state.observer,
                             config.server.drain_timeout_s)
    failed = threading.Event()
    threading.Thread(target=_exit_on_load_failure, args=(engines, server, failed, started),
                     daemon=True).start()
    server.run()
    for e in engines:
        e.shutdown()
    log.info("stopped", extra={"event": {"event": "stopped", "exit_code": int(failed.is_set())}})
    return 1 if failed.is_set() else 0


def _generation_engine(config: AppConfig):
    from .engine.async_engine import AsyncEngine

    if config.distributed.mode != "off":
        from .distributed.launch import leader_engine

        return leader_engine(config, _loader, model_id(config))
    return AsyncEngine(_loader(config), config.engine, model_id(config))


def _uvicorn_config(app, config: AppConfig):
    import uvicorn

    sc = config.server
    # The drain ends what is left at drain_timeout_s; the margin lets final events flush.
    return uvicorn.Config(app, host=sc.host, port=sc.port, log_config=None,
                          timeout_graceful_shutdown=sc.drain_timeout_s + 2,
                          ssl_keyfile=sc.ssl_keyfile, ssl_certfile=sc.ssl_certfile)


def _log_startup(config: AppConfig) -> None:
    """One startup event, then (once) the flags that were accepted but change nothing."""
    from . import __version__

    log.info("starting mlx-server %s on %s:%d", __version__, config.server.host,
             config.server.port, extra={"event": {
                 "event": "starting", "version": __version__, "model": config.model.model,
                 "host": config.server.host, "port": config.server.port,
                 "slots": config.engine.max_slots, "ctx_size": config.engine.ctx_size}})
    if config.ignored_flags:
        log.info("ignoring flags with no meaning on MLX: %s", ", ".join(config.ignored_flags),
                 extra={"event": {"event": "ignored_flags", "flags": list(config.ignored_flags)}})
    for flag in config.pending_flags:
        log.warning("accepted but not applied: %s", flag,
                    extra={"event": {"event": "flag_not_applied", "flag": flag}})


def _kv_cache_problem(config: AppConfig) -> str | None:
    """A -ctk/-ctv pair MLX cannot store (checked before the model loads); logs a valid one."""
    from .engine.kv_quant import KVCacheFormat

    try:
        fmt = KVCacheFormat.parse(config.engine.kv_cache_type_k, config.engine.kv_cache_type_v)
    except ValueError as e:
        return str(e)
    if not fmt.is_default:
        log.info("KV cache: %s", fmt.describe())
    return None


def _health(engines):
    """The first engine that is not ok (a chat and an embedding model are served together)."""
    for engine in engines:
        health = engine.health()
        if not health.ok:
            return health
    return engines[0].health()


def _exit_on_load_failure(engines, server, failed, started: float) -> None:
    """A model that cannot load is fatal: say why and exit non-zero, as llama-server does.
    Otherwise report, once, how long the start took."""
    while not all(e.ready for e in engines):
        for engine in engines:
            health = engine.health()
            if health.status == "error":
                log.error("cannot serve: %s", health.detail)
                failed.set()
                server.should_exit = True
                return
        time.sleep(0.1)
    ready_s = round(time.monotonic() - started, 2)
    log.info("ready in %.1fs", ready_s, extra={"event": {"event": "ready", "ready_s": ready_s}})


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """On SIGTERM/SIGINT: stop accepting (uvicorn closes the port), turn away requests
        on open connections, let in-flight ones run for `drain_s`, then end the rest with a
        proper final event. uvicorn re-raises the signal after a graceful stop;
        orchestrators expect exit 0, so it is dropped."""

        def __init__(self, config, observer, drain_s: float):
            super().__init__(config)
            self.observer, self.drain_s = observer, drain_s

        def handle_exit(self, sig, frame) -> None:
            if not self.should_exit:
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:  # not serving yet: nothing is in flight
                    loop = None
                self.observer.begin_drain(self.drain_s, loop, signal.Signals(sig).name)
            super().handle_exit(sig, frame)
            self._captured_signals.clear()

    return Server
