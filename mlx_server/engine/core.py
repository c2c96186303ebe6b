"""The engine core: admission, prefix reuse and one batched step at a time.

Runs on a single thread. Continuous batching, chunked prefill interleaved with
decoding, and per-sequence cache extraction come from mlx-lm's BatchGenerator; this
class decides who runs, what they reuse, and what they emit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

import mlx.core as mx
from mlx_lm.generate import BatchGenerator, StopSequences
from mlx_lm.models.cache import KVCache, RotatingKVCache, make_prompt_cache

from ..config import EngineConfig
from . import compiled_decode, deferred_step, faults, step_logprobs
from .constrained import GrammarCompiler, OutputControl
from .kv_budget import KVBudget
from .kv_quant import KVCacheFormat
from .loader import LoadedModel
from .prefix_cache import PrefixCache
from .sampling import check_logit_bias, make_processors, make_sampler, reads_logprobs
from .sequence import Emit, Sequence
from .speculative import Speculator
from .types import (
    CapacityError,
    GenerationRequest,
    InvalidRequestError,
    PromptTooLongError,
    QueueFullError,
    SlotInfo,
)

log = logging.getLogger("mlx_server.engine")

# Prompt-end snapshots shorter than this are cheaper to recompute than to store.
MIN_SNAPSHOT_TOKENS = 32
# The snapshot stops this many tokens short of the prompt's end: a generation header
# ("<|im_start|>assistant\n") can tokenize differently once the reply follows it.
SNAPSHOT_MARGIN = 4


def _trim_window(model: Any) -> float:
    """How long a sequence's cache stays trimmable: the smallest sliding window, or
    infinity when every layer is a plain KV cache (0 when some layer never trims)."""
    window = float("inf")
    for c in make_prompt_cache(model):
        if isinstance(c, RotatingKVCache):
            window = min(window, c.max_size)
        elif type(c) is not KVCache:
            return 0.0
    return window


def _compiles(config: EngineConfig, loaded: LoadedModel, speculative: bool) -> bool:
    """Whether decode steps run compiled (compiled_decode.py): not where the forward syncs
    the host (CPU paths), a speculative batch steps its own way, the KV cache is quantized
    (its own cache classes), or a vision model's language half steps (M-RoPE caches, not
    measured); "auto" only on a GPU."""
    mode = config.compile_decode
    if (mode == "off" or loaded.sync_forward or speculative or loaded.vision is not None
            or config.kv_cache_type_k or config.kv_cache_type_v):
        return False
    return mode == "on" or mx.default_device() != mx.cpu


def detach(cache: list[Any]) -> list[Any]:
    """Give a per-sequence cache arrays of its own, evaluated now.

    Caches extracted from a batch are lazy slices (or views) of the whole batch's
    buffers; kept as they are, each would pin those buffers, a leak that grows with
    concurrency. Returns the same cache objects, now holding compact copies.
    """
    arrays = []
    for layer in cache:
        for name in ("keys", "values"):
            a = getattr(layer, name, None)
            if isinstance(a, mx.array):
                a = mx.contiguous(a)
                setattr(layer, name, a)
                arrays.append(a)
            elif isinstance(a, tuple):  # mlx-lm's QuantizedKVCache: (codes, scales, biases)
                a = tuple(mx.contiguous(x) for x in a)
                setattr(layer, name, a)
                arrays.extend(a)
        if isinstance(getattr(layer, "cache", None), list):  # ArraysCache (linear attention)
            layer.cache = [mx.contiguous(a) if isinstance(a, mx.array) else a for a in layer.cache]
            arrays.extend(a for a in layer.cache if isinstance(a, mx.array))
    mx.eval(arrays)
    return cache


class EngineCore:
    """Owns the BatchGenerator. `submit` and `abort` are thread-safe; `step` is not."""

    def __init__(self, loaded: LoadedModel, config: EngineConfig):
        self.loaded = loaded
        self.config = config
        self.tok = loaded.tokenizer
        # -ctk/-ctv: how K and V are stored; the budget is measured in that format.
        self.kv_format = KVCacheFormat.parse(config.kv_cache_type_k, config.kv_cache_type_v)
        self.budget = KVBudget.measure(loaded.model, config.cache_bytes, self.kv_format.make_cache)
        self.prefix = PrefixCache(self.budget.total if config.enable_prefix_cache else 0)
        # MLX keeps freed buffers for reuse; unbounded, that pool looks like a leak.
        mx.set_cache_limit(max(128 << 20, self.budget.total // 4))
        self.grammars = GrammarCompiler(self.tok._tokenizer, loaded.eos_ids, loaded.vocab_size,
                                        loaded.path / "tokenizer.json")
        self.spec = (Speculator(loaded, config.spec, self._sampling_of)
                     if config.spec.type != "none" else None)
        # A synchronous forward gains nothing from mlx-lm's one-step pipeline, only its
        # delay: hand each token out in the step that samples it (deferred_step.py).
        self._defer = loaded.sync_forward and self.spec is None
        self._compile = _compiles(config, loaded, self.spec is not None)
        if self._compile:  # before the engine reports ready
            compiled_decode.warm_up(loaded.model, sorted({1, 2, config.max_slots}))
        self.gen = self._new_generator()
        step_logprobs.install()  # steps where no row reads log-probabilities skip them
        self._window = _trim_window(loaded.model)
        self._lock = threading.Lock()
        self._inbox: deque[Sequence] = deque()
        self._aborts: set[str] = set()
        self.waiting: deque[Sequence] = deque()
        self.running: dict[int, Sequence] = {}
        self._slot_of: dict[int, int] = {}  # generator uid -> slot id, for /slots
        self.faults = faults.from_env()  # None unless a reliability test asks for it
        self.counters = {"steps": 0, "decode_steps": 0, "busy_slot_steps": 0,
                         "prompt_tokens": 0, "generated_tokens": 0, "requests": 0}

    def _new_generator(self) -> BatchGenerator:
        # its empty generation batch is made here
        with deferred_step.deferring(self._defer), compiled_decode.compiling(self._compile):
            gen = BatchGenerator(
                self.loaded.model,
                completion_batch_size=self.config.max_slots,
                prefill_batch_size=self.config.max_slots,
                prefill_step_size=self.config.prefill_step_size,
                stream=mx.new_stream(mx.default_device()),
            )
        if self.spec is not None:  # decode steps draft and verify (engine/speculative.py)
            self.spec.install(gen)
        return gen

    def _sampling_of(self, uid: int) -> Any:
        seq = self.running.get(uid)
        return seq.request.sampling if seq is not None else None

    def reset_generator(self) -> None:
        """After a failed step the batch state is suspect: start from an empty one."""
        self.gen = self._new_generator()

    # -- called from any thread -------------------------------------------------
    def submit(self, request: GenerationRequest, emit: Emit, matcher: Any = None) -> None:
        """`matcher`: the request's compiled grammar (`self.grammars.compile`), if it has one."""
        n = len(request.prompt_tokens)
        ctx = self.loaded.ctx_size
        if n == 0:
            raise InvalidRequestError("The prompt is empty.", param="prompt")
        if n >= ctx:
            raise PromptTooLongError(n, ctx)
        max_tokens = max(1, min(request.sampling.max_tokens, ctx - n))
        # What it holds alone, padded as mlx-lm pads: a request that fits always starts.
        need = self._batch_bytes([n + max_tokens])
        if need > self.budget.total:
            raise CapacityError(
                f"The request needs {need} bytes of KV cache ({n} prompt + {max_tokens} new "
                f"tokens, in mlx-lm's padded buffers) but the cache budget is "
                f"{self.budget.total} bytes; lower max_tokens."
            )
        check_logit_bias(request.sampling, self.loaded.vocab_size)
        seq = Sequence(request, emit, self.tok, max_tokens)
        if matcher is not None or request.sampling.thought is not None:
            seq.control = OutputControl(request.sampling, matcher, self.loaded.vocab_size,
                                        request.request_id)
        with self._lock:
            # The queue is what waits beyond the free slots (a burst arriving between two
            # steps is all unadmitted); aborted requests leave at the next step.
            free = max(0, self.config.max_slots - len(self.running))
            waiting = len(self.waiting) + len(self._inbox) - len(self._aborts) - free
            if waiting >= self.config.max_queue:
                raise QueueFullError()
            self._inbox.append(seq)

    def abort(self, request_id: str) -> None:
        with self._lock:
            # Not yet seen by the engine thread: end it now, so a client that left (often
            # before its first token) stops holding a place in the bounded queue.
            for seq in self._inbox:
                if seq.request_id == request_id:
                    self._inbox.remove(seq)
                    seq.emit_output("", finish="abort")
                    return
            self._aborts.add(request_id)

    def queued(self) -> int:
        """Requests submitted and not yet admitted (any thread)."""
        return len(self._inbox) + len(self.waiting)

    def has_work(self) -> bool:
        return bool(self.running or self.waiting or self._inbox)

    # -- engine thread only -----------------------------------------------------
    def step(self) -> None:
        self._drain_inbox()
        self._expire()
        self._admit()
        if not self.running:
            return
        self._set_prefill_chunk()
        # The speculative batch computes its own log-probabilities and needs the first ones.
        skip = self.spec is None and not any(s.reads_logprobs for s in self.running.values())
        with (mx.stream(self.gen.stream), step_logprobs.skipping(skip),
              deferred_step.deferring(self._defer), compiled_decode.compiling(self._compile)):
            prompt_rs, gen_rs = self.gen._next()
        self.counters["steps"] += 1
        if gen_rs:
            self.counters["decode_steps"] += 1
            self.counters["busy_slot_steps"] += len(gen_rs)
            self.counters["generated_tokens"] += len(gen_rs)
        for r in prompt_rs:
            if r.end_of_segment:
                self._snapshot(r.uid, r.end_of_prompt)
        for r in gen_rs:
            self._on_generated(r)

    def _set_prefill_chunk(self) -> None:
        """A per-step prompt-token budget shared by everyone prefilling.

        While others decode, one step reads at most --prefill-step-size prompt tokens in
        total, so their inter-token latency stays bounded; with nobody decoding, prompts
        are read in chunks four times larger for throughput.
        """
        gen = self.gen
        decoding = len(gen._generation_batch)
        prompting = len(gen._prompt_batch) + len(gen._unprocessed_sequences)
        budget = self.config.prefill_step_size * (1 if decoding else 4)
        gen.prefill_step_size = max(32, budget // max(1, prompting))

    def _drain_inbox(self) -> None:
        with self._lock:
            self.waiting.extend(self._inbox)
            self._inbox.clear()
            aborts, self._aborts = self._aborts, set()
        for rid in aborts:
            self._finish_by_id(rid, "abort")

    def _finish_by_id(self, request_id: str, reason: str, error: str | None = None) -> None:
        for seq in list(self.waiting):
            if seq.request_id == request_id:
                self.waiting.remove(seq)
                seq.emit_output("", finish=reason, error=error)
        for uid, seq in list(self.running.items()):
            if seq.request_id == request_id:
                self._release(uid, keep_cache=reason != "error")
                seq.emit_output("", finish=reason, error=error)

    def _expire(self) -> None:
        now = time.perf_counter()
        for seq in [s for s in (*self.waiting, *self.running.values()) if s.deadline_passed(now)]:
            self._finish_by_id(seq.request_id, "timeout", "The request exceeded its timeout.")

    def _reserved(self, *extra: Sequence) -> int:
        """The running batch's KV bytes at its worst (every row at its final length, padded
        as mlx-lm pads), with `extra` rows added."""
        rows = [*self.running.values(), *extra]
        return self._batch_bytes([len(s.prompt) + s.max_tokens for s in rows])

    def _batch_bytes(self, lengths: list[int]) -> int:
        # With the largest prompt chunk one step reads (_set_prefill_chunk).
        return self.budget.batch_bytes(lengths, chunk=4 * self.config.prefill_step_size)

    def _admit(self) -> None:
        while self.waiting and len(self.running) < self.config.max_slots:
            seq = self.waiting[0]
            need = self._reserved(seq)
            # Memory pressure: the head of the queue waits (FIFO, nobody overtakes it) until
            # running rows finish; alone it always starts (submit checked it fits alone).
            # The prefix cache is kept while it waits: evicting it would not make room.
            if need > self.budget.total and self.running:
                return
            self.prefix.shrink_to(self.budget.total - need)
            self.waiting.popleft()
            try:
                self._start(seq)
            except Exception as e:  # one bad request must not stop the loop
                log.exception("could not start %s", seq.request_id)
                seq.emit_output("", finish="error", error=f"{type(e).__name__}: {e}")

    def _start(self, seq: Sequence) -> None:
        prompt = seq.prompt
        cache, reused = None, 0
        if self.config.enable_prefix_cache:
            cache, reused = self.prefix.lookup(prompt, max_reuse=len(prompt) - 1)
        if cache is None:  # mlx-lm would build one in the model's dtype; ours has the -ctk/-ctv format
            cache = self.kv_format.make_cache(self.loaded.model)
        cached = reused
        # Vision: read the prompt through its last image from embeddings (Qwen-VL: and give
        # every sequence, image or not, the caches that carry its M-RoPE position delta).
        if self.loaded.vision is not None:
            cache, reused = self.loaded.vision.prefill(
                self.loaded.model, prompt, seq.request.images, cache, reused,
                self.config.prefill_step_size)
        sp = seq.request.sampling
        # A grammar allows EOS only once it is complete, and then only EOS: it must stop.
        keep_eos = not sp.ignore_eos or sp.grammar is not None
        stops = [[t] for t in self.loaded.eos_ids] if keep_eos else []
        stops += [[t] for t in sp.stop_token_ids]
        sampler = make_sampler(sp)
        seq.reads_logprobs = reads_logprobs(sp, sampler)
        segments = self._plan_snapshot(seq, reused)
        (uid,) = self.gen.insert_segments(
            [segments],
            max_tokens=[seq.max_tokens],
            caches=[cache] if cache is not None else None,
            all_tokens=[prompt[:reused]],
            samplers=[sampler],
            logits_processors=[make_processors(sp, self.loaded.vocab_size)
                               + ([seq.control] if seq.control is not None else [])],
            stop_sequences=[StopSequences(stops or None)],
        )
        seq.uid, seq.cached_tokens, seq.t_admit = uid, cached, time.perf_counter()
        self.running[uid] = seq
        self._assign_slot(uid)
        self.counters["requests"] += 1
        self.counters["prompt_tokens"] += len(prompt) - reused

    def _plan_snapshot(self, seq: Sequence, reused: int) -> list[list[int]]:
        """The prompt's segments, and whether (and how) to keep its cache for later requests.

        A finished sequence's cache is stored anyway; a prompt-end copy is needed only
        where that one could not be trimmed back to a later turn's shared prefix: past a
        sliding window. While the prompt still fits the window, the cache is copied once
        it is read (no extra step); past it, the prompt is split just before its
        generation header, which costs one more prefill step.
        """
        prompt, n = seq.prompt, len(seq.prompt)
        cut = n - SNAPSHOT_MARGIN
        if not self.config.enable_prefix_cache or cut < MIN_SNAPSHOT_TOKENS or cut <= reused:
            return [prompt[reused:]]
        if n + seq.max_tokens < self._window:
            return [prompt[reused:]]  # the finished cache stays trimmable
        if n < self._window:
            seq.snapshot_at, seq.snapshot_whole = n, True
            return [prompt[reused:]]
        seq.snapshot_at = cut
        return [prompt[reused:cut], prompt[cut:]]

    def _store(self, tokens: list[int], cache: list[Any]) -> None:
        """Keep a sequence's cache for later requests, as arrays of its own, in what the
        running batch's worst case leaves of the budget."""
        self.prefix.insert(list(tokens), detach(cache))
        self.prefix.shrink_to(self.budget.total - self._reserved())

    def _snapshot(self, uid: int, end_of_prompt: bool) -> None:
        """Keep the cache of the prompt (up to its generation header) for later requests.

        A whole prompt is in the cache once it is read, or (deferred_step.py: its last
        token is fed with the step that samples the first) once the first token is out;
        whichever of the two calls finds the cache holding exactly it takes the copy.
        """
        seq = self.running.get(uid)
        if seq is None or seq.snapshot_at is None or end_of_prompt != seq.snapshot_whole:
            return
        got = self.gen.extract_cache([uid]).get(uid)
        if got is not None and len(got[1]) == seq.snapshot_at:
            self._store(got[1], got[0])
            seq.snapshot_at = None

    def _on_generated(self, r: Any) -> None:
        seq = self.running.get(r.uid)
        if seq is None:
            return
        if seq.snapshot_whole and seq.snapshot_at is not None and seq.completion_tokens == 0:
            self._snapshot(r.uid, end_of_prompt=True)
        try:
            if self.faults is not None:
                self.faults.check(seq)
            seq.on_token(r.token, r.logprobs, r.finish_reason)
        except Exception as e:  # this sequence's text handling broke: end it alone
            log.exception("sequence %s failed", seq.request_id)
            if r.finish_reason is None:
                self._release(r.uid, keep_cache=False)
            self.running.pop(r.uid, None)
            seq.emit_output("", finish="error", error=f"{type(e).__name__}: {e}")
            return
        if r.finish_reason is not None:
            self.running.pop(r.uid, None)
            if self.config.enable_prefix_cache and r.prompt_cache is not None:
                self._store(r.all_tokens, r.prompt_cache)
        elif seq.finished:  # a stop string ended it before the generator knew
            self._release(r.uid, keep_cache=True)

    def _release(self, uid: int, keep_cache: bool) -> None:
        self.running.pop(uid, None)
        got = self.gen.remove([uid], return_prompt_caches=keep_cache)
        if keep_cache and self.config.enable_prefix_cache and uid in got:
            cache, tokens = got[uid]
            self._store(tokens, cache)

    def fail_all(self, message: str) -> None:
        """The loop hit an error it cannot attribute: end every sequence with it.

        The caller then replaces the generator (`reset_generator`): its batch state is suspect.
        """
        for seq in [*self.waiting, *self.running.values()]:
            seq.emit_output("", finish="error", error=message)
        self.running.clear()
        self.waiting.clear()

    def _assign_slot(self, uid: int) -> None:
        """The lowest slot id no running sequence holds (entries of finished ones are dropped)."""
        self._slot_of = {u: i for u, i in self._slot_of.items() if u in self.running}
        taken = set(self._slot_of.values())
        self._slot_of[uid] = next(i for i in range(len(self.running) + 1) if i not in taken)

    def slots(self) -> list[SlotInfo]:
        """Running sequences by slot; any thread (copies are taken under the GIL)."""
        running, slot_of = dict(self.running), dict(self._slot_of)
        return sorted((SlotInfo(slot_of.get(uid, -1), s.request_id, len(s.request.prompt_tokens),
                                s.cached_tokens, s.completion_tokens, s.max_tokens)
                       for uid, s in running.items()), key=lambda x: x.id)

    def stats(self) -> dict[str, Any]:
        p = self.prefix.stats
        return {
            "slots_total": self.config.max_slots,
            "slots_busy": len(self.running),
            "queue": len(self.waiting) + len(self._inbox),
            "kv_budget_bytes": self.budget.total,
            "kv_reserved_bytes": self._reserved(),
            "kv_active_bytes": self.gen.prompt_cache_nbytes,
            "kv_bytes_per_token": self.budget.bytes_per_token,
            **dict(zip(("kv_cache_type_k", "kv_cache_type_v"),
                       self.kv_format.names(self.loaded.dtype))),
            "prefix_cache_bytes": self.prefix.nbytes,
            "prefix_cache_entries": len(self.prefix),
            "prefix_cache_lookups": p.lookups,
            "prefix_cache_hits": p.hits,
            "prefix_cache_hit_tokens": p.hit_tokens,
            "prefix_cache_queried_tokens": p.queried_tokens,
            "prefix_cache_untrimmable_skips": p.untrimmable_skips,
            "prefix_cache_evictions": p.evictions,
            **self.counters,
            **(self.spec.stats if self.spec is not None else {}),
        }
