"""The engine as the HTTP layer sees it: an `EngineClient` backed by a loop on its own thread.

The model loads and runs on one dedicated thread, so the HTTP event loop never waits
on a forward pass and /health answers while every slot is busy.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from ..config import EngineConfig
from .core import EngineCore
from .loader import LoadedModel
from .types import (
    GenerationOutput,
    GenerationRequest,
    Health,
    InvalidRequestError,
    ModelInfo,
    ModelLoadError,
    PromptImage,
    SlotInfo,
    TemplateError,
)
from .worker import BackgroundWorker

log = logging.getLogger("mlx_server.engine")

# An idle engine waits this long for one more request of a burst (and this long at most).
BURST_GAP_S = 0.003
BURST_MAX_WAIT_S = 0.025


class AsyncEngine(BackgroundWorker):
    """Implements `EngineClient`. Start it, then poll `ready` (or `health()`)."""

    def __init__(self, load: Callable[[], LoadedModel], config: EngineConfig, model_id: str):
        super().__init__("mlx-engine")
        self._load = load
        self._config = config
        self._model_id = model_id
        self._core: EngineCore | None = None
        self._info: ModelInfo | None = None
        self._beat = time.monotonic()
        # (loop, queue, output) emitted during a step; engine thread only.
        self._outbox: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[Any], Any]] = []

    def _run(self) -> None:
        try:
            loaded = self._load()
            self._core = self._make_core(loaded)
            self._info = _model_info(self._model_id, loaded, self._config)
            self._state = "ok"
            log.info("engine ready: %d slots, ctx %d", self._config.max_slots, loaded.ctx_size)
        except ModelLoadError as e:
            self._error, self._state = str(e), "error"
            return
        except Exception as e:
            log.exception("model load failed")
            self._error, self._state = f"{type(e).__name__}: {e}", "error"
            return
        self._loop(self._core)

    def _make_core(self, loaded: LoadedModel) -> EngineCore:
        return EngineCore(loaded, self._config)

    def _loop(self, core: EngineCore) -> None:
        idle = True
        while not self._stop.is_set():
            if not core.has_work():
                self._wake.wait(0.05)
                self._wake.clear()
                self._beat = time.monotonic()
                idle = True
                continue
            if idle:
                self._gather_burst(core)
                idle = False
            try:
                core.step()
            except Exception as e:  # the batch itself broke: end its sequences, keep serving
                log.exception("engine step failed")
                core.fail_all(f"internal error during generation: {type(e).__name__}")
                core.reset_generator()
            finally:
                self._deliver()
            self._beat = time.monotonic()

    def _deliver(self) -> None:
        """Hand a step's outputs to their event loops: one wake-up per loop per step.

        Waking the HTTP loop once per token of every stream (32 streams: 32 wake-ups a
        step) costs it, and the engine thread waiting on it for the GIL, more than the
        tokens themselves.
        """
        if not self._outbox:
            return
        batch, self._outbox = self._outbox, []
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue[Any], Any]]] = {}
        for loop, queue, out in batch:
            by_loop.setdefault(loop, []).append((queue, out))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_put_all, items)
            except RuntimeError:  # that loop is gone; its requests' aborts clean up
                pass

    def _gather_burst(self, core: EngineCore) -> None:
        """Wait (a few ms at most) for the rest of a burst before the first step.

        A burst's requests reach the engine milliseconds apart; started alone, the first
        one's prefill step would make all the others wait for it before theirs begins.
        """
        deadline = time.monotonic() + BURST_MAX_WAIT_S
        seen = core.queued()
        while time.monotonic() < deadline:
            self._wake.wait(BURST_GAP_S)
            self._wake.clear()
            now = core.queued()
            if now == seen:
                return
            seen = now

    # -- EngineClient -----------------------------------------------------------
    @property
    def model_info(self) -> ModelInfo:
        if self._info is None:
            raise RuntimeError("the model is not loaded yet")
        return self._info

    @property
    def core(self) -> EngineCore:
        if self._core is None:
            raise RuntimeError("the model is not loaded yet")
        return self._core

    def render_chat(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        template_kwargs: dict[str, Any] | None = None,
        add_generation_prompt: bool = True,
    ) -> list[int]:
        tok = self.core.tok
        try:
            text = tok.apply_chat_template(
                messages,
                tools=tools or None,
                add_generation_prompt=add_generation_prompt,
                tokenize=False,
                **(template_kwargs or {}),
            )
        except Exception as e:  # jinja errors, raise_exception() in templates, bad kwargs
            raise TemplateError(f"The chat template could not render these messages: {e}") from e
        return list(tok.encode(text, add_special_tokens=False))

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self.core.tok.encode(text, add_special_tokens=add_special_tokens))

    def decode(self, token_ids: Sequence[int]) -> str:
        return str(self.core.tok.decode(list(token_ids)))

    def attach_images(self, prompt_tokens: Sequence[int], images: Sequence[tuple[bytes, str]]
                      ) -> tuple[list[int], tuple[PromptImage, ...]]:
        vision = self.core.loaded.vision
        if vision is None:
            raise InvalidRequestError("This model does not accept images.", "messages")
        return vision.prepare(prompt_tokens, images)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationOutput]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[GenerationOutput] = asyncio.Queue()

        def emit(out: GenerationOutput) -> None:
            if threading.current_thread() is self._thread:
                self._outbox.append((loop, queue, out))  # delivered after the step
                return
            # Another thread (an abort before the engine saw the request): no step may
            # come to deliver it, so deliver it now.
            try:
                loop.call_soon_threadsafe(queue.put_nowait, out)
            except RuntimeError:  # the client's loop is gone
                pass

        matcher = None
        if request.sampling.grammar is not None:  # compiling drops the GIL; keep it off the loop
            matcher = await loop.run_in_executor(
                None, self.core.grammars.compile, request.sampling.grammar)
        self.core.submit(request, emit, matcher)
        self._wake.set()
        done = False
        try:
            while not done:
                out = await queue.get()
                # A reader that fell behind gets what piled up as one output.
                while out.finish_reason is None and not queue.empty():
                    out = merge_outputs(out, queue.get_nowait())
                done = out.finish_reason is not None
                yield out
        finally:
            if not done:
                self.core.abort(request.request_id)
                self._wake.set()

    async def abort(self, request_id: str) -> None:
        if self._core is not None:
            self._core.abort(request_id)
            self._wake.set()

    def health(self) -> Health:
        if self._state == "loading":
            return Health(False, "loading", "Loading model")
        if self._state == "error" or not self._thread.is_alive():
            return Health(False, "error", self._error or "the engine thread has stopped")
        stalled = time.monotonic() - self._beat
        if self._core is not None and self._core.has_work() and stalled > self._config.wedge_timeout_s:
            return Health(False, "wedged", f"no engine progress for {stalled:.0f}s")
        return Health(True, "ok")

    def stats(self) -> dict[str, Any]:
        if self._core is None:
            return {"state": self._state}
        return {"state": self._state, **self._core.stats()}

    def slots(self) -> list[SlotInfo]:
        running = {s.id: s for s in self._core.slots()} if self._core is not None else {}
        return [running.get(i, SlotInfo(i)) for i in range(self._config.max_slots)]


def _put_all(items: list[tuple[asyncio.Queue[Any], Any]]) -> None:
    for queue, out in items:
        queue.put_nowait(out)


def merge_outputs(a: GenerationOutput, b: GenerationOutput) -> GenerationOutput:
    """`a` then `b` as one increment; counters and timings are `b`'s (they are cumulative)."""
    return dataclasses.replace(b, text=a.text + b.text, token_ids=a.token_ids + b.token_ids,
                               logprobs=a.logprobs + b.logprobs)


def _model_info(model_id: str, loaded: LoadedModel, config: EngineConfig) -> ModelInfo:
    tok = loaded.tokenizer
    template = getattr(tok._tokenizer, "chat_template", None)
    return ModelInfo(
        id=model_id,
        path=str(loaded.path),
        ctx_size=loaded.ctx_size,
        vocab_size=loaded.vocab_size,
        chat_template=template if isinstance(template, str) else None,
        created=int(time.time()),
        max_slots=config.max_slots,
        dtype=loaded.dtype,
        device=str(_device()),
        vision=loaded.vision is not None,
    )


def _device() -> str:
    import mlx.core as mx

    return str(mx.default_device())
