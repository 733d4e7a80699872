"""The lookup index: SQLite, derived entirely from the chunk files (``notarium reindex``).

It is written only after the transactions it describes are durable and signed, so it is never
ahead of the ledger; after a crash it may be behind, and the engine replays the difference. It
is not trusted: the engine checks its Merkle state against the last signature at start-up, and
every receipt built from it is verified before it is returned.

It holds no collection id or tag in clear (format 3): entries are found by keyed tokens, and
collection ids are kept sealed, under keys derived from the ledger secrets
(:mod:`notarium.ledger.indexkeys`; what the index still reveals: docs/design/trust-model.md).

Tables:

* ``tx(seqno, view, chunk, offset, size, kind, collection, leaf)``: one row per transaction;
  ``collection`` is the collection token of an application entry (``NULL`` for other transactions);
* ``tile(idx, hash)``: roots of the complete 256-leaf subtrees (Merkle level 8), so receipts
  never read more than a tile of leaves;
* ``tag(token, seqno)``: entries by tag token (a tag within its collection);
* ``collection(token, seqno, sealed)``: each collection token once, with the seqno of an entry
  that has it (which ledger secret made the token) and the sealed collection id, for listing;
* ``state(tbl, key, value, seqno)``: the latest committed value of each key of the public
  governance and notarium tables (``public:ccf.gov.*``, ``public:notarium.*``; not entries);
* ``meta``: the format version, and the Merkle frontier at the last indexed signature.

An index of another format (an older notarium's, which held collection ids and tags in clear) is
deleted when it is opened, files and all, and the engine rebuilds it from the chunk files.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("notarium.ledger")

FORMAT_VERSION = 3
KIND_OTHER, KIND_ENTRY, KIND_SIGNATURE = 0, 1, 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tx (
    seqno INTEGER PRIMARY KEY,
    view INTEGER NOT NULL,
    chunk INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    size INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    collection BLOB,
    leaf BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS tx_by_collection ON tx(collection, seqno) WHERE collection IS NOT NULL;
CREATE INDEX IF NOT EXISTS tx_signatures ON tx(seqno) WHERE kind = 2;
CREATE TABLE IF NOT EXISTS tile (idx INTEGER PRIMARY KEY, hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tag (token BLOB NOT NULL, seqno INTEGER NOT NULL, PRIMARY KEY (token, seqno));
CREATE TABLE IF NOT EXISTS collection (token BLOB PRIMARY KEY, seqno INTEGER NOT NULL, sealed BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS state (tbl TEXT NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL, seqno INTEGER NOT NULL,
                                  PRIMARY KEY (tbl, key));
"""

_ROWS_PER_STATEMENT = 1000  # 8 values a row: well under SQLite's limit of 32,766 variables

Row = tuple[int, int, int, int, int, int, bytes | None, bytes]
"""(seqno, view, chunk, offset, size, kind, collection token, leaf)"""

TagRow = tuple[bytes, int]
"""(tag token, seqno) of a ledger entry written with that tag"""

CollectionRow = tuple[bytes, int, bytes]
"""(collection token, seqno of an entry with it, sealed collection id)"""

StateWrite = tuple[str, bytes, bytes | None, int]
"""(table, key, value or None for a removal, seqno): the latest committed value of a state table"""


@dataclass(frozen=True, slots=True)
class TxLocation:
    seqno: int
    view: int
    chunk: int
    offset: int
    size: int
    kind: int
    collection: bytes | None  # the collection token
    leaf: bytes


@dataclass(frozen=True, slots=True)
class IndexState:
    """The Merkle state at the last indexed signature ``last_seqno`` (0: empty index)."""

    last_seqno: int
    frontier_size: int
    frontier_peaks: list[bytes]


