"""``GET /metrics``: Prometheus text (one registry per app, so tests and several apps in one
process never share counters)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

PREFIX = "genai_qwen3vl"


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(f"{PREFIX}_requests", "HTTP requests answered, by path and status", ["path", "status"], registry=r)
        self.queue = Gauge(f"{PREFIX}_queue_length", "requests waiting for a generation slot", registry=r)
        self.running = Gauge(f"{PREFIX}_running", "generations running now", registry=r)
        self.prompt_tokens = Counter(f"{PREFIX}_prompt_tokens", "prompt tokens processed (image tokens included)", registry=r)
        self.generation_tokens = Counter(f"{PREFIX}_generation_tokens", "tokens generated", registry=r)
        self.finished = Counter(f"{PREFIX}_generations", "generations ended, by finish reason", ["finish_reason"], registry=r)
        self.ttft = Histogram(
            f"{PREFIX}_time_to_first_token_seconds",
            "from the start of a generation (prefill, images included) to its first token",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=r,
        )
        self.tokens_per_second = Histogram(
            f"{PREFIX}_decode_tokens_per_second",
            "decode speed of each generation after its first token",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000),
            registry=r,
        )
        self.worker_restarts = Counter(
            f"{PREFIX}_worker_restarts", "times the generation worker process died and was restarted", registry=r
        )
        self.queue_wait = Histogram(
            f"{PREFIX}_queue_wait_seconds",
            "time a request waited for a slot",
            buckets=(0.001, 0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )

    def record_generation(self, prompt_tokens: int, tokens: int, finish: str, first_token_s: float | None, decode_s: float) -> None:
        self.prompt_tokens.inc(prompt_tokens)
        self.generation_tokens.inc(tokens)
        self.finished.labels(finish).inc()
        if first_token_s is not None:
            self.ttft.observe(first_token_s)
        if tokens > 1 and decode_s > 0:
            self.tokens_per_second.observe((tokens - 1) / decode_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)
