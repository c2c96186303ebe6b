"""Prometheus metrics: llama-server's eleven `llamacpp:` series and vLLM-style latency
histograms, prefix-cache and KV-cache series, in one per-app registry.

The `llamacpp:` series are rendered by hand: llama-server types `n_tokens_max` and
`n_busy_slots_per_decode` as counters without a `_total` suffix, which prometheus-client
cannot express, and dashboards match those exact names and types. Everything else is
prometheus-client's. Per-request values come from `record_*` calls (see observed.py);
engine-wide ones are read from `EngineClient.stats()` at scrape time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from mlx_server.engine.types import GenerationOutput

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# vLLM's buckets (vllm/v1/metrics/loggers.py), so its dashboards and SLO rules line up.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0,
                7.5, 10.0, 20.0, 40.0, 80.0)
REQUEST_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
                   60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)
LABELS = ("model_name", "engine")

StatsSource = Callable[[], dict[str, Any]]


class Metrics:
    """Counters and histograms for one app; thread-safe, as prometheus-client's are."""

    def __init__(self, model_name: Callable[[], str], stats: StatsSource):
        self.registry = CollectorRegistry()
        self._model_name = model_name
        self._stats = stats
        self._lock = threading.Lock()
        # llama-server's totals; the throughput gauges cover the time since the last scrape.
        self.prompt_tokens = self.prompt_seconds = 0.0
        self.predicted_tokens = self.predicted_seconds = 0.0
        self.n_tokens_max = 0
        self._window = [0.0, 0.0, 0.0, 0.0]
        self._build()
        self.registry.register(_EngineCollector(self))

    def _build(self) -> None:
        def hist(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, LABELS, buckets=buckets, registry=self.registry)

        def counter(name: str, doc: str, extra: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, LABELS + extra, registry=self.registry)

        self.ttft = hist("vllm:time_to_first_token_seconds",
                         "Histogram of time to first token in seconds.", TTFT_BUCKETS)
        self.itl = hist("vllm:inter_token_latency_seconds",
                        "Histogram of inter-token latency in seconds.", TPOT_BUCKETS)
        self.tpot = hist("vllm:time_per_output_token_seconds",
                         "Histogram of time per output token in seconds (per request mean).",
                         TPOT_BUCKETS)
        self.e2e = hist("vllm:e2e_request_latency_seconds",
                        "Histogram of e2e request latency in seconds.", REQUEST_BUCKETS)
        self.queue = hist("vllm:request_queue_time_seconds",
                          "Histogram of time spent in WAITING phase for request.", REQUEST_BUCKETS)
        self.prefill = hist("vllm:request_prefill_time_seconds",
                            "Histogram of time spent in PREFILL phase for request.",
                            REQUEST_BUCKETS)
        self.decode = hist("vllm:request_decode_time_seconds",
                           "Histogram of time spent in DECODE phase for request.", REQUEST_BUCKETS)
        self.vllm_prompt_tokens = counter("vllm:prompt_tokens",
                                          "Number of prefill tokens processed.")
        self.vllm_generation_tokens = counter("vllm:generation_tokens",
                                              "Number of generation tokens processed.")
        self.success = counter("vllm:request_success", "Count of successfully processed requests.",
                               ("finished_reason",))

    def labels(self) -> tuple[str, str]:
        return (self._model_name(), "0")

    # -- per request ------------------------------------------------------------------
    def record_first_token(self, seconds: float) -> None:
        self.ttft.labels(*self.labels()).observe(seconds)

    def record_token_gaps(self, seconds_per_token: float, count: int) -> None:
        child = self.itl.labels(*self.labels())
        for _ in range(count):
            child.observe(seconds_per_token)

    def record_finished(self, out: GenerationOutput, e2e_s: float) -> None:
        """A sequence ended (any reason): its token counts and phase times."""
        labels = self.labels()
        processed = max(0, out.prompt_tokens - out.cached_tokens)
        with self._lock:
            self.prompt_tokens += processed
            self.prompt_seconds += out.prompt_s
            self.predicted_tokens += out.completion_tokens
            self.predicted_seconds += out.decode_s
            self.n_tokens_max = max(self.n_tokens_max, out.prompt_tokens + out.completion_tokens)
            w = self._window
            w[0] += processed
            w[1] += out.prompt_s
            w[2] += out.completion_tokens
            w[3] += out.decode_s
        self.vllm_prompt_tokens.labels(*labels).inc(processed)
        self.vllm_generation_tokens.labels(*labels).inc(out.completion_tokens)
        self.success.labels(*labels, out.finish_reason or "abort").inc()
        self.e2e.labels(*labels).observe(e2e_s)
        self.queue.labels(*labels).observe(out.queue_s)
        self.prefill.labels(*labels).observe(out.prompt_s)
        self.decode.labels(*labels).observe(out.decode_s)
        if out.completion_tokens > 1:
            self.tpot.labels(*labels).observe(out.decode_s / (out.completion_tokens - 1))

    # -- exposition -------------------------------------------------------------------
    def render(self) -> bytes:
        return self._render_llamacpp().encode() + generate_latest(self.registry)

    def _render_llamacpp(self) -> str:
        stats = self._safe_stats()
        with self._lock:
            window, self._window = self._window, [0.0, 0.0, 0.0, 0.0]
            totals = (self.prompt_tokens, self.prompt_seconds, self.predicted_tokens,
                      self.predicted_seconds, self.n_tokens_max)
        decodes = stats.get("decode_steps", 0)
        series = (
            ("counter", "prompt_tokens_total", "Number of prompt tokens processed.", totals[0]),
            ("counter", "prompt_seconds_total", "Prompt process time", totals[1]),
            ("counter", "tokens_predicted_total", "Number of generation tokens processed.",
             totals[2]),
            ("counter", "tokens_predicted_seconds_total", "Predict process time", totals[3]),
            ("counter", "n_decode_total", "Total number of llama_decode() calls",
             stats.get("steps", 0)),
            ("counter", "n_tokens_max", "Largest observed n_tokens.", totals[4]),
            ("counter", "n_busy_slots_per_decode",
             "Average number of busy slots per llama_decode() call",
             stats.get("busy_slot_steps", 0) / max(decodes, 1)),
            ("gauge", "prompt_tokens_seconds", "Average prompt throughput in tokens/s.",
             window[0] / window[1] if window[0] and window[1] else 0.0),
            ("gauge", "predicted_tokens_seconds", "Average generation throughput in tokens/s.",
             window[2] / window[3] if window[2] and window[3] else 0.0),
            ("gauge", "requests_processing", "Number of requests processing.",
             stats.get("slots_busy", 0)),
            ("gauge", "requests_deferred", "Number of requests deferred.", stats.get("queue", 0)),
        )
        lines = []
        for kind, name, doc, value in series:
            lines += [f"# HELP llamacpp:{name} {doc}", f"# TYPE llamacpp:{name} {kind}",
                      f"llamacpp:{name} {_number(value)}"]
        return "\n".join(lines) + "\n"

    def _safe_stats(self) -> dict[str, Any]:
        try:
            return self._stats() or {}
        except Exception:  # an engine still loading (or gone) reports nothing
            return {}


