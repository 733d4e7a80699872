"""``notarium pg verify``: replay the trail from the ledger (every entry's receipt verified) and
compare the result with the live database, table by table, at one consistent point.

The consistent point is exact: a temporary logical replication slot is created with an exported
snapshot; the database is read in that snapshot, and the trail is replayed up to the snapshot's
LSN once the capture agent has recorded that far (waiting up to ``timeout``; the agent is nudged
with a progress message). Ordinary writes that go on meanwhile are after the point on both sides,
so they are never reported. The database's rows are read into their own SQLite file while the
trail is replayed into another, and the two are joined: memory stays flat.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg import sql

from notarium.pgtrail import database as pgdb
from notarium.pgtrail.capture import MESSAGE_PREFIX, _Stream
from notarium.pgtrail.errors import TrailError
from notarium.pgtrail.format import Init, TableShape, dumps
from notarium.pgtrail.pgoutput import Value, lsn_text
from notarium.pgtrail.prepare import require_trail
from notarium.pgtrail.replay import Finding, Replay, ReplayResult, key_of
from notarium.pgtrail.state import position_of
from notarium.pgtrail.trail import TrailLedger
from notarium.types import TxId


@dataclass(frozen=True, slots=True)
class Divergence:
    table: str
    key: dict[str, Value]
    ledger: dict[str, Value] | None  # None: the row is only in the database
    database: dict[str, Value] | None  # None: the row is only in the ledger
    txid: str | None  # the ledger entry that last changed the row
    ledger_count: int = 1
    database_count: int = 1

    @property
    def what(self) -> str:
        if self.ledger is None:
            return "only in the database"
        if self.database is None:
            return "only in the ledger"
        if self.ledger == self.database:
            return f"{self.ledger_count} in the ledger, {self.database_count} in the database"
        return "differs"

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "key": self.key,
            "what": self.what,
            "ledger": self.ledger,
            "database": self.database,
            "ledgerCount": self.ledger_count,
            "databaseCount": self.database_count,
            "lastChange": self.txid,
        }


@dataclass
class VerifyReport:
    database: str
    point: str  # the LSN compared at
    trail_end: str
    replay: ReplayResult
    tables: dict[str, int] = field(default_factory=dict)  # rows compared per table
    divergences: list[Divergence] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)  # gaps, epochs, stops, inconsistencies, lag

    accepted_epoch: int = 1  # --epoch: re-baselines up to this one are accepted, earlier epochs are history

    def alarming(self, f: Finding) -> bool:
        """A finding that fails verify: a gap, an inconsistency, a database behind its own trail,
        or a re-baseline nobody accepted; what belongs to epochs before the accepted one is history."""
        if f.kind not in {"gap", "inconsistency", "restored", "epoch"}:
            return False
        return f.epoch > self.accepted_epoch or (f.epoch == self.accepted_epoch and f.kind != "epoch")

    @property
    def tables_compared(self) -> tuple[TableShape, ...]:
        return self.replay.init.tables if self.replay.init is not None else ()

    @property
    def ok(self) -> bool:
        return not self.divergences and not any(self.alarming(f) for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        r = self.replay
        return {
            "ok": self.ok,
            "database": self.database,
            "comparedAt": self.point,
            "trailEnd": self.trail_end,
            "epoch": r.init.epoch if r.init else None,
            "baseline": None if r.baseline_txid is None else str(r.baseline_txid),
            "lastEntry": None if r.last_txid is None else str(r.last_txid),
            "transactions": r.count,
            "entries": r.entries,
            "tables": self.tables,
            "acceptedEpoch": self.accepted_epoch,
            "findings": [{**f.to_json(), "alarming": self.alarming(f)} for f in self.findings],
            "divergences": [d.to_json() for d in self.divergences],
        }


def _columns(t: TableShape, row: list[Value] | None) -> dict[str, Value] | None:
    if row is None:
        return None
    return {c.name: v for c, v in zip(t.columns, row, strict=True)}


def _key_columns(t: TableShape, key: str) -> dict[str, Value]:
    values = orjson.loads(key)
    names = [c.name for c in t.columns] if t.identity == "full" else list(t.key)
    return dict(zip(names, values, strict=True))


def _copy(conn: psycopg.Connection[Any], t: TableShape) -> Iterator[tuple[Any, ...]]:
    cols = sql.SQL(", ").join(sql.Identifier(c.name) for c in t.columns)
    query = sql.SQL("COPY (SELECT {} FROM ONLY {}) TO STDOUT").format(cols, pgdb.ident(t.name))
    with conn.cursor().copy(query) as copy:
        yield from copy.rows()


class _LiveRows:
    """The database's rows, as of the snapshot compared at, in their own SQLite file (``live``:
    table, key, row, how many times). Read in a worker thread while the main thread replays the
    trail: SQLite and the socket do their work without the GIL, so the two overlap on two cores."""

    def __init__(self, dsn: str, snapshot: str, path: Path) -> None:
        self.dsn, self.snapshot, self.path = dsn, snapshot, path
        self.counts: dict[str, int] = {}
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self, tables: tuple[TableShape, ...]) -> None:
        self._thread = threading.Thread(target=self._run, args=(tables,), name="pg-verify-live", daemon=True)
        self._thread.start()

    def _run(self, tables: tuple[TableShape, ...]) -> None:
        try:
            self.load(tables)
        except BaseException as exc:  # handed to the main thread by finish()
            self._error = exc

    def finish(self, tables: tuple[TableShape, ...]) -> None:
        """Wait for the worker; then read the tables it did not (the trail replayed to ``--at`` may
        describe other tables than its newest epoch)."""
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error
        self.load(tuple(t for t in tables if self.counts.get(t.name) is None))

    def stop(self) -> None:
        """Stop the worker (verify failed meanwhile) and wait for it: its file is about to go."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def load(self, tables: tuple[TableShape, ...]) -> None:
        if not tables:
            return
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            db.executescript(
                "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-65536;"
                "CREATE TABLE IF NOT EXISTS live(tbl TEXT NOT NULL, key TEXT NOT NULL, row TEXT NOT NULL,"
                " n INTEGER NOT NULL, PRIMARY KEY (tbl, key)) WITHOUT ROWID; BEGIN"
            )
            with pgdb.connect(self.dsn, autocommit=False) as snap:
                if self.snapshot:
                    snap.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    snap.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(self.snapshot)))
                for t in tables:
                    self.counts[t.name] = _load_table(db, snap, t, self._stop)
                snap.rollback()
            db.execute("COMMIT")
        finally:
            db.close()