class Index:
    """One SQLite database in WAL mode; a writer connection and a reader connection."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        _drop_other_format(path)
        self._w = self._connect()
        self._r = self._connect()
        self._wlock = threading.Lock()
        self._rlock = threading.Lock()
        with self._wlock:
            self._w.executescript(_SCHEMA)
            if self._meta_get(self._w, "format_version") is None:
                self._w.execute("INSERT INTO meta VALUES ('format_version', ?)", (str(FORMAT_VERSION),))
            self._w.commit()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level="DEFERRED")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    @staticmethod
    def _meta_get(conn: sqlite3.Connection, key: str) -> str | None:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    # --- writing (one writer thread) ---

    def commit_batch(
        self,
        rows: Sequence[Row],
        tiles: Iterable[tuple[int, bytes]],
        state: IndexState,
        tags: Sequence[TagRow] = (),
        writes: Sequence[StateWrite] = (),
        collections: Sequence[CollectionRow] = (),
    ) -> None:
        """Add the rows, tags, collections, state writes and tiles of one signed batch, and the
        Merkle state."""
        meta = {
            "last_seqno": str(state.last_seqno),
            "frontier": json.dumps([state.frontier_size, [p.hex() for p in state.frontier_peaks]]),
        }
        with self._wlock:
            w = self._w
            # one statement per 1,000 rows: sqlite3 releases the GIL around every step, and a step
            # per row would hand the GIL back and forth with the request thread thousands of times
            for i in range(0, len(rows), _ROWS_PER_STATEMENT):
                part = rows[i : i + _ROWS_PER_STATEMENT]
                w.execute(
                    "INSERT OR REPLACE INTO tx VALUES " + ",".join(["(?,?,?,?,?,?,?,?)"] * len(part)),  # noqa: S608
                    [value for row in part for value in row],
                )
            w.executemany("INSERT OR REPLACE INTO tile VALUES (?, ?)", tiles)
            if tags:
                w.executemany("INSERT OR REPLACE INTO tag VALUES (?, ?)", tags)
            if collections:
                w.executemany("INSERT OR IGNORE INTO collection VALUES (?, ?, ?)", collections)
            for table, key, value, seqno in writes:
                if value is None:
                    w.execute("DELETE FROM state WHERE tbl = ? AND key = ?", (table, key))
                else:
                    w.execute("INSERT OR REPLACE INTO state VALUES (?, ?, ?, ?)", (table, key, value, seqno))
            w.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", meta.items())
            w.commit()

    def reset(self) -> None:
        with self._wlock:
            self._w.execute("DELETE FROM tx")
            self._w.execute("DELETE FROM tile")
            self._w.execute("DELETE FROM tag")
            self._w.execute("DELETE FROM collection")
            self._w.execute("DELETE FROM state")
            self._w.execute("DELETE FROM meta WHERE key != 'format_version'")
            self._w.commit()

    # --- reading (any thread) ---

    def state(self) -> IndexState:
        with self._rlock:
            last = self._meta_get(self._r, "last_seqno")
            frontier = self._meta_get(self._r, "frontier")
        if last is None or frontier is None:
            return IndexState(0, 0, [])
        size, peaks = json.loads(frontier)
        return IndexState(int(last), int(size), [bytes.fromhex(p) for p in peaks])

    def get(self, seqno: int) -> TxLocation | None:
        with self._rlock:
            row = self._r.execute("SELECT * FROM tx WHERE seqno = ?", (seqno,)).fetchone()
        return None if row is None else TxLocation(*row)

    def next_signature(self, after: int) -> TxLocation | None:
        with self._rlock:
            row = self._r.execute(
                "SELECT * FROM tx WHERE kind = 2 AND seqno > ? ORDER BY seqno LIMIT 1", (after,)
            ).fetchone()
        return None if row is None else TxLocation(*row)

    def leaves(self, lo: int, hi: int) -> list[bytes]:
        """Leaves ``[lo, hi)``; leaf 0 is not stored (it is all zeros)."""
        with self._rlock:
            rows = self._r.execute(
                "SELECT leaf FROM tx WHERE seqno >= ? AND seqno < ? ORDER BY seqno", (lo, hi)
            ).fetchall()
        return [bytes(r[0]) for r in rows]

    def tiles(self) -> list[bytes]:
        with self._rlock:
            rows = self._r.execute("SELECT idx, hash FROM tile ORDER BY idx").fetchall()
        for i, (idx, _h) in enumerate(rows):
            if idx != i:
                raise ValueError("index tiles are not contiguous")
        return [bytes(h) for _i, h in rows]

    def entries(self, collection: bytes, lo: int, hi: int, limit: int, tag: bytes | None = None) -> list[TxLocation]:
        """Entries with collection token ``collection`` (or, when given, with tag token ``tag``,
        which names the collection too) with ``lo ≤ seqno ≤ hi``, ascending, at most ``limit``."""
        with self._rlock:
            if tag is None:
                rows = self._r.execute(
                    "SELECT * FROM tx WHERE collection = ? AND seqno >= ? AND seqno <= ? ORDER BY seqno LIMIT ?",
                    (collection, lo, hi, limit),
                ).fetchall()
            else:
                rows = self._r.execute(
                    "SELECT tx.* FROM tag JOIN tx ON tx.seqno = tag.seqno WHERE tag.token = ? AND tx.collection = ?"
                    " AND tag.seqno >= ? AND tag.seqno <= ? ORDER BY tag.seqno LIMIT ?",
                    (tag, collection, lo, hi, limit),
                ).fetchall()
        return [TxLocation(*r) for r in rows]

    def state_items(self, table: str) -> dict[bytes, bytes]:
        with self._rlock:
            rows = self._r.execute("SELECT key, value FROM state WHERE tbl = ? ORDER BY key", (table,)).fetchall()
        return {bytes(k): bytes(v) for k, v in rows}

    def state_get(self, table: str, key: bytes) -> bytes | None:
        with self._rlock:
            row = self._r.execute("SELECT value FROM state WHERE tbl = ? AND key = ?", (table, key)).fetchone()
        return None if row is None else bytes(row[0])

    def latest_entry(self, collection: bytes, lo: int, hi: int) -> TxLocation | None:
        """The last entry with collection token ``collection`` with ``lo ≤ seqno ≤ hi``."""
        with self._rlock:
            row = self._r.execute(
                "SELECT * FROM tx WHERE collection = ? AND seqno >= ? AND seqno <= ? ORDER BY seqno DESC LIMIT 1",
                (collection, lo, hi),
            ).fetchone()
        return None if row is None else TxLocation(*row)

    def collections(self) -> list[CollectionRow]:
        """Every collection token with the seqno of an entry that has it and its sealed id."""
        with self._rlock:
            rows = self._r.execute("SELECT token, seqno, sealed FROM collection ORDER BY seqno").fetchall()
        return [(bytes(t), int(s), bytes(v)) for t, s, v in rows]

    def close(self) -> None:
        with self._wlock:
            self._w.close()
        with self._rlock:
            self._r.close()


def _drop_other_format(path: Path) -> None:
    """Delete the index at ``path`` (with its WAL files) if it is of another format: it is derived
    data, and an older format holds collection ids and tags in clear, which must not stay on disk
    (not even in SQLite's free pages)."""
    if not path.exists():
        return
    try:
        conn = sqlite3.connect(path)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone()
        finally:
            conn.close()
        version = None if row is None else str(row[0])
    except sqlite3.Error:
        version = "unreadable"
    if version == str(FORMAT_VERSION):
        return
    log.warning(
        "the index %s is of format %s, not %s; deleting it: it is rebuilt from the chunk files",
        path,
        version,
        FORMAT_VERSION,
    )
    for suffix in ("-wal", "-shm", ""):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
