"""Flushing: the flusher thread signs each closed batch and writes it, then publishes it as Committed.

Group commit (docs/design/durability.md): the batches closed since the last round get their
signature transactions (leaves hashed into the tree and signed outside the engine lock), go to the
replicated log first if there is one (that is what makes them Committed there), then to the chunk
files with one ``fsync``, then to the index. Only then is the last signature's seqno published as
committed and the commit listeners called. A storage failure stops the ledger: it takes no more
writes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from notarium.ledger.batches import Extras, IndexBatch, Pending
from notarium.ledger.core import EngineCore
from notarium.ledger.encoding import encode_tables
from notarium.ledger.entries import seal_entry
from notarium.ledger.index import KIND_SIGNATURE, IndexState
from notarium.ledger.merkle import serialise_tree
from notarium.ledger.signing import signature_write_set
from notarium.types import TxId
from notarium.verify.leaf import ZERO_CLAIMS
from notarium.verify.merkle import Frontier

log = logging.getLogger("notarium.ledger")


class Flushing(EngineCore):
    def add_commit_listener(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(seqno)`` on the flusher thread each time the ledger has committed up to ``seqno``."""
        self._listeners.append(listener)

    def remove_commit_listener(self, listener: Callable[[int], None]) -> None:
        self._listeners.remove(listener)

    def _flush_loop(self) -> None:
        interval = self.config.signature_interval_ms / 1000
        auto = self.config.auto_sign
        while True:
            with self._lock_obj:
                while not self._closed_batches and not self._closing and (not auto or not self._pending.entries):
                    self._work.wait()
                if not self._closed_batches and not self._pending.entries:
                    return
                deadline = self._pending.first_time + interval
                while auto and not self._closing and not self._closed_batches and (now := time.monotonic()) < deadline:
                    self._work.wait(deadline - now)
                if self._pending.entries and (self._closing or (auto and time.monotonic() >= deadline)):
                    self._close_batch_locked()
                batches, self._closed_batches = self._closed_batches, []
            if not batches:
                continue
            try:
                for batch in batches:
                    self._sign_batch(batch)
                with self._tree_lock:
                    new_tiles, self._tree.new_tiles = self._tree.new_tiles, []
                    flushed = self._flushed
                signed_at = batches[-1].signature_seqno
                self._write_batches(batches, new_tiles, flushed, signed_at)
            except BaseException as exc:
                log.exception("storage failure; the ledger stops accepting writes")
                with self._lock_obj:
                    self._failure = exc
                    self._done.notify_all()
                return
            with self._lock_obj:
                self._committed = signed_at
                self._committed_view = self._view
                self._done.notify_all()
            for listener in list(self._listeners):
                listener(signed_at)

    def _sign_batch(self, batch: Pending) -> None:
        """Flusher only: add the batch's leaves to the tree, then its signature transaction."""
        seqno, view = batch.signature_seqno, self._view
        with self._tree_lock:
            for row in batch.rows:
                self._tree.append(row[4])
            self._since_signature += [row[4] for row in batch.rows]
            root = self._tree.frontier.root()
            tree_bytes = serialise_tree(self._flushed, self._since_signature)
            flushed = self._tree.frontier.copy()
        public = signature_write_set(
            self.identity,
            self._node_id,
            self._node_cert_pem,
            self._chain.service_key,
            TxId(view, seqno),
            root,
            tree_bytes,
            iat=int(self._clock()),
            issuer=self.service.ledger_id,
            nonce=self._rng(32),
        )
        entry, leaf = seal_entry(self._key(seqno), seqno, view, encode_tables(public), b"", ZERO_CLAIMS)
        with self._tree_lock:
            self._flushed = flushed
            self._tree.append(leaf)
            self._since_signature = [leaf]
        batch.entries.append(entry)
        batch.rows.append((seqno, view, KIND_SIGNATURE, None, leaf))

    def _write_batches(
        self,
        batches: list[Pending],
        new_tiles: list[tuple[int, bytes]],
        flushed: Frontier,
        signed_at: int,
        *,
        replicate: bool = True,
    ) -> None:
        """Persist signed batches: to the replicated log first if there is one (that is what makes
        them Committed; not for batches read from it), then to the local files (fsync), completing a
        chunk at each signature past chunk_size; then index them."""
        if self._replica is not None and replicate:
            rows = [
                (row[0], row[1], row[2] == KIND_SIGNATURE, entry)
                for batch in batches
                for row, entry in zip(batch.rows, batch.entries, strict=True)
            ]
            self._replica.append(self._view, self._node_id, rows)
        index = IndexBatch()
        no_extras: Extras = ([], [])
        for batch in batches:
            locations = self._chunks.append(batch.first_seqno, batch.entries)
            for (seqno, view, kind, collection, leaf), entry, (chunk, off) in zip(
                batch.rows, batch.entries, locations, strict=True
            ):
                token = None
                if collection is not None:
                    token = self._index_entry(index, seqno, collection, batch.extras.get(seqno, no_extras)[0])
                index.rows.append((seqno, view, chunk, off, len(entry), kind, token, leaf))
            for seqno, (_tags, writes) in batch.extras.items():
                index.writes += [(table, key, value, seqno) for table, key, value in writes]
            if self._chunks.current_size >= self.config.chunk_size:
                self._chunks.complete_current(batch.signature_seqno)  # fsyncs the chunk
        self._chunks.sync()
        self._commit_index(index, new_tiles, IndexState(signed_at, flushed.size, flushed.peaks))

    def _index_entry(self, batch: IndexBatch, seqno: int, collection: str, tags: Sequence[str]) -> bytes:
        """Add an entry's tag tokens to ``batch`` (and its collection's sealed id, the first time
        the index sees its token); return its collection token. Under the keys of the ledger
        secret in force at ``seqno``, like the entry itself."""
        secrets, ring = self._ring
        which = secrets.index_for(seqno)
        keys = ring[which].index
        token = batch.tokens.get((which, collection))
        if token is None:  # most entries of a batch share a few collections: one HMAC each
            token = batch.tokens[which, collection] = keys.collection(collection)
        batch.tags += [(keys.tag(collection, tag), seqno) for tag in tags]
        if token not in self._sealed_tokens and token not in batch.collections:
            batch.collections[token] = (token, seqno, keys.seal(collection))
        return token

    def _commit_index(self, batch: IndexBatch, tiles: list[tuple[int, bytes]], state: IndexState) -> None:
        self._index.commit_batch(batch.rows, tiles, state, batch.tags, batch.writes, list(batch.collections.values()))
        self._sealed_tokens.update(batch.collections)