def _load_table(db: sqlite3.Connection, conn: psycopg.Connection[Any], t: TableShape, stop: threading.Event) -> int:
    insert = "INSERT INTO live VALUES (?, ?, ?, 1) ON CONFLICT (tbl, key) DO UPDATE SET n = n + 1"
    n = 0
    batch: list[tuple[str, str, str]] = []
    full = t.identity == "full"
    for raw in _copy(conn, t):
        row = dumps(raw)
        batch.append((t.name, row if full else key_of(t, raw), row))  # a full identity's key is its row
        n += 1
        if len(batch) >= 5000:
            if stop.is_set():
                raise TrailError("verify stopped")
            db.executemany(insert, batch)
            batch = []
    db.executemany(insert, batch)
    return n


def compare(replay: Replay, live: _LiveRows, tables: tuple[TableShape, ...], report: VerifyReport) -> None:
    """List every difference between the replayed rows and the database's."""
    live.finish(tables)
    for t in tables:
        report.tables[t.name] = live.counts[t.name]
    db = replay.db
    db.execute("COMMIT")
    db.execute("ATTACH DATABASE ? AS db", (str(live.path),))
    db.execute("BEGIN")
    by_name = {t.name: t for t in tables}
    for tbl, key, lrow, ln, txid, drow, dn in db.execute(
        "SELECT r.tbl, r.key, r.row, r.n, r.txid, l.row, l.n FROM rows r"
        " LEFT JOIN db.live l ON l.tbl = r.tbl AND l.key = r.key"
        " WHERE l.key IS NULL OR l.row != r.row OR l.n != r.n ORDER BY r.tbl, r.key"
    ).fetchall():
        t = by_name[tbl]
        report.divergences.append(
            Divergence(
                tbl,
                _key_columns(t, key),
                _columns(t, orjson.loads(lrow)),
                _columns(t, None if drow is None else orjson.loads(drow)),
                txid,
                ln,
                dn or 0,
            )
        )
    for tbl, key, drow, dn in db.execute(
        "SELECT l.tbl, l.key, l.row, l.n FROM db.live l LEFT JOIN rows r ON r.tbl = l.tbl AND r.key = l.key"
        " WHERE r.key IS NULL ORDER BY l.tbl, l.key"
    ).fetchall():
        shape = by_name.get(tbl)
        if shape is None:  # read for the newest epoch, not one compared at --at
            continue
        report.divergences.append(
            Divergence(tbl, _key_columns(shape, key), None, _columns(shape, orjson.loads(drow)), None, 0, dn)
        )


