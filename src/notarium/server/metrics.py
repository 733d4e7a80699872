"""Prometheus metrics: requests, latencies, commit lag, ledger size."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from notarium.ledger.remote import EngineMetrics

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "notarium_http_requests", "HTTP requests answered", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "notarium_http_request_seconds",
            "Time to answer an HTTP request",
            ["route"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.commit_lag = Gauge(
            "notarium_commit_lag_transactions", "Transactions sequenced but not yet committed", registry=self.registry
        )
        self.committed_seqno = Gauge(
            "notarium_committed_seqno", "Seqno of the last committed transaction", registry=self.registry
        )
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.ledger_bytes = Gauge("notarium_ledger_bytes", "Size of the ledger's chunk files", registry=self.registry)

    def update(self, engine: EngineMetrics) -> None:
        """The engine's figures, fetched when the metrics are scraped."""
        self.committed_seqno.set(engine.committed)
        self.commit_lag.set(engine.last_sequenced - engine.committed)
        self.ledger_bytes.set(engine.ledger_bytes)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = (self.requests.labels(method, route, str(status)), self.latency.labels(route))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
