"""The engine's units of work: a batch of sequenced transactions, and what a run of them adds to the index."""

from __future__ import annotations

from notarium.ledger.entries import StateWrites
from notarium.ledger.index import CollectionRow, Row, StateWrite, TagRow

Extras = tuple[list[str], StateWrites]
"""What a transaction adds to the index besides its row: tags, state writes."""

BatchRow = tuple[int, int, int, str | None, bytes]
"""seqno, view, kind (notarium.ledger.index.KIND_*), collection id of an entry, leaf."""


class Pending:
    """Transactions sequenced but not yet written. A closed batch has a seqno reserved for the
    signature transaction that will follow its entries."""

    __slots__ = ("entries", "extras", "first_seqno", "first_time", "rows", "signature_seqno")

    def __init__(self, first_seqno: int) -> None:
        self.first_seqno = first_seqno
        self.signature_seqno = 0  # set when the batch is closed
        self.entries: list[bytes] = []
        self.rows: list[BatchRow] = []
        self.extras: dict[int, Extras] = {}  # seqno → tags, writes
        self.first_time = 0.0


class IndexBatch:
    """What the index learns from a run of transactions (tokens, not collection ids or tags:
    :mod:`notarium.ledger.indexkeys`)."""

    __slots__ = ("collections", "rows", "tags", "tokens", "writes")

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.tags: list[TagRow] = []
        self.writes: list[StateWrite] = []
        self.collections: dict[bytes, CollectionRow] = {}  # collection tokens new to the index
        self.tokens: dict[tuple[int, str], bytes] = {}  # (ledger secret, collection id) → token

    def add(self, row: Row, writes: StateWrites) -> None:
        seqno = row[0]
        self.rows.append(row)
        self.writes.extend((table, key, value, seqno) for table, key, value in writes)

    def extend(self, other: IndexBatch) -> None:
        self.rows += other.rows
        self.tags += other.tags
        self.writes += other.writes
        for token, row in other.collections.items():
            self.collections.setdefault(token, row)
