"""A node of a replicated service: follow the log, hold or seek the lease (docs/design/ha.md).

Runs in the engine process of ``notarium serve DIR --store postgresql://…``, on one thread:

- **follower**: read the log after the local committed prefix (woken by ``NOTIFY``, else every
  ``poll_s``), verify and apply it (:meth:`Ledger.follow`); watch the lease, and when it has
  expired, take it (the view grows by one) and take over.
- **takeover**: catch up to the end of the log, drop its unsigned tail (fenced: no deposed
  primary can add to it any more), promote the ledger to the new view and sign at once.
- **primary**: renew the lease every ``ttl / 6``; if a renewal fails or a write is fenced, the
  node is *deposed*: it stops, and ``serve`` starts it again as a follower.

A verification failure while following (a changed or missing row) stops following: the node
stays up for reads of what it verified, reports itself unhealthy, and never takes the lease.

**PostgreSQL unreachable** (down, restarting, cut off): the thread never gives up and never ends
the process. It marks the node's role ``store_reachable=False`` (the front then answers
``/readyz`` 503, and a primary refuses writes with 503), logs each retry, and retries with a capped
exponential backoff with jitter (``poll_s`` doubling up to :data:`RETRY_MAX_S`). Once a round
succeeds it says so and clears the mark; a follower first checks again that the log still holds
its committed prefix (:func:`check_replica`). A primary whose writes failed meanwhile is deposed
and starts again as a follower, which needs no PostgreSQL to start (docs/design/ha.md).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from notarium.errors import NotariumError, ServiceError, StorageError, VerificationError
from notarium.ledger.config import LogRow
from notarium.ledger.engine import Ledger
from notarium.ledger.remote import Role
from notarium.verify import tables

log = logging.getLogger("notarium.cluster")

READ_BATCH = 20_000
RETRY_MAX_S = 2.0  # the longest wait between two attempts to reach an unreachable PostgreSQL
RETRY_LOG_EVERY_S = 30.0  # past the first attempts, one "retrying" line at most this often
_RETRY_LOGGED_ATTEMPTS = 6  # attempts logged one by one before that
_jitter = random.SystemRandom()


class LeaseView(Protocol):
    @property
    def view(self) -> int: ...
    @property
    def holder(self) -> str | None: ...
    @property
    def address(self) -> str | None: ...
    @property
    def expires_in_s(self) -> float | None: ...


class Log(Protocol):
    """What a node needs of the replicated log (notarium.ledger.storage.postgres.PostgresLog)."""

    def append(self, view: int, holder: str, rows: list[LogRow]) -> None: ...
    def read(self, start: int, end: int | None = None, limit: int = 10_000) -> list[LogRow]: ...
    def last_seqno(self) -> int: ...
    def last_signature(self) -> tuple[int, int] | None: ...
    def truncate_after(self, view: int, holder: str, seqno: int) -> int: ...
    def lease(self) -> LeaseView: ...
    def try_acquire(
        self, holder: str, address: str, seen_view: int, ttl_s: float, *, min_view: int = 0
    ) -> int | None: ...
    def renew(self, view: int, holder: str, ttl_s: float) -> bool: ...
    def release(self, view: int, holder: str) -> None: ...
    def heartbeat(self, node_id: str, address: str) -> None: ...
    def wait_for_notify(self, timeout_s: float) -> bool: ...
    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class NodeSettings:
    node_id: str
    address: str  # https://host:port where the other nodes forward writes
    lease_ttl_s: float = 3.0
    poll_s: float = 0.25


class ReplicaNode:
    """The replication thread of one node."""

    def __init__(
        self,
        ledger: Ledger,
        store: Log,
        settings: NodeSettings,
        *,
        on_role: Callable[[Role], None] | None = None,
        on_deposed: Callable[[], object] | None = None,
    ) -> None:
        self.ledger = ledger
        self.store = store
        self.settings = settings
        self.on_role = on_role
        self.on_deposed = on_deposed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notarium-replication", daemon=True)
        self._started = False
        self.view = 0  # the lease's view, as last seen
        self.primary_address: str | None = None
        self.failure: str | None = None  # why following stopped (tampering, a gap)
        self.store_error: str | None = None  # why the replicated log cannot be reached right now
        self.checked = False  # the log was checked to hold the committed prefix since it was last unreachable
        self._attempts = 0  # failed rounds in a row
        self._unreachable_since = 0.0
        self._last_retry_log = 0.0
        self.deposed = threading.Event()
        self.took_over = threading.Event()

    # --- lifecycle ---

    def start(self) -> None:
        self._started = True
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._started:
            self._thread.join(10)

    def role(self) -> Role:
        ledger = self.ledger
        return Role(
            ledger.is_primary,
            ledger.view if ledger.is_primary else max(self.view, ledger.view),
            ledger.last_sequenced + 1,
            self.settings.address if ledger.is_primary else self.primary_address,
            self.failure is None,
            self.store_error is None,
        )

    def _announce(self) -> None:
        if self.on_role is not None:
            self.on_role(self.role())

    # --- the loop ---

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.ledger.is_primary:
                    self._as_primary()
                else:
                    self._as_follower()
            except StorageError as exc:  # PostgreSQL unreachable, restarting or failing over: retry
                self.store_unreachable(exc)
                self._stop.wait(self._retry_delay(exc))
                continue
            except Exception:
                log.exception("replication thread failed; this node starts again as a follower")
                self._depose()
                return
            if self.deposed.is_set():  # (a deposition may touch no PostgreSQL: not a sign it is back)
                return
            if self.store_error is not None:
                self._store_back()

    # --- PostgreSQL unreachable ---

    def store_unreachable(self, exc: StorageError) -> None:
        """A call to the log failed: the node reports not ready (its role says so) until a round
        of the loop succeeds, and a follower checks the log again before following it."""
        self.checked = False
        self._attempts += 1
        if self.store_error is None:
            self._unreachable_since = time.monotonic()
            self.store_error = _one_line(exc)  # redacted by the store: never a password
            self._announce()

    def _retry_delay(self, exc: StorageError) -> float:
        """The wait before the next attempt (capped exponential backoff, jittered), logged."""
        base = min(RETRY_MAX_S, max(self.settings.poll_s, 0.05) * 2 ** min(self._attempts - 1, 16))
        delay = _jitter.uniform(base / 2, base)
        now = time.monotonic()
        if self._attempts <= _RETRY_LOGGED_ATTEMPTS or now - self._last_retry_log >= RETRY_LOG_EVERY_S:
            self._last_retry_log = now
            log.warning(
                "the replicated log (PostgreSQL) cannot be reached: %s; retrying in %.1f s (attempt %d, "
                "%.0f s so far): this node is not ready meanwhile, and serves reads of what it verified",
                _one_line(exc),
                delay,
                self._attempts,
                now - self._unreachable_since,
            )
        return delay

    def _store_back(self) -> None:
        log.warning(
            "the replicated log (PostgreSQL) is reachable again, after %.1f s and %d failed attempt(s)",
            time.monotonic() - self._unreachable_since,
            self._attempts,
        )
        self.store_error, self._attempts = None, 0
        self._announce()

    def check(self, *, refuse: bool = False) -> None:
        """Check that the log holds this node's committed prefix (:func:`check_replica`). If it
        does not, ``refuse`` raises (a node starting), else following stops for good (a node that
        reconnects to a log restored from an old backup). :class:`StorageError` propagates."""
        if self.failure is None:
            try:
                check_replica(self.ledger, self.store)
            except StorageError:
                raise
            except ServiceError as exc:
                if refuse:
                    raise
                self.failure = str(exc)
                log.error("%s; this node stops following and will not take the lease", exc)
                self._announce()
        self.checked = True

    def _as_follower(self) -> None:
        s = self.settings
        if not self.checked:
            self.check()
        self.follow()
        lease = self.store.lease()
        self.store.heartbeat(s.node_id, s.address)
        changed = lease.view != self.view or lease.address != self.primary_address
        self.view, self.primary_address = lease.view, lease.address
        self.ledger.note_view(lease.view)
        if changed:
            self._announce()
        expired = lease.holder is None or lease.expires_in_s is None or lease.expires_in_s < 0
        if expired and self.failure is None and self.ledger.healthy and self.trusted():
            # the new view must pass every view this node has seen signed (a seeding node's own)
            min_view = self.ledger.committed.view + 1
            view = self.store.try_acquire(s.node_id, s.address, lease.view, s.lease_ttl_s, min_view=min_view)
            if view is not None:
                self._take_over(view)
                return
        self.store.wait_for_notify(s.poll_s)

    def trusted(self) -> bool:
        """Whether the service admitted this node (``Trusted`` in ``public:ccf.gov.nodes.info``): only
        a trusted node's signatures verify for auditors, so only a trusted node takes the lease."""
        raw = self.ledger.state_get(tables.NODES_INFO, self.settings.node_id.encode())
        try:
            return raw is not None and json.loads(raw).get("status") == "Trusted"
        except (ValueError, AttributeError):
            return False

    def follow(self) -> None:
        """:meth:`catch_up`, unless following stopped; a verification failure stops it for good."""
        if self.failure is not None:
            return
        try:
            self.catch_up()
        except VerificationError as exc:
            self.failure = f"the replicated log failed verification after seqno {self.ledger.committed.seqno}: {exc}"
            log.error("%s; this node stops following and will not take the lease (run `notarium audit`)", self.failure)
            self._announce()

    def catch_up(self) -> int:
        """Verify and apply the log up to its last signature; the committed seqno. (A run of more
        than READ_BATCH unsigned transactions is never written: signatures come far more often.)"""
        committed = self.ledger.committed.seqno
        while True:
            start = committed + 1
            rows = self.store.read(start, limit=READ_BATCH)
            if not rows:
                return committed
            committed = self.ledger.follow(rows)
            if len(rows) < READ_BATCH or committed < start:
                return committed

    def _take_over(self, view: int) -> None:
        s = self.settings
        started = time.monotonic()
        try:
            committed = self.catch_up()
        except VerificationError as exc:
            self.failure = f"the replicated log failed verification after seqno {self.ledger.committed.seqno}: {exc}"
            log.error("%s; giving the lease back", self.failure)
            self.store.release(view, s.node_id)
            self._announce()
            return
        if self.store.last_seqno() == 0 and committed > 0:
            self._seed(view, committed)
        dropped = self.store.truncate_after(view, s.node_id, committed)  # fenced
        if dropped:
            log.warning("view %d: dropped %d unsigned transaction(s) after %d (now Invalid)", view, dropped, committed)
        self.view, self.primary_address = view, s.address
        self.ledger.promote(view)
        self.ledger.sign()  # the view's first transaction: a signature, committed through the log
        self.took_over.set()
        log.warning(
            "this node is the primary of view %d (took over in %.2f s, after seqno %d)",
            view,
            time.monotonic() - started,
            committed,
        )
        self._announce()

    def _seed(self, view: int, committed: int) -> None:
        """The first node of a new replicated service: its ledger becomes the start of the log."""
        for start in range(1, committed + 1, READ_BATCH):
            self.store.append(view, self.settings.node_id, self.ledger.local_rows(start, start + READ_BATCH - 1))
        log.warning("seeded the replicated log with this node's %d committed transactions", committed)

    def _as_primary(self) -> None:
        s = self.settings
        if not self.ledger.healthy:  # a write failed: fenced (another node has the lease), or PostgreSQL failed
            log.error(
                "this node's writes were fenced, or failed in PostgreSQL (see above): it is no longer the primary"
            )
            self._depose()
            return
        if not self.trusted():  # retired by governance (remove_node): hand over to a trusted node
            log.warning("this node is no longer trusted by the service: giving up the lease")
            self.release()
            self._depose()
            return
        if not self.store.renew(self.view, s.node_id, s.lease_ttl_s):
            log.error("this node lost the lease of view %d", self.view)
            self._depose()
            return
        self.store.heartbeat(s.node_id, s.address)
        self._stop.wait(s.lease_ttl_s / 6)

    def _depose(self) -> None:
        self.deposed.set()
        if self.on_deposed is not None:
            self.on_deposed()

    def release(self) -> None:
        """On a clean stop of the primary: let a follower take over at once."""
        if self.ledger.is_primary and not self.deposed.is_set():
            try:
                self.store.release(self.view, self.settings.node_id)
            except NotariumError as exc:
                log.warning("could not release the lease: %s", exc)


def _one_line(exc: BaseException) -> str:
    """An error's message on one log line (libpq's messages span several)."""
    return " ".join(str(exc).split())


def check_replica(ledger: Ledger, store: Log) -> None:
    """A node's local files must be a prefix of the log (or the log empty: this node seeds it).

    The primary writes the log before its local files, so a node's committed prefix is always in
    the log, byte for byte, unless the log lost committed transactions (restored from an old
    backup, an asynchronous standby promoted) or this directory belongs to another service."""
    committed = ledger.committed.seqno
    last = store.last_seqno()
    if committed == 0 or last == 0:
        return
    if last < committed:
        raise ServiceError(
            f"the replicated log ends at seqno {last}, before this node's committed seqno {committed}: "
            "it has lost committed transactions (restored from an old backup, or an asynchronous standby "
            "was promoted?); refusing to serve from it"
        )
    ours = ledger.local_rows(committed, committed)
    theirs = store.read(committed, committed)
    if ours != theirs:
        raise ServiceError(
            f"this node's ledger and the replicated log differ at seqno {committed}: this directory is not a "
            "replica of that log (move DIR/ledger and DIR/index away to let the node fill it from the log)"
        )
