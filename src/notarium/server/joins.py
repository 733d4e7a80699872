"""Limits on ``POST /node/join``, which asks no credential (docs/design/ha.md §Limits on joining).

Anyone who reaches the port can make a key and a virtual quote and ask to join, and each new node
is a permanent ledger write. So, where the records are written (the primary):

- **rate**: at most ``join_rate_per_minute`` new nodes are recorded a minute (a burst of as many);
  beyond it 429 ``TooManyRequests``. The budget lives in this front's memory: a restart or a
  change of primary starts it full again (one more burst at most).
- **cap**: at most ``max_pending_nodes`` nodes are Pending at a time, counted in the committed
  ``public:ccf.gov.nodes.info`` (so across restarts and nodes); beyond it 503
  ``TooManyPendingNodes``. A full cap refuses newcomers: it never evicts a Pending node.
- **expiry**: a Pending node is removed (its record deleted, as ``remove_node`` deletes a Pending
  node) ``pending_node_ttl_s`` seconds after it first asked (``pending_since`` in its record, the
  primary's clock), unless an Open proposal would trust it (``transition_node_to_trusted``): a node
  the members are deciding on never expires meanwhile. Asking again does not renew a record; a node
  whose record expired is recorded anew if it asks again (within the rate and the cap). The primary
  sweeps every ``min(60, ttl / 4)`` seconds; a new join also removes expired records, in its own
  transaction. A record without ``pending_since`` (written before it existed) counts from when
  this primary first saw it: a restart postpones its expiry, never hastens it.

Nodes already recorded are not limited: a Pending node asking again is answered without a write;
a Trusted one gets its admission. Every change here holds ``access_changes`` (joins and governance
are serialised), so an expiry never races a proposal naming the node or the node's admission.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable

from notarium.cluster.limits import JoinBudget, expired_pending, pending_records, pending_since
from notarium.ledger.remote import RemoteLedger
from notarium.server.config import ServerConfig
from notarium.server.errors import ApiError
from notarium.types import TxId, TxStatus
from notarium.verify import tables

log = logging.getLogger("notarium.server.nodes")

MAX_SWEEP_INTERVAL_S = 60.0
MIN_SWEEP_INTERVAL_S = 0.25


class JoinLimits:
    """The rate, the cap and the expiry of joining nodes (see the module docstring)."""

    def __init__(
        self,
        ledger: RemoteLedger,
        config: ServerConfig,
        lock: asyncio.Lock,
        wait: Callable[[TxId], Awaitable[TxStatus]],
        nodes_to_trust: Callable[[], Awaitable[frozenset[str]]],
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ledger = ledger
        self._config = config
        self._lock = lock
        self._wait = wait
        self._nodes_to_trust = nodes_to_trust
        self._clock = clock
        self._monotonic = monotonic
        self._budget = JoinBudget(config.join_rate_per_minute, monotonic())
        self._first_seen: dict[bytes, float] = {}  # records without pending_since: when first seen here
        self._sweeper: asyncio.Task[None] | None = None
        self.interval_s = min(MAX_SWEEP_INTERVAL_S, max(MIN_SWEEP_INTERVAL_S, config.pending_node_ttl_s / 4))

    async def _expired(self, nodes: dict[bytes, bytes], now: float) -> tuple[int, list[bytes]]:
        """(how many nodes are Pending, which of them have expired at ``now``)."""
        pending = pending_records(nodes)
        self._first_seen = {k: self._first_seen.get(k, now) for k, v in pending.items() if pending_since(v) is None}
        ttl, seen = self._config.pending_node_ttl_s, self._first_seen
        expired = expired_pending(pending, now=now, ttl_s=ttl, protected=(), first_seen=seen)
        if expired:  # only then are the Open proposals read: the nodes they would trust do not expire
            protected = await self._nodes_to_trust()
            expired = expired_pending(pending, now=now, ttl_s=ttl, protected=protected, first_seen=seen)
        return len(pending), expired

    async def admit_new(self) -> tuple[int, dict[bytes, bytes | None]]:
        """Room for one new node, or an :class:`ApiError`: 503 past the cap, 429 past the rate.
        Returns ``pending_since`` for its record and the deletions of expired records to write
        with it. The caller holds ``access_changes``."""
        now = self._clock()
        pending, expired = await self._expired(await self._ledger.state(tables.NODES_INFO), now)
        cap = self._config.max_pending_nodes
        if pending - len(expired) >= cap:
            raise ApiError(
                503,
                "TooManyPendingNodes",
                f"{pending - len(expired)} nodes are already Pending, the most this service accepts "
                f"(--max-pending-nodes {cap}). The members admit them (transition_node_to_trusted) or remove "
                f"them (remove_node); each expires {self._config.pending_node_ttl_s} s after it asked unless "
                "a proposal would trust it. Retry later.",
            )
        wait = self._budget.take(self._monotonic())
        if wait > 0:
            raise ApiError(
                429,
                "TooManyRequests",
                f"Too many new nodes asked to join: this service records at most "
                f"{self._config.join_rate_per_minute} a minute (--join-rate). Retry in {math.ceil(wait)} s.",
            )
        return int(now), dict.fromkeys(expired)

    async def sweep(self) -> int:
        """Remove the expired Pending nodes (on the primary only); how many were removed."""
        if not self._ledger.primary:
            return 0
        now = self._clock()
        _, expired = await self._expired(await self._ledger.state(tables.NODES_INFO), now)
        if not expired:
            return 0
        async with self._lock:  # against committed state, serialised with joins and governance
            _, expired = await self._expired(await self._ledger.state(tables.NODES_INFO), self._clock())
            if not expired:
                return 0
            txid = await self._ledger.append({tables.NODES_INFO: dict.fromkeys(expired)})
            if await self._wait(txid) != TxStatus.COMMITTED:
                log.warning("the expiry of %d Pending nodes at %s did not commit; it is retried", len(expired), txid)
                return 0
        for key in expired:
            self._first_seen.pop(key, None)
        log.info(
            "%d Pending node(s) expired (asked more than %d s ago, not trusted): removed at %s",
            len(expired),
            self._config.pending_node_ttl_s,
            txid,
        )
        return len(expired)

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the ledger closing, a storage failure: the next round retries
                log.warning(
                    "the expiry of Pending nodes failed (%s: %s); the next round retries", type(exc).__name__, exc
                )

    def start(self) -> None:
        self._sweeper = asyncio.ensure_future(self._sweep_loop())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