class _EngineCollector(Collector):
    """Engine-wide series read at scrape time: queue, running, KV and prefix cache."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        stats = self.metrics._safe_stats()
        labels = list(self.metrics.labels())

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=LABELS)
            g.add_metric(labels, value)
            return g

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            c = CounterMetricFamily(name, doc, labels=LABELS)
            c.add_metric(labels, value)
            return c

        budget = stats.get("kv_budget_bytes", 0)
        used = stats.get("kv_active_bytes", stats.get("kv_reserved_bytes", 0))
        yield gauge("vllm:num_requests_running", "Number of requests in model execution batches.",
                    stats.get("slots_busy", 0))
        yield gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.",
                    stats.get("queue", 0))
        yield gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.",
                    min(1.0, used / budget) if budget else 0.0)
        if "kv_bytes_per_token" in stats:
            yield _kv_format_gauge(stats, labels)
        # Bytes, for leak checks and soaks: reserved by admitted requests, held by the
        # running batch, kept in the prefix cache (all return to their floor when idle).
        for key, doc in (("kv_reserved_bytes", "KV-cache bytes reserved by running requests."),
                         ("kv_active_bytes", "KV-cache bytes held by the running batch."),
                         ("prefix_cache_bytes", "KV-cache bytes kept in the prefix cache.")):
            if key in stats:
                yield gauge(f"mlxserver:{key}", doc, stats[key])
        yield counter("mlxserver:prefix_cache_evictions",
                      "Prefix-cache entries evicted to stay within the KV budget.",
                      stats.get("prefix_cache_evictions", 0))
        yield counter("vllm:prefix_cache_queries",
                      "Prefix cache queries, in terms of number of queried tokens.",
                      stats.get("prefix_cache_queried_tokens", 0))
        yield counter("vllm:prefix_cache_hits",
                      "Prefix cache hits, in terms of number of cached tokens.",
                      stats.get("prefix_cache_hit_tokens", 0))
        if "spec_steps" in stats:  # speculative decoding is on (vLLM's names where it has one)
            for key, name, doc in (
                    ("spec_steps", "vllm:spec_decode_num_drafts", "Draft-and-verify steps."),
                    ("spec_draft_tokens", "vllm:spec_decode_num_draft_tokens",
                     "Draft tokens proposed."),
                    ("spec_accepted_tokens", "vllm:spec_decode_num_accepted_tokens",
                     "Draft tokens accepted."),
                    ("spec_fallback_steps", "mlxserver:spec_decode_num_fallback_steps",
                     "Steps decoded without drafts: a cache that cannot be cut back.")):
                yield counter(name, doc, stats.get(key, 0))


def _kv_format_gauge(stats: dict[str, Any], labels: list[str]) -> GaugeMetricFamily:
    """KV-cache bytes one token costs (every layer, K and V), labelled with -ctk/-ctv."""
    g = GaugeMetricFamily("mlxserver:kv_cache_bytes_per_token",
                          "KV-cache bytes per token in the cache's storage format.",
                          labels=(*LABELS, "cache_type_k", "cache_type_v"))
    g.add_metric([*labels, str(stats.get("kv_cache_type_k", "")),
                  str(stats.get("kv_cache_type_v", ""))], stats["kv_bytes_per_token"])
    return g


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
