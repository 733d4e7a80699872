"""The read path: committed entries by TxId, by collection (and tag), and the collections.

Lookups go through the index (:mod:`notarium.ledger.index`), which holds keyed tokens, not
collection ids or tags; it is not trusted: every entry it points at is read from the chunk files
and checked to be the transaction, collection and tag it was looked up as.
"""

from __future__ import annotations

from notarium.errors import ServiceError
from notarium.ledger.core import EngineCore
from notarium.ledger.entries import DEFAULT_COLLECTION, LedgerEntry, ledger_entry, split_tags
from notarium.ledger.index import KIND_ENTRY, TxLocation
from notarium.types import TxId, TxStatus
from notarium.verify import tables
from notarium.verify.entry import EntryView, decode_tables, parse_entry

_MAX_SEQNO = 2**63 - 1


class Reading(EngineCore):
    def ledger_bytes(self) -> int:
        return self._chunks.total_bytes()

    def _read_committed(self, txid: TxId) -> tuple[bytes, EntryView, int] | None:
        status, row = self._classify(txid)
        if status != TxStatus.COMMITTED or row is None:
            return None
        raw = self._chunks.read(row.chunk, row.offset, row.size)
        e = parse_entry(raw, 0)
        if e.seqno != txid.seqno or e.view != txid.view:
            raise ServiceError(f"index points {txid} at entry {e.view}.{e.seqno}; run `notarium reindex`")
        return raw, e, row.kind

    def lookup_entry(self, txid: TxId) -> tuple[TxStatus, LedgerEntry | None]:
        """The status of ``txid`` and, if it is a committed application entry, the entry."""
        status, row = self._classify(txid)
        if status != TxStatus.COMMITTED or row is None or row.kind != KIND_ENTRY:
            return status, None
        raw = self._chunks.read(row.chunk, row.offset, row.size)
        e = parse_entry(raw, 0)
        if e.seqno != txid.seqno or e.view != txid.view:
            raise ServiceError(f"index points {txid} at entry {e.view}.{e.seqno}; run `notarium reindex`")
        return status, self._entry_from(txid, raw, e)

    def get_entry(self, txid: TxId) -> LedgerEntry | None:
        """The committed application entry at ``txid`` (``None`` if not committed or not an entry)."""
        return self.lookup_entry(txid)[1]

    def _entry_from(self, txid: TxId, raw: bytes, e: EntryView) -> LedgerEntry:
        if self._private:
            writes = self._decrypt(raw, e).get(tables.ENTRIES_PRIVATE, {})
        else:
            writes = decode_tables(raw, e.tables_start, e.public_end).get(tables.ENTRIES_PUBLIC, {})
        return ledger_entry(txid, writes)

    def _indexed_entry(self, row: TxLocation, collection_id: str, tag: str | None = None) -> LedgerEntry | None:
        """The entry an index lookup found, checked to be in ``collection_id`` (with ``tag``): the
        index is not trusted."""
        entry = self.get_entry(TxId(row.view, row.seqno))
        if entry is not None and (
            entry.collection_id != collection_id or (tag is not None and tag not in split_tags(entry.tags))
        ):
            raise ServiceError(
                f"the index lists entry {entry.txid} under another collection or tag; run `notarium reindex`"
            )
        return entry

    def latest_entry(self, collection_id: str = DEFAULT_COLLECTION) -> LedgerEntry | None:
        for keys, lo, hi in reversed(self._secret_ranges(1, _MAX_SEQNO)):
            row = self._index.latest_entry(keys.collection(collection_id), lo, hi)
            if row is not None:
                return self._indexed_entry(row, collection_id)
        return None

    def entries(
        self,
        collection_id: str = DEFAULT_COLLECTION,
        first: int = 1,
        last: int | None = None,
        limit: int = 1000,
        tag: str | None = None,
        max_bytes: int | None = None,
    ) -> list[LedgerEntry]:
        """Committed entries of a collection (optionally with ``tag``) with ``first ≤ seqno ≤ last``:
        at most ``limit``, and with ``max_bytes``, none after the first whose contents take the
        total past ``max_bytes`` (a listing page's bound and its next page's first entry: entries
        the page would not hold are not read)."""
        last = self._committed if last is None else min(last, self._committed)
        out: list[LedgerEntry] = []
        size = 0
        for keys, lo, hi in self._secret_ranges(first, last):
            if len(out) >= limit:
                break
            token = keys.collection(collection_id)
            tag_token = None if tag is None else keys.tag(collection_id, tag)
            for row in self._index.entries(token, lo, hi, limit - len(out), tag_token):
                entry = self._indexed_entry(row, collection_id, tag)
                if entry is None:
                    continue
                out.append(entry)
                size += len(entry.contents)
                if max_bytes is not None and size > max_bytes and len(out) > 1:
                    return out
        return out

    def collections(self) -> list[str]:
        """The ids of the collections that hold a committed entry, opened from the index's sealed copies."""
        secrets, keys = self._ring
        names = set()
        for token, seqno, sealed in self._index.collections():
            try:
                names.add(keys[secrets.index_for(seqno)].index.open(token, sealed))
            except ValueError as exc:
                raise ServiceError(f"{exc}; run `notarium reindex`") from None
        return sorted(names)
