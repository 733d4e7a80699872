"""Replaying a trail: the captured tables' rows as the ledger says they are.

The state lives in an SQLite file in a scratch directory, so memory stays flat whatever the size of
the tables: ``rows(tbl, key, row, n, txid)`` with the key and the row as JSON arrays of text values
(for tables whose whole row is their identity, ``n`` counts identical rows). ``txid`` is the ledger
entry that last changed the row.

The replay checks the trail as it goes and records, rather than hides, every discontinuity:
an LSN range that no entry covers (a **gap**), an epoch boundary (``pg init --rebaseline``), a
``stop``; a change that cannot apply (an update of a row the trail never had) is an
**inconsistency**. What it cannot replay (an incomplete or altered baseline, malformed entries)
raises :class:`notarium.errors.VerificationError`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from notarium.errors import VerificationError
from notarium.pgtrail.format import (
    Baseline,
    BaselineEnd,
    Change,
    Gap,
    Init,
    Part,
    Stop,
    TableShape,
    Txs,
    dumps,
    join_parts,
)
from notarium.pgtrail.pgoutput import UNCHANGED, Value, lsn_text
from notarium.pgtrail.trail import Recorded
from notarium.types import TxId


@dataclass(frozen=True, slots=True)
class Finding:
    """Something the trail shows that an auditor must see."""

    kind: str  # gap, stop, epoch, inconsistency (replay); timeline, restored, behind (verify)
    txid: str | None
    message: str
    epoch: int = 1  # the epoch it belongs to (an "epoch" finding: the one that begins)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "epoch": self.epoch, "txid": self.txid, "message": self.message}


@dataclass
class ReplayResult:
    init: Init | None = None
    init_txid: TxId | None = None
    baseline_txid: TxId | None = None
    end: int = 0  # every transaction committed before this LSN is replayed
    count: int = 0  # transactions replayed in the current epoch
    entries: int = 0
    last_txid: TxId | None = None
    last_commit_time: str | None = None
    findings: list[Finding] = field(default_factory=list)

    @property
    def baseline_done(self) -> bool:
        return self.baseline_txid is not None


def key_of(table: TableShape, row: Sequence[Value]) -> str:
    if table.identity == "full":
        return dumps(row)
    return dumps([row[i] for i in table.key_positions])


class Replay:
    """Feed it the trail's verified entries in ledger order; read the state with :meth:`rows`."""

    def __init__(self, workdir: Path, *, before: int | None = None) -> None:
        """``before``: replay only the transactions whose commit record precedes this LSN (a
        snapshot's consistent point: exactly the transactions the snapshot sees)."""
        self.before = before
        self.path = workdir / "replay.sqlite"
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-65536; PRAGMA temp_store=FILE;"
            "CREATE TABLE rows(tbl TEXT NOT NULL, key TEXT NOT NULL, row TEXT NOT NULL, n INTEGER NOT NULL,"
            " txid TEXT NOT NULL, PRIMARY KEY (tbl, key)) WITHOUT ROWID;"
        )
        self.db.execute("BEGIN")
        self.result = ReplayResult()
        self._tables: dict[str, TableShape] = {}
        self._baseline_lsn: int | None = None
        self._baseline_seen: dict[int, str] = {}
        self._baseline_counts: dict[str, int] = {}
        self._parts: dict[tuple[int, str], list[Part]] = {}
        self._stopped = False
        self._past = False  # the trail has gone past ``before``

    def close(self) -> None:
        self.db.close()

    # -- feeding --------------------------------------------------------------------------------

    def feed_all(self, recorded: Iterable[Recorded]) -> ReplayResult:
        for r in recorded:
            self.feed(r)
            if self._past:
                break  # nothing further counts: stop reading
        self.db.execute("COMMIT")
        self.db.execute("BEGIN")
        return self.result

    def _find(self, kind: str, txid: TxId | str | None, message: str, *, epoch: int | None = None) -> None:
        current = self.result.init.epoch if self.result.init is not None else 1
        self.result.findings.append(Finding(kind, None if txid is None else str(txid), message, epoch or current))

    def feed(self, r: Recorded) -> None:
        e, txid = r.entry, r.txid
        res = self.result
        if self._past or (self.before is not None and isinstance(e, Txs | Gap) and e.start >= self.before):
            self._past = True
            return
        res.entries += 1
        res.last_txid = txid
        if isinstance(e, Init):
            self._new_epoch(e, txid)
            return
        if res.init is None:
            raise VerificationError(f"the trail's first entry ({txid}) is not an init entry", check="trail")
        if e.epoch != res.init.epoch:
            self._find("inconsistency", txid, f"an entry of epoch {e.epoch} after epoch {res.init.epoch} began")
            return
        if isinstance(e, Baseline):
            self._baseline(e, txid, r.digest)
        elif isinstance(e, BaselineEnd):
            self._baseline_end(e, txid)
        elif not res.baseline_done:
            self._find("inconsistency", txid, "changes recorded before the epoch's baseline was complete")
        elif isinstance(e, Txs):
            self._txs(e, txid)
        elif isinstance(e, Part):
            group = self._parts.setdefault((e.lsn, e.sha256), [])
            if any(p.part == e.part for p in group):
                return  # sent again
            group.append(e)
            if len(group) == e.of:
                del self._parts[(e.lsn, e.sha256)]
                self._txs(join_parts(sorted(group, key=lambda p: p.part)), txid)
        elif isinstance(e, Gap):
            self._find(
                "gap",
                txid,
                f"the capture agent found the slot advanced from {lsn_text(e.start)} to {lsn_text(e.end)}: "
                f"transactions committed in between never reached the ledger ({e.reason})",
            )
            res.end = max(res.end, e.end)
        elif isinstance(e, Stop):
            self._stopped = True
            self._find("stop", txid, f"capture stopped at {lsn_text(e.lsn)}: {e.reason}")

    def _new_epoch(self, e: Init, txid: TxId) -> None:
        res = self.result
        if res.init is not None:
            if e.epoch != res.init.epoch + 1:
                raise VerificationError(
                    f"epoch {e.epoch} at {txid} does not follow epoch {res.init.epoch}", check="trail"
                )
            if e.system_identifier != res.init.system_identifier:
                raise VerificationError(f"epoch {e.epoch} at {txid} belongs to another database", check="trail")
            how = "after capture stopped" if self._stopped else "while capture had not stopped"
            self._find(
                "epoch",
                txid,
                f"re-baselined {how}: epoch {res.init.epoch} ended at {lsn_text(res.end)}; epoch {e.epoch} begins with "
                "a new baseline, and what changed in between is known only through it (verify --epoch "
                f"{e.epoch} accepts it)",
                epoch=e.epoch,
            )
        elif e.epoch != 1:
            raise VerificationError(f"the trail begins with epoch {e.epoch}", check="trail")
        self.db.execute("DELETE FROM rows")
        res.init, res.init_txid, res.baseline_txid = e, txid, None
        res.end, res.count = e.lsn, 0
        self._tables = {t.name: t for t in e.tables}
        self._baseline_lsn, self._baseline_seen, self._baseline_counts = None, {}, {}
        self._parts.clear()
        self._stopped = False

    def _baseline(self, e: Baseline, txid: TxId, digest: str) -> None:
        if self.result.baseline_done:
            self._find("inconsistency", txid, "a baseline entry after the epoch's baseline was complete")
            return
        if e.lsn != self._baseline_lsn:  # a new attempt: the earlier one never completed
            self.db.execute("DELETE FROM rows")
            self._baseline_lsn, self._baseline_seen, self._baseline_counts = e.lsn, {}, {}
        seen = self._baseline_seen.get(e.seq)
        if seen is not None:
            if seen != digest:
                raise VerificationError(
                    f"baseline entry {e.seq} at {txid} differs from its earlier copy", check="trail"
                )
            return
        self._baseline_seen[e.seq] = digest
        table = self._table(e.table, txid)
        width = len(table.columns)
        tid = str(txid)
        for row in e.rows:
            if len(row) != width or any(v is UNCHANGED for v in row):
                raise VerificationError(f"a baseline row of {e.table} at {txid} does not fit the table", check="trail")
        self._baseline_counts[e.table] = self._baseline_counts.get(e.table, 0) + len(e.rows)
        if table.identity == "full":  # the row is its key
            self.db.executemany(
                "INSERT INTO rows VALUES (?, ?, ?, 1, ?) ON CONFLICT (tbl, key) DO UPDATE SET n = n + 1",
                ((e.table, text, text, tid) for text in map(dumps, e.rows)),
            )
        else:
            try:
                self.db.executemany(
                    "INSERT INTO rows VALUES (?, ?, ?, 1, ?)",
                    ((e.table, key_of(table, row), dumps(row), tid) for row in e.rows),
                )
            except sqlite3.IntegrityError:
                raise VerificationError(
                    f"the baseline of {e.table} holds a key twice ({txid})", check="trail"
                ) from None

    def _baseline_end(self, e: BaselineEnd, txid: TxId) -> None:
        res = self.result
        if res.baseline_done:
            return  # sent again
        if e.lsn != self._baseline_lsn and not (e.entries == 0 and self._baseline_lsn is None):
            raise VerificationError(
                f"the baseline end at {txid} closes a baseline the trail does not hold", check="trail"
            )
        if sorted(self._baseline_seen) != list(range(e.entries)):
            raise VerificationError(
                f"the baseline closed at {txid} has {len(self._baseline_seen)} of its {e.entries} entries",
                check="trail",
            )
        if {k: v for k, v in e.counts.items() if v} != {k: v for k, v in self._baseline_counts.items() if v}:
            raise VerificationError(f"the baseline closed at {txid} does not hold the rows it counts", check="trail")
        res.baseline_txid = txid
        res.end = e.lsn

    def _table(self, name: str, txid: TxId) -> TableShape:
        t = self._tables.get(name)
        if t is None:
            raise VerificationError(f"{txid} changes table {name}, which the trail does not capture", check="trail")
        return t

    def _txs(self, e: Txs, txid: TxId) -> None:
        res = self.result
        if e.end <= res.end and e.txs:
            return  # sent again after a restart
        if e.start > res.end:
            self._find(
                "gap",
                txid,
                f"no entry covers {lsn_text(res.end)} to {lsn_text(e.start)}: transactions committed in between "
                "are not in the ledger",
            )
        for tx in e.txs:
            if tx.end <= res.end:
                continue
            if self.before is not None and tx.lsn >= self.before:
                self._past = True  # after the point compared at, and so is the rest of the trail
                return
            for change in tx.changes:
                self._apply(change, txid)
            res.count += 1
            res.last_commit_time = tx.time
        res.end = max(res.end, e.end)

    # -- applying one change --------------------------------------------------------------------

    def _get(self, table: str, key: str) -> tuple[list[Value], int] | None:
        row = self.db.execute("SELECT row, n FROM rows WHERE tbl = ? AND key = ?", (table, key)).fetchone()
        if row is None:
            return None
        return orjson.loads(row[0]), int(row[1])

    def _apply(self, c: Change, txid: TxId) -> None:
        tid = str(txid)
        if c.op == "T":
            for name in c.tables:
                self._table(name, txid)
                self.db.execute("DELETE FROM rows WHERE tbl = ?", (name,))
            return
        t = self._table(c.table, txid)
        width = len(t.columns)
        if c.op == "I":
            new = c.new or ()
            if len(new) != width or any(v is UNCHANGED for v in new):
                raise VerificationError(f"an insert into {c.table} at {txid} does not fit the table", check="trail")
            key = key_of(t, new)
            if t.identity == "full":
                self.db.execute(
                    "INSERT INTO rows VALUES (?, ?, ?, 1, ?) ON CONFLICT (tbl, key) DO UPDATE SET n = n + 1, txid = ?",
                    (c.table, key, dumps(new), tid, tid),
                )
                return
            cur = self.db.execute("INSERT OR IGNORE INTO rows VALUES (?, ?, ?, 1, ?)", (c.table, key, dumps(new), tid))
            if cur.rowcount != 1:
                self._find(
                    "inconsistency", str(txid), f"{txid} inserts into {c.table} a key the trail already holds: {key}"
                )
            return
        old_values = c.old
        if c.op == "U":
            new = c.new or ()
            if len(new) != width or (old_values is not None and len(old_values) != width):
                raise VerificationError(f"an update of {c.table} at {txid} does not fit the table", check="trail")
            old_key = key_of(t, old_values if old_values is not None else new)
            if t.identity == "key" and UNCHANGED not in new and old_values is None:
                cur = self.db.execute(
                    "UPDATE rows SET row = ?, txid = ? WHERE tbl = ? AND key = ?",
                    (dumps(new), tid, c.table, old_key),
                )
                if cur.rowcount != 1:
                    self._find(
                        "inconsistency", tid, f"{txid} updates a row of {c.table} the trail does not hold: {old_key}"
                    )
                return
            found = self._get(c.table, old_key)
            if found is None:
                self._find(
                    "inconsistency", tid, f"{txid} updates a row of {c.table} the trail does not hold: {old_key}"
                )
                return
            before, n = found
            resolved = [b if v is UNCHANGED else v for v, b in zip(new, before, strict=True)]
            self._remove(c.table, old_key, n)
            self._add(t, resolved, tid)
            return
        # delete
        if old_values is None or len(old_values) != width:
            raise VerificationError(f"{txid}: a row removed from {c.table} does not fit the table", check="trail")
        key = key_of(t, old_values)
        found = self._get(c.table, key)
        if found is None:
            self._find("inconsistency", tid, f"{txid} deletes a row of {c.table} the trail does not hold: {key}")
            return
        self._remove(c.table, key, found[1])

    def _remove(self, table: str, key: str, n: int) -> None:
        if n > 1:
            self.db.execute("UPDATE rows SET n = n - 1 WHERE tbl = ? AND key = ?", (table, key))
        else:
            self.db.execute("DELETE FROM rows WHERE tbl = ? AND key = ?", (table, key))

    def _add(self, t: TableShape, row: list[Value], tid: str) -> None:
        key = key_of(t, row)
        if t.identity == "full":
            self.db.execute(
                "INSERT INTO rows VALUES (?, ?, ?, 1, ?) ON CONFLICT (tbl, key) DO UPDATE SET n = n + 1, txid = ?",
                (t.name, key, dumps(row), tid, tid),
            )
        else:
            self.db.execute(
                "INSERT INTO rows VALUES (?, ?, ?, 1, ?)"
                " ON CONFLICT (tbl, key) DO UPDATE SET row = excluded.row, txid = excluded.txid",
                (t.name, key, dumps(row), tid),
            )

    # -- reading the state ----------------------------------------------------------------------

    def rows(self, table: str) -> Iterator[tuple[list[Value], int]]:
        for row, n in self.db.execute("SELECT row, n FROM rows WHERE tbl = ?", (table,)):
            yield orjson.loads(row), int(n)

    def count(self, table: str) -> int:
        row = self.db.execute("SELECT coalesce(sum(n), 0) FROM rows WHERE tbl = ?", (table,)).fetchone()
        return int(row[0]) if row else 0