def verify(
    dsn: str,
    ledger: TrailLedger,
    *,
    at: TxId | None = None,
    epoch: int = 1,
    timeout: float = 30.0,
    say: Callable[[str], None] = lambda _: None,
) -> VerifyReport:
    """Compare the database with the trail. ``at``: with the state recorded at that TxId (a
    database restored to it: it may live in another cluster, so its identity is not checked).
    ``epoch``: accept the re-baselines up to that epoch (what came before it is history)."""
    with pgdb.connect(dsn) as conn:
        db = pgdb.info(conn)
        _, init = require_trail(ledger, db, same_database=at is None)
        findings: list[Finding] = []
        slot_before = pgdb.slot(conn, init.slot)  # read before the trail: the agent confirms only what is Committed
        stream = None if at is not None else _Stream(dsn)
        try:
            if stream is not None:
                point, snapshot = stream.create_slot_with_snapshot(
                    f"notarium_verify_{os.getpid()}_temp", temporary=True
                )
            else:
                point, snapshot = pgdb.current_lsn(conn), ""
            with (
                tempfile.TemporaryDirectory(prefix="notarium-pg-verify-") as work,
                contextlib.closing(Replay(Path(work), before=point if stream is not None else None)) as replay,
            ):
                if stream is not None:
                    trail_end = _wait_for_trail(conn, ledger, init, point, timeout, say)
                    if trail_end < point:
                        findings.append(
                            Finding(
                                "behind",
                                None,
                                f"the trail ends at {lsn_text(trail_end)}, the database at {lsn_text(point)}: "
                                "changes in between are not captured yet (is pg capture running?) and show as "
                                "differences",
                                init.epoch,
                            )
                        )
                live = _LiveRows(dsn, snapshot, Path(work) / "live.sqlite")
                live.start(init.tables)  # the tables of the newest epoch; others, if need be, later
                try:
                    say(f"replaying the trail of {db.database} from the ledger")
                    result = replay.feed_all(ledger.read(last=at))
                    report = _report(conn, db, init, point, result, findings, slot_before, at, epoch)
                    tables = report.tables_compared
                    say(f"comparing {len(tables)} table(s) at {lsn_text(point)}")
                    compare(replay, live, tables, report)
                finally:
                    live.stop()
                return report
        finally:
            if stream is not None:
                stream.close()


def _report(
    conn: psycopg.Connection[Any],
    db: pgdb.DbInfo,
    init: Init,
    point: int,
    result: ReplayResult,
    findings: list[Finding],
    slot_before: pgdb.SlotInfo | None,
    at: TxId | None,
    epoch: int,
) -> VerifyReport:
    """The report of a replayed trail, with what the database and its slot say about continuity."""
    if result.init is None:
        raise TrailError("the trail holds no init entry")
    findings.extend(result.findings)
    report = VerifyReport(
        db.database, lsn_text(point), lsn_text(result.end), result, findings=findings, accepted_epoch=epoch
    )
    if epoch > result.init.epoch:
        raise TrailError(f"--epoch {epoch}: the trail's newest epoch is {result.init.epoch}")
    if not result.baseline_done:
        raise TrailError("the trail's baseline is not complete yet", hint="let pg capture run first")
    if at is None:
        now = pgdb.info(conn)  # after the trail was read: its end cannot be ahead of a live database
        _check_continuity(now, slot_before, result, init.slot, findings)
        problem = pgdb.publication_problem(conn, init.publication, [t.name for t in result.init.tables])
        if problem is not None:
            findings.append(Finding("gap", None, f"{problem}: changes it leaves out are not captured", init.epoch))
    return report


def _check_continuity(
    db: pgdb.DbInfo, slot: pgdb.SlotInfo | None, result: ReplayResult, name: str, findings: list[Finding]
) -> None:
    """What the database and its slot say about the trail's continuity."""
    init = result.init
    if init is None:
        return
    end = lsn_text(result.end)

    def find(kind: str, message: str) -> None:
        findings.append(Finding(kind, None, message, init.epoch))

    if db.timeline != init.timeline:
        find(
            "timeline",
            f"the database is on timeline {db.timeline}, the trail began on {init.timeline}: it was restored to a "
            "point in time or a standby was promoted",
        )
    if db.lsn < result.end:
        find(
            "restored",
            f"the database's WAL ends at {lsn_text(db.lsn)}, before the trail's {end}: it was restored "
            "from an older backup",
        )
    if slot is None:
        find(
            "gap",
            f"replication slot {name} no longer exists: it was dropped, so changes after {end} may never "
            "reach the ledger",
        )
    elif slot.wal_status == "lost":
        find(
            "gap",
            f"replication slot {name} was invalidated (it fell more than max_slot_wal_keep_size behind): the "
            f"WAL after {end} is gone before it reached the ledger",
        )
    elif slot.confirmed_flush is not None and slot.confirmed_flush > result.end:
        find(
            "gap",
            f"replication slot {name} was advanced to {lsn_text(slot.confirmed_flush)}, past the trail's end "
            f"{end}: transactions in between never reached the ledger",
        )


def _wait_for_trail(
    conn: psycopg.Connection[Any],
    ledger: TrailLedger,
    init: Any,
    point: int,
    timeout: float,
    say: Callable[[str], None],
) -> int:
    deadline = time.monotonic() + timeout
    nudged = False
    while True:
        latest = ledger.latest()
        end = position_of(latest.entry if latest else None, init).end
        if end >= point or time.monotonic() >= deadline:
            return end
        if not nudged:
            say(f"waiting for the trail to reach {lsn_text(point)} (now {lsn_text(end)})")
            with contextlib.suppress(psycopg.Error):
                conn.execute("SELECT pg_logical_emit_message(true, %s, 'verify')", (MESSAGE_PREFIX,))
            nudged = True
        time.sleep(0.1)
