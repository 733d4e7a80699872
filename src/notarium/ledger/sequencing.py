"""Sequencing: each append gets the next seqno in the current view, is sealed (serialised, its
private domain encrypted) and queued in the open batch; the caller has its TxId at once, *Pending*.

A batch is closed (a seqno reserved for its signature transaction) by the appender that brings
it to ``signature_tx_count``, by :meth:`Sequencing.sign`, or by the flusher after
``signature_interval`` (:mod:`.flushing`).
"""

from __future__ import annotations

import time

from notarium.ledger.batches import Extras
from notarium.ledger.core import EngineCore
from notarium.ledger.encoding import encode_single_write, encode_tables
from notarium.ledger.entries import (
    DEFAULT_COLLECTION,
    check_write_set,
    entry_value,
    seal_entry,
    split_tags,
    state_writes,
)
from notarium.ledger.fastcrypto import HmacKey
from notarium.ledger.index import KIND_ENTRY, KIND_OTHER
from notarium.types import TxId
from notarium.verify.entry import Tables
from notarium.verify.leaf import ZERO_CLAIMS, claim_inner_from_macs, single_claim_digest


class Sequencing(EngineCore):
    def append(
        self,
        public: Tables,
        private: Tables | None = None,
        *,
        claims_digest: bytes = ZERO_CLAIMS,
        seqno: int | None = None,
    ) -> TxId:
        """Append a raw write set (public tables named ``public:…``). Returns the TxId at once.

        ``seqno``, when given, is the seqno the caller expects this transaction to get (an external
        sequencer's check); a different one raises ``LedgerError`` and appends nothing."""
        check_write_set(public, private)
        extras: Extras = ([], state_writes(public))
        return self._append(
            encode_tables(public), encode_tables(private or {}), claims_digest, KIND_OTHER, None, extras, seqno
        )

    def append_entry(
        self,
        contents: str,
        collection_id: str = DEFAULT_COLLECTION,
        tags: str | None = None,
        *,
        seqno: int | None = None,
    ) -> TxId:
        """Append an application ledger entry. Private ledgers encrypt it; its claims follow ACL."""
        secret = self._rng(32)
        mac = HmacKey(secret)
        raw_collection = collection_id.encode()
        claims = single_claim_digest(claim_inner_from_macs(mac.digest(raw_collection), mac.digest(contents.encode())))
        body = encode_single_write(self._entries_table, raw_collection, entry_value(contents, secret, tags))
        extras: Extras | None = (split_tags(tags), []) if tags else None
        if self._private:
            return self._append(b"", body, claims, KIND_ENTRY, collection_id, extras, seqno)
        return self._append(body, b"", claims, KIND_ENTRY, collection_id, extras, seqno)

    def _append(
        self,
        public: bytes,
        private: bytes,
        claims: bytes,
        kind: int,
        collection: str | None,
        extras: Extras | None,
        seqno: int | None,
    ) -> TxId:
        with self._lock_obj:
            self._check_writable()
            while self._next - self._committed > self.config.max_unsigned and not self._closing:
                self._done.wait(1.0)
                self._check_writable()
            self._check_seqno(seqno)
            return self._append_locked(public, private, claims, kind, collection, extras)

    def sign(self, *, seqno: int | None = None) -> TxId:
        """Close the current batch now: its signature transaction takes the next seqno (``seqno``,
        when given, is checked as in :meth:`append`). A batch may be empty: the receipt of the
        newest signature needs a later one."""
        with self._lock_obj:
            self._check_writable()
            self._check_seqno(seqno)
            self._close_batch_locked()
            return TxId(self._view, self._next - 1)

    def _append_tables(self, public: Tables) -> TxId:
        with self._lock_obj:
            return self._append_tables_locked(public)

    def _append_tables_locked(self, public: Tables) -> TxId:
        extras: Extras = ([], state_writes(public))
        return self._append_locked(encode_tables(public), b"", ZERO_CLAIMS, KIND_OTHER, None, extras)

    def _append_locked(
        self,
        public: bytes,
        private: bytes,
        claims: bytes,
        kind: int,
        collection: str | None,
        extras: Extras | None = None,
    ) -> TxId:
        seqno, view = self._next, self._view
        entry, leaf = seal_entry(self._key(seqno), seqno, view, public, private, claims)
        self._next = seqno + 1
        p = self._pending
        if not p.entries:
            p.first_time = time.monotonic()
            self._work.notify()
        p.entries.append(entry)
        p.rows.append((seqno, view, kind, collection, leaf))
        if extras is not None and (extras[0] or extras[1]):
            p.extras[seqno] = extras
        if len(p.rows) >= self.config.signature_tx_count and self.config.auto_sign:
            self._close_batch_locked()
        return TxId(view, seqno)
