"""Following: a node of a replicated ledger (docs/design/ha.md) that is not the primary verifies
the transactions the primary wrote to the replicated log and adds each signed run of them to its
own files and index; :meth:`Following.promote` makes it the primary of a new view.

Nothing read from the log is trusted: every entry is parsed, every signature verified against the
follower's own Merkle tree, and a rekey's secret must chain to the one in force.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from notarium.errors import LedgerError, ServiceError, VerificationError
from notarium.ledger.batches import Pending
from notarium.ledger.config import LogRow
from notarium.ledger.entries import leaf_of, state_writes
from notarium.ledger.flushing import Flushing
from notarium.ledger.index import KIND_ENTRY, KIND_OTHER, KIND_SIGNATURE
from notarium.recovery.chain import ChainRecord
from notarium.recovery.shares import RecoverySharesRecord
from notarium.types import TxId
from notarium.verify import tables
from notarium.verify.entry import decode_tables, parse_entry
from notarium.verify.signature import SIGNATURE_TABLES

log = logging.getLogger("notarium.ledger")


class Following(Flushing):
    def local_rows(self, start: int, end: int) -> list[LogRow]:
        """Committed transactions ``start..end`` as log rows, read from the local files."""
        rows: list[LogRow] = []
        for seqno in range(start, min(end, self.committed.seqno) + 1):
            loc = self._index.get(seqno)
            if loc is None:
                raise ServiceError(f"committed seqno {seqno} is missing from the index; run `notarium reindex`")
            data = self._chunks.read(loc.chunk, loc.offset, loc.size)
            rows.append((seqno, loc.view, loc.kind == KIND_SIGNATURE, data))
        return rows

    def note_view(self, view: int) -> None:
        """Follower: the service has begun ``view`` (its lease says so). TxIds of that view past the
        committed ones are then Pending here, as on the primary, until they commit or a verified
        signature of a later view shows they never will."""
        with self._lock_obj:
            self._known_view = max(self._known_view, view)

    def follow(self, rows: Sequence[LogRow]) -> int:
        """Follower: verify transactions read from the replicated log (from the one after the
        committed one, in order) and add each signed run of them to the local files and index.
        Transactions after the last signature in ``rows`` are left for a later call. Returns the
        committed seqno.

        Nothing in ``rows`` is trusted: a gap, a malformed entry, a view going back, or a
        signature that does not verify against the Merkle tree raises ``VerificationError`` and
        adds nothing of the run it is in."""
        with self._lock_obj:
            if self._primary:
                raise LedgerError("the primary does not follow the log")
            if self._closing or self._closed or self._failure is not None:
                raise LedgerError("the ledger is closed")
            expected, view = self._committed + 1, self._committed_view
        batches: list[Pending] = []
        batch = Pending(expected)
        frontier = self._tree.frontier.copy()  # the follower's tree changes only here
        since: list[bytes] = []
        last_flushed = self._flushed
        for seqno, row_view, is_signature, data in rows:
            if seqno != expected:
                raise VerificationError(
                    f"the replicated log has seqno {seqno} where {expected} was expected (a transaction is missing)",
                    check="log-sequence",
                )
            buf = memoryview(data)
            e = parse_entry(buf, 0, len(buf))
            if e.end != len(buf) or e.seqno != seqno or e.iv_seqno != seqno or e.view != row_view:
                raise VerificationError(f"transaction {seqno} of the replicated log is malformed", check="log-entry")
            if e.view < view:
                raise VerificationError(f"transaction {seqno} goes back to view {e.view}", check="log-view")
            view = e.view
            leaf = leaf_of(buf, e)
            public = decode_tables(buf, e.tables_start, e.public_end) if e.tables_start < e.public_end else {}
            kind, collection = KIND_OTHER, None
            tags: list[str] = []
            if tables.HISTORICAL_LEDGER_SECRET in public:  # a rekey: what follows is sealed under the new secret
                self._learn_secret(public, seqno)
            if not SIGNATURE_TABLES.isdisjoint(public):
                self._chain.verify_signature(public, TxId(e.view, seqno), frontier.root())
                if any(r[1] != e.view for r in batch.rows):
                    raise VerificationError(f"signature {e.view}.{seqno} signs another view's transactions")
                kind = KIND_SIGNATURE
            else:
                try:
                    found = self._entry_of(buf, e, public)
                except ServiceError as exc:  # the private domain fails its AES-GCM tag: changed
                    raise VerificationError(str(exc), check="log-entry") from None
                if found is not None:
                    kind, (collection, tags) = KIND_ENTRY, found
            if is_signature != (kind == KIND_SIGNATURE):
                raise VerificationError(f"transaction {seqno} is mislabelled in the replicated log", check="log-entry")
            batch.entries.append(bytes(data))
            batch.rows.append((seqno, e.view, kind, collection, leaf))
            writes = state_writes(public)
            if tags or writes:
                batch.extras[seqno] = (tags, writes)
            if kind == KIND_SIGNATURE:
                last_flushed = frontier.copy()
                since = [leaf]
                batch.signature_seqno = seqno
                batches.append(batch)
                batch = Pending(seqno + 1)
            frontier.append(leaf)
            expected += 1
        if not batches:
            return self.committed.seqno
        signed_at = batches[-1].signature_seqno
        try:
            with self._tree_lock:
                for b in batches:
                    for r in b.rows:
                        self._tree.append(r[4])
                new_tiles, self._tree.new_tiles = self._tree.new_tiles, []
                self._flushed, self._since_signature = last_flushed, since
            self._write_batches(batches, new_tiles, last_flushed, signed_at, replicate=False)
        except BaseException as exc:  # the tree is ahead of the files now: stop here
            log.exception("storage failure while following the log; this node stops")
            with self._lock_obj:
                self._failure = exc
                self._done.notify_all()
            raise
        for b in batches:
            for _seqno, (_tags, writes) in b.extras.items():
                if writes:
                    self._note_state(writes)
                    self.state_version += 1
        with self._lock_obj:
            self._committed = signed_at
            self._committed_view = self._view = batches[-1].rows[-1][1]
            self._next = signed_at + 1
            self._pending = Pending(self._next)
            self._done.notify_all()
        for listener in list(self._listeners):
            listener(signed_at)
        return signed_at

    def _learn_secret(self, public: dict[str, dict[bytes, bytes | None]], seqno: int) -> None:
        """Follower: the ledger secret a rekey at ``seqno`` starts, from the blob sealed to this
        node in it; it must chain to the secret in force (its chain record opens under it). Sealed
        locally before anything is read under it."""
        start = seqno + 1
        secrets = self._ring[0]
        if start in secrets.starts:
            return
        blob = public.get(tables.NODE_LEDGER_SECRETS, {}).get(self._node_id.encode())
        if blob is None or self._courier is None:
            raise VerificationError(
                f"the rekey at seqno {seqno} carries no ledger secret for this node (it was not trusted then?): "
                "join the service again",
                check="log-secret",
            )
        secret = self._courier.open_for_node(self, blob, start)
        try:
            chain = ChainRecord.from_json(public[tables.HISTORICAL_LEDGER_SECRET].get(tables.SINGLETON_KEY) or b"")
            previous = chain.open(secret)
        except ValueError as exc:
            raise VerificationError(f"the rekey at seqno {seqno}: {exc}", check="log-secret") from None
        if (chain.start_seqno, previous) != secrets.latest or chain.successor_start_seqno != start:
            raise VerificationError(
                f"the rekey at seqno {seqno} does not chain to the secret in force", check="log-secret"
            )
        renewed = secrets.with_new(start, secret)
        if self._sealer is not None:
            self._sealer.seal(renewed.seal_bytes())
        self._set_secrets(renewed)
        log.info("the ledger secret in force from seqno %d arrived through the log", start)

    def _note_state(self, writes: list[tuple[str, bytes, bytes | None]]) -> None:
        """Follower: keep the in-memory copies of replicated state current."""
        for table, key, value in writes:
            if table == tables.RECOVERY_SHARES and key == tables.SINGLETON_KEY and value is not None:
                try:
                    self._recovery = RecoverySharesRecord.from_json(value)
                except ValueError:
                    log.warning("an unreadable recovery shares record was replicated; run `notarium audit`")

    def promote(self, view: int) -> None:
        """Follower → primary of ``view`` (its lease's), sequencing after the committed prefix. The
        caller has made the replicated log end there (its unsigned tail dropped, fenced) and then
        places the view's first signature (:meth:`sign`)."""
        with self._lock_obj:
            if self._replica is None:
                raise LedgerError("only a replicated ledger is promoted")
            if self._primary:
                raise LedgerError("this node is already the primary")
            if view <= self._committed_view:
                raise LedgerError(f"view {view} does not follow the committed view {self._committed_view}")
            self._view = self._known_view = view
            self._next = self._committed + 1
            self._pending = Pending(self._next)
            self._primary = True
        log.info("primary of view %d from seqno %d", view, self._committed + 1)
