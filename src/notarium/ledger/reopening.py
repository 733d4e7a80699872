"""Reopening a ledger, after a clean stop or a crash: the index and the Merkle tree are brought in
line with the durable, signed prefix of the chunk files (docs/design/durability.md).

The index is not trusted: its Merkle state must reproduce the root its last signature signed,
else it is rebuilt from the chunk files. Entries after it are replayed (each signature verified
against the tree); an unsigned or torn tail of the unfinished chunk is cut off, and the
transactions in it become *Invalid*. Every start begins a new view, recorded durably first.
"""

from __future__ import annotations

import logging

from notarium.durable import replace
from notarium.errors import ServiceError, VerificationError
from notarium.ledger.batches import IndexBatch, Pending
from notarium.ledger.entries import leaf_of, state_writes
from notarium.ledger.flushing import Flushing
from notarium.ledger.index import KIND_ENTRY, KIND_OTHER, KIND_SIGNATURE, IndexState, Row
from notarium.ledger.layout import Layout
from notarium.ledger.sequencing import Sequencing
from notarium.ledger.tree import TILE_HEIGHT, TreeStore
from notarium.recovery.shares import RecoverySharesRecord
from notarium.types import TxId
from notarium.verify import tables
from notarium.verify.entry import CHUNK_HEADER_SIZE, Tables, decode_tables, parse_entry, read_positions
from notarium.verify.merkle import Frontier
from notarium.verify.signature import SIGNATURE_TABLES

log = logging.getLogger("notarium.ledger")


