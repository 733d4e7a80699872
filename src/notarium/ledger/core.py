"""The engine's shared state, and the few operations every part of it uses.

:class:`notarium.ledger.engine.Ledger` is assembled from one class per concern, each in its own
module, all on top of :class:`EngineCore`:

* :mod:`.sequencing`: appends get the next seqno, are sealed and queued (*Pending*);
* :mod:`.flushing`: the flusher thread signs closed batches and writes them (replicated log,
  chunk files, index), then publishes them as *Committed*;
* :mod:`.reopening`: at start, the index and tree are brought in line with the durable, signed
  prefix of the chunk files (crash recovery);
* :mod:`.reading` and :mod:`.proofs`: entries, receipts, signed roots and consistency proofs;
* :mod:`.following`: a follower of a replicated ledger verifies and stores what the primary wrote;
* :mod:`.administration`: recovery shares, rekeys, certificate renewal and identity changes.

Locking: ``_lock_obj`` (with its conditions ``_work`` and ``_done``) guards sequencing state
(``_next``, ``_pending``, ``_closed_batches``, ``_committed``…); ``_tree_lock`` guards the Merkle
tree, which the flusher extends outside the engine lock. ``_ring`` is replaced in one assignment so
that the flusher reads it without the engine lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from notarium.errors import LedgerError, NotPrimaryError, ServiceError
from notarium.ledger.batches import Pending
from notarium.ledger.config import EngineConfig, ReplicaLog, SecretCourier
from notarium.ledger.entries import SecretKeys, decrypt_private, entry_collection_and_tags
from notarium.ledger.identity import NodeIdentity
from notarium.ledger.identity_chain import IdentityChain
from notarium.ledger.index import Index, TxLocation
from notarium.ledger.indexkeys import IndexKeys
from notarium.ledger.layout import Layout, ServiceConfig
from notarium.ledger.storage.files import ChunkFiles
from notarium.ledger.tree import TreeStore
from notarium.recovery.chain import LedgerSecrets
from notarium.recovery.shares import RecoverySharesRecord
from notarium.types import TxId, TxStatus
from notarium.verify import tables
from notarium.verify.entry import EntryView
from notarium.verify.merkle import Frontier

if TYPE_CHECKING:
    from notarium.recovery.sealing import Sealer


class EngineCore:
    """State shared by the parts of the engine (set by ``Ledger.__init__`` and ``_recover``)."""

    # what the engine was given
    layout: Layout
    service: ServiceConfig
    identity: NodeIdentity
    config: EngineConfig
    _rng: Callable[[int], bytes]
    _clock: Callable[[], float]
    _sealer: Sealer | None
    _replica: ReplicaLog | None
    _courier: SecretCourier | None
    # facts derived from it
    _private: bool
    _entries_table: str
    _node_id: str
    _node_cert_pem: str
    _chain: IdentityChain
    _ring: tuple[LedgerSecrets, tuple[SecretKeys, ...]]  # the secrets in force, and their keys
    _recovery: RecoverySharesRecord | None  # the newest recovery shares record appended
    # storage
    _lockfd: int
    _chunks: ChunkFiles
    _index: Index
    _sealed_tokens: set[bytes]  # collection tokens the index holds a sealed id for
    # sequencing (under _lock_obj)
    _lock_obj: threading.Lock
    _work: threading.Condition  # the flusher waits on it for batches
    _done: threading.Condition  # callers wait on it for commits
    _view: int
    _next: int  # the next seqno to hand out
    _pending: Pending  # the open batch
    _closed_batches: list[Pending]  # awaiting their signature, in seqno order
    _committed: int
    _committed_view: int
    _closing: bool
    _closed: bool
    _failure: BaseException | None
    _primary: bool  # a replicated ledger sequences only once promoted
    _known_view: int  # follower: the newest view the service is known to have begun
    state_version: int  # follower: grows each time replicated state tables change
    # the Merkle tree (under _tree_lock)
    _tree_lock: threading.Lock
    _tree: TreeStore
    _flushed: Frontier  # the tree up to the newest signature transaction, which it excludes
    _since_signature: list[bytes]  # leaves since the last signature (flusher only)
    _frontier_at_last_signature: Frontier
    # the flusher thread and who hears of commits
    _flusher: threading.Thread
    _listeners: list[Callable[[int], None]]

    # ------------------------------------------------------------------ ledger secrets

    def _set_secrets(self, secrets: LedgerSecrets) -> None:
        # one assignment: the flusher thread reads both halves without the engine lock
        self._ring = (secrets, tuple(SecretKeys(secret) for _start, secret in secrets))

    def _key(self, seqno: int) -> SecretKeys:
        """The keys of the ledger secret in force at ``seqno``."""
        secrets, keys = self._ring
        return keys[secrets.index_for(seqno)]

    def _secret_ranges(self, first: int, last: int) -> list[tuple[IndexKeys, int, int]]:
        """The index keys of each ledger secret in force within ``first..last``, with the part of
        that range it covers, oldest first."""
        secrets, keys = self._ring
        starts = secrets.starts
        ends = [start - 1 for start in starts[1:]] + [last]
        return [
            (key.index, max(first, start), min(last, end))
            for key, start, end in zip(keys, starts, ends, strict=True)
            if max(first, start) <= min(last, end)
        ]

    # ------------------------------------------------------------------ one entry's contents

    def _decrypt(self, raw: bytes | memoryview, e: EntryView) -> dict[str, dict[bytes, bytes | None]]:
        """Decrypt the private domain of one entry (``raw`` holds exactly that entry)."""
        return decrypt_private(self._key(e.seqno), raw, e)

    def _entry_of(
        self, buf: memoryview, e: EntryView, public: dict[str, dict[bytes, bytes | None]]
    ) -> tuple[str, list[str]] | None:
        """(collection id, tags) if the transaction is an application ledger entry."""
        writes = public.get(tables.ENTRIES_PUBLIC)
        if writes is None and e.has_private:
            writes = self._decrypt(buf[e.start : e.end], e).get(tables.ENTRIES_PRIVATE)
        return entry_collection_and_tags(writes)

    # ------------------------------------------------------------------ sequencing state

    def _check_writable(self) -> None:
        if self._failure is not None:
            raise LedgerError(f"the ledger stopped after a storage failure: {self._failure}")
        if self._closing or self._closed:
            raise LedgerError("the ledger is closed")
        if not self._primary:
            raise NotPrimaryError("this node is not the primary: writes go to the primary")

    def _check_seqno(self, expected: int | None) -> None:
        if expected is not None and expected != self._next:
            raise LedgerError(f"the sequencer expected seqno {expected}, the ledger is at {self._next}")

    def _close_batch_locked(self) -> None:
        """Reserve the next seqno for a signature over everything sequenced so far; the flusher
        fills it in (hashing the leaves and signing outside the engine lock)."""
        batch = self._pending
        batch.signature_seqno = self._next
        self._next += 1
        self._closed_batches.append(batch)
        self._pending = Pending(self._next)
        self._work.notify()

    def _signal_flush(self) -> None:
        with self._lock_obj:
            self._work.notify()

    # ------------------------------------------------------------------ status

    @property
    def committed(self) -> TxId:
        """The last committed transaction (always a signature transaction)."""
        with self._lock_obj:
            return TxId(self._committed_view, self._committed)

    @property
    def view(self) -> int:
        return self._view

    @property
    def last_sequenced(self) -> int:
        """The seqno most recently handed out (committed or not)."""
        with self._lock_obj:
            return self._next - 1

    @property
    def healthy(self) -> bool:
        return self._failure is None and not self._closing and not self._closed

    @property
    def is_primary(self) -> bool:
        return self._primary

    @property
    def replicated(self) -> bool:
        return self._replica is not None

    @property
    def node_id(self) -> str:
        return self._node_id

    def state(self, table: str) -> dict[bytes, bytes]:
        """The committed contents of a public state table (``public:ccf.gov.*``, ``public:notarium.*``)."""
        return self._index.state_items(table)

    def state_get(self, table: str, key: bytes) -> bytes | None:
        return self._index.state_get(table, key)

    def status(self, txid: TxId) -> TxStatus:
        return self._classify(txid)[0]

    def _classify(self, txid: TxId) -> tuple[TxStatus, TxLocation | None]:
        """The status of ``txid`` and, if Committed, its index row (one index lookup at most).

        A follower answers Invalid past its committed prefix only when a verified signature of a
        later view exists (that view began at or before it, so ``txid`` can never commit), and
        Pending for the views begun since: never Invalid where another node says Committed."""
        v, s = txid.view, txid.seqno
        with self._lock_obj:
            committed, view, next_seqno = self._committed, self._view, self._next
            primary, known_view = self._primary, self._known_view
        if s == 0:
            return TxStatus.UNKNOWN, None
        if s <= committed:
            row = self._index.get(s)
            if row is None:
                raise ServiceError(f"committed seqno {s} is missing from the index; run `notarium reindex`")
            return (TxStatus.COMMITTED, row) if row.view == v else (TxStatus.INVALID, None)
        if v < view:  # a follower's view is that of its last verified signature
            return TxStatus.INVALID, None
        if primary:
            return (TxStatus.PENDING, None) if v == view and s < next_seqno else (TxStatus.UNKNOWN, None)
        return (TxStatus.PENDING, None) if v <= max(view, known_view) else (TxStatus.UNKNOWN, None)

    def wait_committed(self, txid: TxId, timeout: float | None = None) -> TxStatus:
        """Block until ``txid`` is no longer Pending (or ``timeout`` seconds); return its status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.status(txid)
            with self._lock_obj:
                if status == TxStatus.PENDING and txid.seqno <= self._committed:
                    continue  # committed since we looked
                if status != TxStatus.PENDING or self._failure is not None or self._closed:
                    return status
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return status
                self._done.wait(remaining)
