"""Grammar-constrained decoding with llguidance, and the per-request logits processor
that also enforces the reasoning budget.

Why llguidance rather than xgrammar (numbers in bench/README.md, from
bench/grammar_overhead.py on Gemma 3's 262,144-token vocabulary): per-request
compilation is ~20-40 ms against ~1-2 s (xgrammar precomputes a mask cache per schema,
which a server with per-request schemas pays on every new one); per-token masks are
comparable (median well under 0.1 ms for both, worst cases a few ms for llguidance vs
tens of ms for xgrammar inside bounded strings); and llguidance is one small wheel with
no dependencies, where xgrammar pulls in torch, triton and transformers.

The processor sees the token the sampler chose as the last element of `tokens` at the
next call, so the matcher advances lazily. It starts the forward pass (`async_eval`)
before computing the mask, so the mask overlaps the model on another core.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from .thinking import ThoughtTracker
from .types import Grammar, InvalidRequestError, SamplingParams

log = logging.getLogger("mlx_server.engine")

# Compact JSON: a model (a small one especially) must not pad its output with whitespace.
JSON_OPTIONS = {"whitespace_flexible": False}


class GrammarCompiler:
    """Compiles `Grammar`s for one tokenizer.

    Building llguidance's token table takes seconds on a 262k vocabulary and holds the
    GIL throughout, so it is done once while the model loads, never mid-serving.
    """

    def __init__(self, hf_tokenizer: Any, eos_ids: tuple[int, ...], vocab_size: int,
                 tokenizer_json: Path | None = None):
        self.vocab_size = vocab_size
        self._table: Any = None
        self._error = ""
        t0 = time.perf_counter()
        try:
            self._table = _token_table(hf_tokenizer, eos_ids, vocab_size, tokenizer_json)
            log.info("grammar token table built in %.1fs", time.perf_counter() - t0)
        except Exception as e:  # reported on the first request that needs a grammar
            log.warning("structured output unavailable: %s", e)
            self._error = f"{type(e).__name__}: {e}"

    def compile(self, grammar: Grammar) -> Any:
        """A fresh matcher for `grammar`; InvalidRequestError names what is wrong with it."""
        import llguidance

        table = self._table
        if table is None:
            raise InvalidRequestError(
                f"Structured output is unavailable for this model's tokenizer: {self._error}",
                param=_param(grammar))
        text = _grammar_text(grammar)
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(text, table)
        if is_error:
            raise InvalidRequestError(f"Unsupported or invalid {_what(grammar)}: "
                                      f"{'; '.join(messages)}", param=_param(grammar))
        matcher = llguidance.LLMatcher(table, text, log_level=0)
        if matcher.is_error():
            raise InvalidRequestError(f"Unsupported or invalid {_what(grammar)}: "
                                      f"{matcher.get_error()}", param=_param(grammar))
        return matcher


def _token_table(hf_tokenizer: Any, eos_ids: tuple[int, ...], vocab_size: int,
                 tokenizer_json: Path | None) -> Any:
    import llguidance
    import llguidance.hf

    eos = list(eos_ids) or None
    if tokenizer_json is not None and tokenizer_json.is_file():
        # Reading the file is ~10x faster than serializing the loaded tokenizer.
        return llguidance.LLTokenizer(tokenizer_json.read_text(encoding="utf-8"),
                                      n_vocab=vocab_size, eos_token=eos)
    return llguidance.hf.from_tokenizer(hf_tokenizer, n_vocab=vocab_size, eos_token=eos)


def _grammar_text(grammar: Grammar) -> str:
    import llguidance

    if grammar.kind == "json_schema":
        if not isinstance(grammar.source, dict):
            raise InvalidRequestError("The JSON schema must be an object.", param=_param(grammar))
        try:
            return llguidance.LLMatcher.grammar_from_json_schema(
                json.dumps(grammar.source), defaults=JSON_OPTIONS)
        except ValueError as e:
            raise InvalidRequestError(f"Invalid JSON schema: {e}", param=_param(grammar)) from e
    return llguidance.LLMatcher.grammar_from_lark(str(grammar.source))


def _what(grammar: Grammar) -> str:
    return "JSON schema" if grammar.kind == "json_schema" else "grammar"


def _param(grammar: Grammar) -> str:
    return "response_format" if grammar.kind == "json_schema" else "tool_choice"


class OutputControl:
    """One request's logits processor: grammar mask and thought budget.

    Called as `processor(tokens_so_far, logits)` once per decoding step; the first call
    comes before any token was generated.
    """

    def __init__(self, sampling: SamplingParams, matcher: Any | None, vocab_size: int,
                 request_id: str = ""):
        self.matcher = matcher
        self.thought = ThoughtTracker(sampling.thought) if sampling.thought else None
        self.vocab_size = vocab_size
        self.request_id = request_id
        self._started = False
        self._bitmask: np.ndarray | None = None
        self.mask_calls = 0  # masks computed and the time they took (for bench/)
        self.mask_s = 0.0

    def __call__(self, tokens: mx.array, logits: mx.array) -> mx.array:
        if self._started:
            self._advance(int(tokens[-1].item()))
        self._started = True
        if self.thought is not None:
            forced = self.thought.forced_token()
            if forced is not None:
                return _only(logits, forced)
            if self.thought.in_thought:
                return logits
        if self.matcher is None:
            return logits
        mx.async_eval(logits)  # the forward pass runs while the mask is computed
        allowed = self._mask()
        if self.thought is not None and (opening := self.thought.opening_token()) is not None:
            allowed[opening] = True  # the model may still open a thought
        return _apply(logits, allowed)

    def _advance(self, token: int) -> None:
        answer = self.thought.push(token) if self.thought is not None else [token]
        if self.matcher is None:
            return
        for t in answer:
            if not self.matcher.consume_token(t):
                # A sampler bug or a stop the grammar did not foresee: stop constraining
                # rather than fail the request; the text is what the model wrote.
                log.warning("request %s left its grammar at token %d: %s", self.request_id,
                            t, self.matcher.get_error())
                self.matcher = None
                return

    def _mask(self) -> np.ndarray:
        import llguidance.numpy as lln

        if self._bitmask is None:
            self._bitmask = lln.allocate_token_bitmask(1, self.vocab_size)
        t0 = time.perf_counter()
        lln.fill_next_token_bitmask(self.matcher, self._bitmask, 0)
        self.mask_calls += 1
        self.mask_s += time.perf_counter() - t0
        bits = np.unpackbits(self._bitmask[0].view(np.uint8), bitorder="little")
        return bits[: self.vocab_size].astype(bool)


def _apply(logits: mx.array, allowed: np.ndarray) -> mx.array:
    n = logits.shape[-1]
    if allowed.shape[0] < n:  # the model's head can be wider than the tokenizer
        allowed = np.concatenate([allowed, np.zeros(n - allowed.shape[0], dtype=bool)])
    return mx.where(mx.array(allowed[:n]), logits, mx.array(-mx.inf, dtype=logits.dtype))


def _only(logits: mx.array, token: int) -> mx.array:
    keep = mx.arange(logits.shape[-1]) == token
    return mx.where(keep, logits, mx.array(-mx.inf, dtype=logits.dtype))