class Reopening(Sequencing, Flushing):
    def _recover(self, genesis: Tables | None) -> None:
        """Bring index and tree in line with the durable, signed prefix of the chunk files."""
        tree, start = self._tree_from_index()
        # collection tokens the index holds a sealed id for (grows only once a batch is indexed)
        self._sealed_tokens = {token for token, _seqno, _sealed in self._index.collections()}
        last_view, last_good = self._replay(tree, start)
        empty_replica = self._replica is not None and not self._chunks.chunks  # filled from the log
        if last_good == 0 and start == 1 and (genesis is None or self._chunks.chunks) and not empty_replica:
            raise ServiceError(f"{self.layout.root} holds no signed transaction; it is not a usable ledger")
        self._tree = tree
        self._committed = last_good
        self._drop_unrecorded_secrets(last_good)
        self._next = tree.frontier.size
        self._flushed = tree.frontier.copy()
        if self._replica is None:
            # A new view at every start, recorded durably before any TxId is handed out in it, so
            # that seqnos dropped in an earlier run stay Invalid and are never reported Committed.
            self._view = max(last_view, _read_view(self.layout)) + 1
            _write_view(self.layout, self._view)
        else:  # a follower: views are the lease's (promote); until then, that of the last signature
            self._view = last_view
        self._committed_view = last_view
        self._pending = Pending(self._next)
        self._closed_batches = []
        self._since_signature = []
        recorded = (genesis or {}).get(tables.RECOVERY_SHARES, {}).get(tables.SINGLETON_KEY)
        if recorded is None:
            recorded = self._index.state_get(tables.RECOVERY_SHARES, tables.SINGLETON_KEY)
        if recorded is not None:
            try:
                self._recovery = RecoverySharesRecord.from_json(recorded)
            except ValueError as exc:
                raise ServiceError(f"{exc}; run `notarium audit`") from None
        if genesis is not None:
            self._append_tables(genesis)
            self._signal_flush()

    def _drop_unrecorded_secrets(self, last_good: int) -> None:
        """Forget secrets whose rekey transaction (the one before their start) did not become
        durable: a rekey seals the new secret first, and a crash may then lose the transaction."""
        secrets = self._ring[0]
        kept = [start for start in secrets.starts if start == 1 or start - 1 <= last_good]
        if len(kept) == len(secrets):
            return
        log.warning(
            "dropping %d sealed ledger secret(s) whose rekey transaction was lost in a crash",
            len(secrets) - len(kept),
        )
        secrets = secrets.up_to(kept[-1])
        if self._sealer is not None:
            self._sealer.seal(secrets.seal_bytes())
        self._set_secrets(secrets)

    def _tree_from_index(self) -> tuple[TreeStore, int]:
        state = self._index.state()
        if state.last_seqno:
            try:
                tree = self._check_index(state)
            except (ServiceError, VerificationError, ValueError, KeyError) as exc:
                log.warning("index does not match the ledger (%s); rebuilding it from the chunk files", exc)
            else:
                self._frontier_at_last_signature = Frontier.from_peaks(state.frontier_size, state.frontier_peaks)
                return tree, state.last_seqno + 1
            self._index.reset()
        tree = TreeStore.empty(self._index.leaves)
        self._frontier_at_last_signature = tree.frontier.copy()
        return tree, 1

    def _check_index(self, state: IndexState) -> TreeStore:
        """The index's Merkle state must reproduce the root its last signature signed."""
        s = state.last_seqno
        frontier = Frontier.from_peaks(state.frontier_size, state.frontier_peaks)
        row = self._index.get(s)
        if frontier.size != s or row is None or row.kind != KIND_SIGNATURE:
            raise ValueError("index state does not end on a signature")
        raw = self._chunks.read(row.chunk, row.offset, row.size)
        e = parse_entry(raw, 0)
        if leaf_of(raw, e) != row.leaf:
            raise ValueError("indexed leaf of the last signature does not match the chunk file")
        public = decode_tables(raw, e.tables_start, e.public_end)
        self._chain.verify_signature(public, TxId(e.view, s), frontier.root())
        frontier.append(row.leaf)
        tree = TreeStore(frontier, self._index.tiles(), self._index.leaves)
        lo = 0
        for height, peak in zip(frontier.heights, frontier.peaks, strict=True):
            if height >= TILE_HEIGHT and tree.levels[height - TILE_HEIGHT][lo >> height] != peak:
                raise ValueError("index tiles do not match the Merkle frontier")
            lo += 1 << height
        return tree

    def _replay(self, tree: TreeStore, start: int) -> tuple[int, int]:
        """Replay chunk entries from ``start``: verify, index, and cut an unsigned or torn tail.

        Returns ``(view of the last good signature, its seqno)`` (``(0, 0)`` if none).
        """
        last_view, last_good = 0, start - 1
        if start > 1:
            prev = self._index.get(start - 1)
            last_view = prev.view if prev is not None else 0
        pending_leaves: list[bytes] = []
        pending = IndexBatch()
        good = IndexBatch()
        current = self._chunks.current
        cut: tuple[int, list[int]] | None = None  # (valid length, offsets) of the unfinished chunk
        expected = start
        for chunk, data in self._chunks.iter_files(start):
            live = chunk.end is None
            buf = memoryview(data)
            offsets: list[int] = []
            try:
                entries_end, _positions = read_positions(buf)
            except VerificationError as exc:
                raise ServiceError(f"{chunk.path.name}: {exc}; run `notarium audit`") from None
            off = CHUNK_HEADER_SIZE
            while off < entries_end:
                try:
                    e = parse_entry(buf, off, entries_end)
                except VerificationError as exc:
                    if live:
                        log.warning("%s: dropping a torn tail at offset %d (%s)", chunk.path.name, off, exc)
                        break
                    raise ServiceError(f"{chunk.path.name}: {exc}; run `notarium audit`") from None
                if e.seqno < start:  # already verified and indexed
                    offsets.append(off)
                    off = e.end
                    if live and e.seqno == start - 1:
                        cut = (off, list(offsets))
                    continue
                if e.seqno != expected or e.iv_seqno != expected:
                    raise ServiceError(f"{chunk.path.name}: seqno {e.seqno} where {expected} was expected")
                raw = buf[off : e.end]
                leaf = leaf_of(raw, e)
                kind, collection = KIND_OTHER, None
                tags: list[str] = []
                public = decode_tables(buf, e.tables_start, e.public_end) if e.tables_start < e.public_end else {}
                if not SIGNATURE_TABLES.isdisjoint(public):
                    frontier = tree.frontier.copy()
                    for pl in pending_leaves:
                        frontier.append(pl)
                    try:
                        self._chain.verify_signature(public, TxId(e.view, e.seqno), frontier.root())
                    except VerificationError as exc:
                        if live:
                            log.warning(
                                "%s: signature %d.%d does not verify (%s); dropping the tail",
                                chunk.path.name,
                                e.view,
                                e.seqno,
                                exc,
                            )
                            break
                        raise ServiceError(f"{chunk.path.name}: signature {e.view}.{e.seqno}: {exc}") from None
                    kind = KIND_SIGNATURE
                else:
                    found = self._entry_of(buf, e, public)
                    if found is not None:
                        kind, (collection, tags) = KIND_ENTRY, found
                token = None if collection is None else self._index_entry(pending, e.seqno, collection, tags)
                row: Row = (e.seqno, e.view, chunk.start, off, e.end - off, kind, token, leaf)
                offsets.append(off)
                pending_leaves.append(leaf)
                pending.add(row, state_writes(public))
                if kind == KIND_SIGNATURE:
                    for pl in pending_leaves[:-1]:
                        tree.append(pl)
                    self._frontier_at_last_signature = tree.frontier.copy()
                    tree.append(leaf)
                    good.extend(pending)
                    pending_leaves, pending = [], IndexBatch()
                    last_view, last_good = e.view, e.seqno
                    if live:
                        cut = (e.end, list(offsets))
                    if len(good.rows) >= 50_000:
                        self._index_rows(good, tree, last_good)
                        good = IndexBatch()
                expected += 1
                off = e.end
        if good.rows:
            self._index_rows(good, tree, last_good)
        if current is not None:
            if cut is None:
                log.warning("dropping %s: it holds no signed transaction", current.path.name)
                self._chunks.drop_current()
            else:
                self._chunks.open_current(*cut)
        if pending.rows:
            log.warning(
                "dropped %d transactions after the last durable signature %d.%d (now Invalid)",
                len(pending.rows),
                last_view,
                last_good,
            )
        return last_view, last_good

    def _index_rows(self, batch: IndexBatch, tree: TreeStore, last_signature: int) -> None:
        f = self._frontier_at_last_signature
        self._commit_index(batch, tree.new_tiles, IndexState(last_signature, f.size, f.peaks))
        tree.new_tiles = []


def _read_view(layout: Layout) -> int:
    try:
        return int(layout.view_file.read_text())
    except FileNotFoundError:
        return 0
    except (OSError, ValueError) as exc:
        raise ServiceError(f"cannot read {layout.view_file}: {exc}") from None


def _write_view(layout: Layout, view: int) -> None:
    """Durably record the view in use."""
    replace(layout.view_file, str(view).encode())
