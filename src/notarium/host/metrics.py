"""The host's Prometheus metrics: every ledger's figures in one document, labelled ``ledger``.

``GET /metrics`` on the host (the host credential required: the document names every ledger)
answers, for each ledger the host serves or recovers:

- what ``notarium serve`` exports for one ledger (:mod:`notarium.server.metrics`), each sample with a
  ``ledger`` label: ``notarium_http_requests_total{ledger,method,route,status}``,
  ``notarium_http_request_seconds{ledger,route}``, ``notarium_committed_seqno{ledger}``,
  ``notarium_commit_lag_transactions{ledger}``, ``notarium_ledger_bytes{ledger}``;
- the host's own: ``notarium_ledger_appends_total{ledger}`` (entries accepted),
  ``notarium_ledger_commit_seconds{ledger}`` (a histogram: from an append's arrival to the engine's
  notice that it is committed), ``notarium_ledger_throttled_requests_total{ledger}`` (429s of the
  ledger's request rate), ``notarium_ledger_up{ledger}`` (1 while its engine serves, 0 while it
  restarts, waits for recovery or is recovering).

A ledger's figures go when it is deleted. Labels are names and route templates, never raw paths.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from notarium.ledger.remote import RemoteLedger
from notarium.server.metrics import Metrics

SCRAPE_TIMEOUT_S = 5.0  # a ledger's engine that does not answer in time is left out of the scrape
MAX_WAITING = 100_000  # appends whose commit is awaited, per ledger (the oldest are dropped past it)
COMMIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


Served = tuple[RemoteLedger, Metrics]  # a served ledger's engine link and its own metrics


@dataclass(slots=True)
class _CommitClock:
    """Appends of one ledger awaiting their commit: (seqno, arrival) in a heap."""

    remote: RemoteLedger
    waiting: list[tuple[int, float]] = field(default_factory=list)


class HostMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.appends = Counter(
            "notarium_ledger_appends", "Entries accepted by a ledger", ["ledger"], registry=self.registry
        )
        self.commit_seconds = Histogram(
            "notarium_ledger_commit_seconds",
            "Time from an append's arrival to its commit",
            ["ledger"],
            buckets=COMMIT_BUCKETS,
            registry=self.registry,
        )
        self.throttled = Counter(
            "notarium_ledger_throttled_requests",
            "Requests refused by a ledger's request rate (429)",
            ["ledger"],
            registry=self.registry,
        )
        self.up = Gauge(
            "notarium_ledger_up", "1 while the ledger's engine serves, else 0", ["ledger"], registry=self.registry
        )
        self._clocks: dict[str, _CommitClock] = {}
        self._listeners: dict[str, object] = {}

    # --- events -------------------------------------------------------------------------------

    def throttle(self, ledger: str) -> None:
        self.throttled.labels(ledger).inc()

    def appended(self, ledger: str, remote: RemoteLedger, seqno: int, arrived: float) -> None:
        """An entry accepted at ``seqno``: counted, and timed until the engine reports it committed."""
        self.appends.labels(ledger).inc()
        clock = self._clocks.get(ledger)
        if clock is None or clock.remote is not remote:  # first append, or the engine was restarted
            self._detach(ledger)
            clock = _CommitClock(remote)
            self._clocks[ledger] = clock
            histogram = self.commit_seconds.labels(ledger)

            def committed(upto: int, clock: _CommitClock = clock) -> None:
                now = time.perf_counter()
                while clock.waiting and clock.waiting[0][0] <= upto:
                    histogram.observe(now - heapq.heappop(clock.waiting)[1])

            remote.add_commit_listener(committed)
            self._listeners[ledger] = committed
        if seqno <= remote.committed.seqno:  # committed already (notices arrive in order)
            self.commit_seconds.labels(ledger).observe(time.perf_counter() - arrived)
            return
        heapq.heappush(clock.waiting, (seqno, arrived))
        if len(clock.waiting) > MAX_WAITING:  # commits stopped coming: drop the oldest
            heapq.heappop(clock.waiting)

    def _detach(self, ledger: str) -> None:
        clock, listener = self._clocks.pop(ledger, None), self._listeners.pop(ledger, None)
        if clock is not None and listener is not None:
            with contextlib.suppress(ValueError):
                clock.remote.remove_commit_listener(listener)  # type: ignore[arg-type]

    def forget(self, ledger: str) -> None:
        """A deleted ledger: its figures go."""
        self._detach(ledger)
        for metric in (self.appends, self.commit_seconds, self.throttled, self.up):
            with contextlib.suppress(KeyError):
                metric.remove(ledger)

    # --- the scrape ---------------------------------------------------------------------------

    async def render(self, served: dict[str, Served], waiting: Iterable[str]) -> bytes:
        """The document for the ledgers ``served`` (by name) and those ``waiting`` (for recovery,
        or for their engine to start again): engine figures are fetched now, concurrently."""
        names = set(served) | set(waiting)
        for gone in {labels[0] for labels in _label_sets(self.appends, self.throttled, self.up)} - names:
            self.forget(gone)

        async def fetch(ledger: Served) -> bool:
            remote, metrics = ledger
            try:
                figures = await asyncio.wait_for(remote.metrics(), SCRAPE_TIMEOUT_S)
            except Exception:  # the engine is gone or stuck: its figures are left out, up is 0
                return False
            metrics.update(figures)
            return True

        ordered = sorted(served.items())
        results = await asyncio.gather(*(fetch(ledger) for _, ledger in ordered))
        for (name, _), ok in zip(ordered, results, strict=True):
            self.up.labels(name).set(1 if ok else 0)
        for name in set(waiting) - set(served):
            self.up.labels(name).set(0)
        merged = CollectorRegistry(auto_describe=False)
        merged.register(_Labelled({name: metrics for name, (_, metrics) in ordered}))
        return generate_latest(merged) + generate_latest(self.registry)


def _label_sets(*metrics: Counter | Gauge) -> set[tuple[str, ...]]:
    found: set[tuple[str, ...]] = set()
    for metric in metrics:
        for family in metric.collect():
            found.update((s.labels["ledger"],) for s in family.samples if "ledger" in s.labels)
    return found


class _Labelled(Collector):
    """Each ledger's own registry (:class:`notarium.server.metrics.Metrics`), its samples labelled
    with the ledger's name, merged family by family."""

    def __init__(self, ledgers: dict[str, Metrics]) -> None:
        self._ledgers = ledgers

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for name, metrics in self._ledgers.items():
            for family in metrics.registry.collect():
                merged = families.get(family.name)
                if merged is None:
                    merged = Metric(family.name, family.documentation, family.type, family.unit)
                    families[family.name] = merged
                for sample in family.samples:
                    labels = {"ledger": name, **sample.labels}
                    merged.add_sample(sample.name, labels, sample.value, sample.timestamp, sample.exemplar)
        yield from families.values()
