"""Process wiring for `--distributed`: which rank this is, sharded loading, both roles.

    mlx.launch -n 2 --hosts 127.0.0.1 -- mlx-server --distributed --model DIR --port 8080

Every rank runs the same command. Rank 0 serves HTTP; the others load their shard and
follow rank 0's steps until it stops (see lockstep.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import mlx.core as mx

from ..config import AppConfig, DistributedConfig
from ..engine.async_engine import AsyncEngine
from ..engine.core import EngineCore
from ..engine.loader import LoadedModel
from .channel import Broadcast
from .lockstep import FollowerCore, LeaderCore

log = logging.getLogger("mlx_server.distributed")

# serve.py's loader factory: (config, load=...) -> a function that loads the model.
LoaderFactory = Callable[..., Callable[[], LoadedModel]]

_group: mx.distributed.Group | None = None


def group(config: DistributedConfig) -> mx.distributed.Group:
    """The job's group (one per process: MLX cannot open a second)."""
    global _group
    if _group is None:
        _group = mx.distributed.init(backend=config.backend)
        log.info("distributed rank %d of %d (backend %s, mode %s)", _group.rank(), _group.size(),
                 config.backend, config.mode)
        if _group.size() == 1:
            log.warning("--distributed without other ranks: start it under mlx.launch "
                        "(e.g. mlx.launch -n 2 --hosts 127.0.0.1 -- mlx-server --distributed ...)")
    return _group


def sharded(config: DistributedConfig) -> Callable[[str], tuple[Any, Any]]:
    """mlx-lm's `sharded_load` for the chosen mode, as `load_model`'s `load`."""
    from mlx_lm.utils import sharded_load

    g = group(config)

    def load(path: str) -> tuple[Any, Any]:
        if g.size() == 1:
            from mlx_lm.utils import load as plain_load

            return plain_load(path)
        tensor = g if config.mode == "tensor" else None
        pipeline = g if config.mode == "pipeline" else None
        return sharded_load(path, pipeline_group=pipeline, tensor_group=tensor)

    return load


class LeaderEngine(AsyncEngine):
    """Rank 0's engine: a `LeaderCore`, and a stop message for the others at the end."""

    def __init__(self, load: Callable[[], LoadedModel], config: AppConfig, model_id: str):
        super().__init__(load, config.engine, model_id)
        self._channel = Broadcast(group(config.distributed))

    def _make_core(self, loaded: LoadedModel) -> EngineCore:
        return LeaderCore(loaded, self._config, self._channel)

    def _loop(self, core: EngineCore) -> None:
        try:
            super()._loop(core)
        finally:
            assert isinstance(core, LeaderCore)
            core.stop_followers()


def leader_engine(config: AppConfig, loader: LoaderFactory, model_id: str) -> LeaderEngine:
    return LeaderEngine(loader(config, load=sharded(config.distributed)), config, model_id)


def is_follower(config: AppConfig) -> bool:
    return group(config.distributed).rank() > 0


def follow(config: AppConfig, loader: LoaderFactory) -> int:
    """A rank > 0: load the shard, then step with rank 0 until it stops."""
    g = group(config.distributed)
    loaded = loader(config, load=sharded(config.distributed))()
    core = FollowerCore(loaded, config.engine, Broadcast(g))
    log.info("rank %d ready: following rank 0", g.rank())
    core.follow()
    log.info("rank %d: rank 0 stopped; exiting", g.rank())
    return 0
