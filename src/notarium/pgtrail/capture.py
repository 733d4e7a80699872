"""``notarium pg capture``: the agent that writes every committed transaction of the captured
tables into the ledger, in commit order, exactly once.

The contract (docs/design/pg-trail.md):

- first, once per epoch, a **baseline**: the slot is (re)created with an exported snapshot and
  the captured tables are read in that snapshot, so the baseline and the change stream fit with
  no gap and no overlap; ``baseline-end`` closes it;
- then the stream of ``pgoutput`` (protocol 1) from the slot: each committed transaction becomes
  a record; records are grouped into ``txs`` entries (a transaction too large for one entry is
  split into parts); each entry covers ``[from, to)`` and the next starts where it ended;
- the slot's confirmed position is advanced (standby status update, flush LSN) only to the end of
  an entry that is **Committed** in the ledger: a crash of the agent, the ledger or PostgreSQL
  loses nothing, and what is sent again is recognised by its LSN and skipped;
- when the database writes WAL but no captured transaction, the agent emits a transactional
  logical message (``pg_logical_emit_message``) and, when it comes back through the stream,
  records an empty ``txs`` entry: the covered range moves on and the slot can release WAL;
- a captured table whose shape changes stops capture with a ``stop`` entry naming it.
"""

from __future__ import annotations

import gc
import logging
import select
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import psycopg
import psycopg2
import psycopg2.extras

from notarium.client.errors import ClientError
from notarium.pgtrail import database as pgdb
from notarium.pgtrail import pgoutput as po
from notarium.pgtrail.errors import TrailError
from notarium.pgtrail.format import (
    Baseline,
    BaselineEnd,
    Change,
    Gap,
    Init,
    Stop,
    TableShape,
    Tx,
    Txs,
    change_line,
    dumps,
    encode,
    split_stream,
)
from notarium.pgtrail.prepare import require_trail
from notarium.pgtrail.state import TrailPosition, position_of
from notarium.pgtrail.trail import TrailLedger, retryable

log = logging.getLogger("notarium.pg.capture")
MESSAGE_PREFIX: Final = "notarium-pg"
PROGRESS_BYTES: Final = 16 << 20
PROGRESS_MIN_BYTES: Final = 8 << 10
DEFAULT_MAX_ENTRY: Final = 1 << 20
# While records wait for company, the socket is drained this often. Not once per transaction
# (a wake-up each cost the database's clients more CPU than reading did), and not once per batch
# window: the socket holds only some tens of kilobytes, and a walsender that finds it full stops
# decoding until it is read, so a longer sleep caps capture at a socketful per window.
DRAIN_SECONDS: Final = 0.01


@dataclass
class CaptureConfig:
    dsn: str
    max_entry_bytes: int = DEFAULT_MAX_ENTRY - 4096  # room for the JSON body around the contents
    batch_seconds: float = 0.25  # how long records wait for company before they are written
    batch_bytes: int = 256 * 1024
    progress_seconds: float = 10.0  # idle: how often the covered range may move on past foreign WAL
    stats: Path | None = None  # JSON lines: per written entry, the lag of each transaction
    once: bool = False  # stop once everything committed before capture started is recorded
    say: Callable[[str], None] = field(default=lambda text: log.warning("%s", text))


def _now_pg() -> int:
    """Microseconds since 2000-01-01 UTC, the unit of pgoutput's times."""
    return int((time.time() - po.PG_EPOCH.timestamp()) * 1_000_000)


class _Stream:
    """The replication connection (psycopg2's logical replication cursor)."""

    def __init__(self, dsn: str) -> None:
        try:
            self.conn = psycopg2.connect(
                dsn,
                connection_factory=psycopg2.extras.LogicalReplicationConnection,
                options=pgdb.SESSION_OPTIONS,
                application_name=pgdb.APPLICATION,
            )
        except psycopg2.OperationalError as exc:
            raise TrailError(f"cannot open a replication connection: {str(exc).strip().splitlines()[0]}") from None
        self.cur = self.conn.cursor()

    def create_slot_with_snapshot(self, slot: str, *, temporary: bool = False) -> tuple[int, str]:
        """Create the slot and export a snapshot of exactly its starting point (valid while this
        connection stays open and idle)."""
        kind = "TEMPORARY LOGICAL" if temporary else "LOGICAL"
        self.cur.execute(f"CREATE_REPLICATION_SLOT {pgdb.check_slot_name(slot)} {kind} pgoutput (SNAPSHOT 'export')")
        row = self.cur.fetchone()
        if row is None:
            raise TrailError("CREATE_REPLICATION_SLOT answered nothing")
        return po.parse_lsn(row[1]), str(row[2])

    def start(self, slot: str, publication: str) -> None:
        self.cur.start_replication(
            slot_name=slot,
            decode=False,
            start_lsn=0,
            status_interval=5,
            options={"proto_version": "1", "publication_names": publication, "messages": "true"},
        )

    def confirm(self, lsn: int) -> None:
        """Tell the server that the ledger holds every transaction that commits before ``lsn`` (the
        end of the last one recorded). The slot is told one byte less: once the client has confirmed
        the last message it received, psycopg2 moves the slot on by itself to the position of the
        server's keepalives, past WAL the trail does not cover, and the next start would see a gap.
        Nothing is sent twice for it: the last transaction's commit record begins before ``lsn - 1``."""
        mark = max(lsn - 1, 0)
        self.cur.send_feedback(write_lsn=mark, flush_lsn=mark, apply_lsn=mark, force=True)  # type: ignore[no-untyped-call]

    def keepalive(self) -> None:
        """A status update now (the positions already confirmed): the server drops a replication
        connection it has not heard from for ``wal_sender_timeout``, e.g. while the ledger is down.
        Without ``force``, psycopg2 only records it for the next read, which does not come then."""
        self.cur.send_feedback(force=True)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        self.conn.close()


class Agent:
    """One capture session; :meth:`run` goes on across database and ledger outages."""

    def __init__(self, config: CaptureConfig, ledger: TrailLedger, stop: threading.Event | None = None) -> None:
        self.config = config
        self.ledger = ledger
        self.stop = stop or threading.Event()
        self.say = config.say
        self._stats = config.stats.open("a") if config.stats else None

    # -- the outer loop: outages ---------------------------------------------------------------

    def run(self) -> int:
        delay = 1.0
        while not self.stop.is_set():
            try:
                self._session()
                return 0
            except (psycopg.OperationalError, psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                self.say(f"PostgreSQL is not available ({text}); reconnecting in {delay:.0f} s")
            except psycopg2.DatabaseError as exc:
                # the bare DatabaseError, without an SQLSTATE: psycopg2's word for a replication
                # connection that is gone (a status update on a connection the server has closed)
                if type(exc) is not psycopg2.DatabaseError or exc.pgcode is not None:
                    raise
                self.say(
                    f"PostgreSQL is not available (the replication connection was lost); reconnecting in {delay:.0f} s"
                )
            except TrailError as exc:
                if "cannot connect" not in str(exc) and "replication connection" not in str(exc):
                    raise
                self.say(f"{exc}; reconnecting in {delay:.0f} s")
            except ClientError as exc:
                if not retryable(exc):
                    raise
                self.say(f"the ledger is not available ({exc}); retrying in {delay:.0f} s")
            if self.stop.wait(delay):
                break
            delay = min(delay * 2, 30.0)
        return 0

    # -- one session ---------------------------------------------------------------------------

    def _session(self) -> None:
        with pgdb.connect(self.config.dsn) as conn:
            db = pgdb.info(conn)
            _, init = require_trail(self.ledger, db)
            latest = self.ledger.latest()
            pos = position_of(latest.entry if latest else None, init)
            if pos.stopped is not None:
                raise TrailError(
                    f"capture stopped at {po.lsn_text(pos.stopped.lsn)}: {pos.stopped.reason}",
                    hint="pg init --rebaseline records the new shape and starts a new epoch with a new baseline",
                )
            if not pos.baseline_done:
                self._baseline(conn, init)
                if not self.stop.is_set():
                    self._session()
                return
            now = pgdb.current_lsn(conn)  # read after the trail's end: a live database is never behind it
            if now < pos.end:
                raise TrailError(
                    f"the database's WAL ends at {po.lsn_text(now)}, before the trail's {po.lsn_text(pos.end)}: "
                    "it was restored from an older backup",
                    hint="pg verify shows what differs; pg restore rebuilds it from the ledger",
                )
            info = pgdb.slot(conn, init.slot)
            if info is None:
                raise TrailError(
                    f"replication slot {init.slot} no longer exists: it was dropped, and changes after "
                    f"{po.lsn_text(pos.end)} may never reach the ledger",
                    hint="pg verify reports the gap; pg init --rebaseline starts a new epoch",
                )
            if info.active:
                raise TrailError(f"replication slot {init.slot} is in use by another process", hint="stop it first")
            if info.wal_status == "lost":
                raise TrailError(
                    f"replication slot {init.slot} was invalidated: it fell more than max_slot_wal_keep_size behind, "
                    f"and the WAL after {po.lsn_text(pos.end)} is gone, so the trail has a gap",
                    hint="pg verify reports it; pg init --rebaseline starts a new epoch (and raise "
                    "max_slot_wal_keep_size or keep capture running)",
                )
            if info.confirmed_flush is not None and info.confirmed_flush > pos.end:
                gap = Gap(
                    init.epoch,
                    pos.end,
                    info.confirmed_flush,
                    pos.count,
                    "the slot was advanced past LSNs the ledger never received",
                )
                txid = self.ledger.append_retrying(gap, say=self.say)
                self.say(
                    f"GAP: slot {init.slot} confirms {po.lsn_text(info.confirmed_flush)} but the trail ends at "
                    f"{po.lsn_text(pos.end)}; recorded at {txid}; capture goes on from the slot"
                )
                pos = TrailPosition(True, info.confirmed_flush, pos.count)
            problem = pgdb.publication_problem(conn, init.publication, [t.name for t in init.tables])
            if problem is not None:
                raise TrailError(problem, hint="pg init --rebaseline records what is published now")
            _Streamer(self, conn, init, pos).run()

    # -- the baseline ---------------------------------------------------------------------------

    def _baseline(self, conn: psycopg.Connection[Any], init: Init) -> None:
        info = pgdb.slot(conn, init.slot)
        if info is not None and info.active:
            raise TrailError(f"replication slot {init.slot} is in use by another process", hint="stop it first")
        if info is not None:
            pgdb.drop_slot(conn, init.slot)  # never consumed: the epoch has no baseline yet
        stream = _Stream(self.config.dsn)
        try:
            lsn, snapshot = stream.create_slot_with_snapshot(init.slot)
            self.say(f"baseline of {len(init.tables)} table(s) at {po.lsn_text(lsn)}")
            counts: dict[str, int] = {}
            seq = 0
            pending = []
            with pgdb.connect(self.config.dsn, autocommit=False) as snap:
                snap.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                snap.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
                for table in init.tables:
                    counts[table.name] = 0
                    rows: list[tuple[po.Value, ...]] = []
                    size = 0
                    for row in _copy_rows(snap, table):
                        # the row's size as the entry holds it (UTF-8, JSON escapes); the entry is
                        # written before a row would take it past the limit
                        row_size = len(dumps(row).encode()) + 1
                        if rows and size + row_size > self.config.max_entry_bytes - 1024:
                            pending.append(
                                self._append_baseline(Baseline(init.epoch, lsn, table.name, seq, tuple(rows)))
                            )
                            seq, rows, size = seq + 1, [], 0
                        rows.append(row)
                        size += row_size
                        counts[table.name] += 1
                    if rows or counts[table.name] == 0:
                        pending.append(self._append_baseline(Baseline(init.epoch, lsn, table.name, seq, tuple(rows))))
                        seq += 1
                snap.rollback()
            for txid in pending:  # every part Committed before the end says the baseline is whole
                self.ledger.wait_committed(txid)
            end = self.ledger.append_retrying(BaselineEnd(init.epoch, lsn, counts, seq), say=self.say)
            self.say(f"baseline done: {sum(counts.values())} rows in {seq} entries, closed at {end}")
        finally:
            stream.close()

    def _append_baseline(self, entry: Baseline) -> Any:
        text = encode(entry)
        if len(text.encode()) > self.config.max_entry_bytes:
            # a few very large rows: halve the entry
            if len(entry.rows) == 1:
                raise TrailError(f"a row of {entry.table} is larger than --max-entry-bytes")
            raise TrailError("internal: baseline entry too large")
        delay = 0.5
        while True:
            try:
                return self.ledger.append(entry, wait=False)
            except ClientError as exc:
                if not retryable(exc):
                    raise
                self.say(f"the ledger is not available ({exc}); retrying in {delay:.0f} s")
                time.sleep(delay)
                delay = min(delay * 2, 30.0)

    def record_stats(self, txs: tuple[Tx, ...], commit_times: list[int], written_at: int) -> None:
        if self._stats is None or not txs:
            return
        lags = [round((written_at - t) / 1000, 1) for t in commit_times]
        self._stats.write(dumps({"at": time.time(), "n": len(txs), "lagMs": lags}) + "\n")
        self._stats.flush()


def _copy_rows(conn: psycopg.Connection[Any], table: TableShape) -> Any:
    cols = psycopg.sql.SQL(", ").join(psycopg.sql.Identifier(c.name) for c in table.columns)
    query = psycopg.sql.SQL("COPY (SELECT {} FROM ONLY {}) TO STDOUT").format(cols, pgdb.ident(table.name))
    with conn.cursor().copy(query) as copy:
        yield from copy.rows()


class _Streamer:
    """Reads the slot's stream and writes entries; one per session."""

    def __init__(self, agent: Agent, conn: psycopg.Connection[Any], init: Init, pos: TrailPosition) -> None:
        self.agent = agent
        self.config = agent.config
        self.conn = conn  # an ordinary connection: progress messages
        self.init = init
        self.ledger = agent.ledger
        self.end = pos.end  # everything committed before this is in the ledger
        self.count = pos.count
        self.relations: dict[int, TableShape] = {}
        self.pending: list[Tx] = []
        self.pending_times: list[int] = []
        self.pending_bytes = 0
        self.batch_started = 0.0
        self.covered = pos.end  # the end of the last record seen (pending included)
        self.begin: po.Begin | None = None
        self.changes: list[Change] = []
        self.tx_bytes = 0
        self.spool: IO[str] | None = None  # the changes of a transaction larger than an entry
        self.saw_message = False
        self.last_write = time.monotonic()
        self.progress_asked = 0.0
        self.once_target: int | None = pgdb.current_lsn(conn) if agent.config.once else None

    def run(self) -> None:
        stream = _Stream(self.config.dsn)
        self.stream = stream
        try:
            stream.start(self.init.slot, self.init.publication)
            if self.end:
                stream.confirm(self.end)
            self.agent.say(f"capturing {self.init.database} from {po.lsn_text(self.end)} (epoch {self.init.epoch})")
            # what is loaded now lives as long as the session: out of the collector's way (its full
            # collections walked every module's objects, a cost paid per transaction streamed)
            gc.collect()
            gc.freeze()
            stop, read, parse, row_change = self.agent.stop, stream.cur.read_message, po.parse, po.RowChange
            while not stop.is_set():
                msg = read()
                if msg is None:
                    if self.pending and self.begin is None:
                        # group commit: records wait up to batch_seconds for company, so that under
                        # load the ledger gets a few large entries rather than one per round trip;
                        # meanwhile the socket is drained every DRAIN_SECONDS
                        left = self.batch_started + self.config.batch_seconds - time.monotonic()
                        if left <= 0:
                            self.flush()
                        else:
                            stop.wait(min(left, DRAIN_SECONDS))
                        continue
                    if self.begin is None and self.idle():
                        return
                    select.select([stream.cur], [], [], 0.2)
                    continue
                payload = msg.payload
                m = parse(payload)
                if type(m) is row_change:  # most messages
                    self.change(m, len(payload))
                else:
                    self.handle(m, len(payload))
                if self.pending and (
                    self.pending_bytes >= self.config.batch_bytes
                    or time.monotonic() - self.batch_started >= self.config.batch_seconds
                ):
                    self.flush()
            if self.pending:
                self.flush()
        finally:
            stream.close()

    # -- messages -------------------------------------------------------------------------------

    def change(self, c: po.RowChange, size: int) -> None:
        """A row change of ``size`` bytes. Its size estimate (:meth:`add`) is its message's size
        plus 4 a value: at least the characters its values take in the entry (a text value has 5
        bytes of header where JSON adds 3 characters; a NULL or unchanged marker 1 byte, ``null``
        4 characters, ``{"unchanged":true}`` 18). It sizes batches and finds the transactions too
        large for one entry; an entry itself is measured exactly before it is written
        (:meth:`_write_group`)."""
        relation = self.relations.get(c.relid)
        if relation is None:
            raise TrailError(f"the stream changed relation {c.relid} before describing it")
        values = (len(c.new) if c.new is not None else 0) + (len(c.old) if c.old is not None else 0)
        self.add(Change(c.op, relation.name, c.new, c.old), size + 4 * values)

    def handle(self, m: po.PgMessage, size: int) -> None:
        """Any message of ``size`` bytes."""
        if isinstance(m, po.RowChange):
            self.change(m, size)
        elif isinstance(m, po.Begin):
            self.begin, self.changes, self.tx_bytes, self.saw_message = m, [], 0, False
            self.drop_spool()
        elif isinstance(m, po.Commit):
            self.commit(m)
        elif isinstance(m, po.Relation):
            self.relation(m)
        elif isinstance(m, po.Truncate):
            names = tuple(self.table(r).name for r in m.relids)
            self.add(Change("T", ",".join(names), tables=names), sum(len(t) + 3 for t in names))
        elif isinstance(m, po.Message) and m.prefix == MESSAGE_PREFIX:
            self.saw_message = True

    def table(self, relid: int) -> TableShape:
        t = self.relations.get(relid)
        if t is None:
            raise TrailError(f"the stream changed relation {relid} before describing it")
        return t

    def add(self, change: Change, estimate: int) -> None:
        self.tx_bytes += 32 + estimate
        if self.spool is None and self.tx_bytes > self.config.max_entry_bytes:
            # larger than an entry: it will be written as parts; keep it on disk, not in memory
            self.spool = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115  (closed at the next Begin)
            for c in self.changes:
                self.spool.write(change_line(c) + "\n")
            self.changes = []
        if self.spool is not None:
            self.spool.write(change_line(change) + "\n")
        else:
            self.changes.append(change)

    def relation(self, r: po.Relation) -> None:
        recorded = self.init.table(r.qualified)
        if recorded is None:
            self.stop_for(r.qualified, f"table {r.qualified} is published but not recorded in the trail")
        assert_shape = [(c.name, c.oid) for c in recorded.columns] if recorded else []
        seen = [(c.name, c.type_oid) for c in r.columns]
        full = r.replica_identity == "f"
        keys = tuple(c.name for c in r.columns if c.key)
        if (
            recorded is None
            or seen != assert_shape
            or full != (recorded.identity == "full")
            or (not full and keys != recorded.key)
        ):
            self.stop_for(
                r.qualified,
                f"table {r.qualified} changed shape (columns now {', '.join(n for n, _ in seen)}; "
                f"identity {'full' if full else ','.join(keys) or 'none'})",
            )
        if recorded is not None:
            self.relations[r.relid] = recorded

    def stop_for(self, table: str, reason: str) -> None:
        if self.pending:
            self.flush()
        lsn = self.begin.final_lsn if self.begin else self.end
        txid = self.ledger.append_retrying(
            Stop(self.init.epoch, lsn, table, reason), say=self.agent.say, keepalive=self.stream.keepalive
        )
        raise TrailError(
            f"capture stopped: {reason} (DDL on a captured table); recorded at {txid}",
            hint="pg init --rebaseline records the new shape and takes a new baseline; pg verify reports the boundary",
        )

    def commit(self, c: po.Commit) -> None:
        begin, self.begin = self.begin, None
        if begin is None:
            raise TrailError("the stream sent a commit without a begin")
        if c.end_lsn <= self.end or c.end_lsn <= self.covered:
            return  # already in the ledger (sent again after a restart)
        if not self.changes and self.spool is None:
            if self.saw_message:  # our progress message: everything before it has been seen
                self.covered = c.end_lsn
                if not self.pending:
                    self.write(Txs(self.init.epoch, self.end, c.end_lsn, self.count, ()), [])
            return
        tx = Tx(begin.xid, c.commit_lsn, c.end_lsn, po.pg_time_text(c.commit_time), tuple(self.changes))
        self.changes = []
        if self.spool is not None or self.tx_bytes + 256 > self.config.max_entry_bytes:
            self.large(tx, c.commit_time)
            return
        if not self.pending:
            self.batch_started = time.monotonic()
        self.pending.append(tx)
        self.pending_times.append(c.commit_time)
        self.pending_bytes += self.tx_bytes
        self.covered = c.end_lsn

    def drop_spool(self) -> None:
        if self.spool is not None:
            self.spool.close()
            self.spool = None

    def spooled_lines(self) -> Iterator[str]:
        spool = self.spool
        if spool is None:
            return
        spool.seek(0)
        for line in spool:
            yield line.rstrip("\n")

    def large(self, tx: Tx, commit_time: int) -> None:
        """A transaction too large for one entry: parts, from memory or from the spool file."""
        if self.pending:
            self.flush()
        count = self.count + 1
        # the spool holds the changes of the transaction just committed (its own are then empty); a
        # pending one found too large when flushed, maybe while another is being spooled, has its own
        spooled = self.spool is not None and not tx.changes
        if spooled:
            lines: Callable[[], Iterable[str]] = self.spooled_lines
        else:
            lines = lambda: (change_line(c) for c in tx.changes)  # noqa: E731
        for part in split_stream(self.init.epoch, self.end, count, tx, lines, self.config.max_entry_bytes):
            self.ledger.append_retrying(part, say=self.agent.say, keepalive=self.stream.keepalive)
        if spooled:
            self.drop_spool()
        self.end = self.covered = tx.end
        self.count = count
        self.stream.confirm(tx.end)
        self.last_write = time.monotonic()
        self.agent.record_stats((tx,), [commit_time], _now_pg())

    def flush(self) -> None:
        """Write the pending records: one entry, or halves of them while an entry would be too large."""
        txs, times = tuple(self.pending), self.pending_times
        self.pending, self.pending_times, self.pending_bytes = [], [], 0
        self._write_group(txs, times, last=True)

    def _write_group(self, txs: tuple[Tx, ...], times: list[int], *, last: bool) -> None:
        end = max(txs[-1].end, self.covered) if last else txs[-1].end
        entry = Txs(self.init.epoch, self.end, end, self.count + len(txs), txs)
        text = encode(entry)  # once: the text measured is the text appended
        if len(text.encode()) > self.config.max_entry_bytes:
            if len(txs) == 1:  # one transaction too large for an entry: in parts
                self.large(txs[0], times[0])
                return
            half = len(txs) // 2
            self._write_group(txs[:half], times[:half], last=False)
            self._write_group(txs[half:], times[half:], last=last)
            return
        self.write(entry, times, text)

    def write(self, entry: Txs, times: list[int], text: str | None = None) -> None:
        self.ledger.append_retrying(entry, text=text, say=self.agent.say, keepalive=self.stream.keepalive)
        self.end = entry.end
        self.covered = max(self.covered, entry.end)
        self.count = entry.count
        self.stream.confirm(entry.end)
        self.last_write = time.monotonic()
        self.agent.record_stats(entry.txs, times, _now_pg())

    def idle(self) -> bool:
        """Nothing to read. Move the covered range on past WAL that holds no captured change (so
        the slot can release it) when there is enough of it: 16 MiB, or 8 KiB and a while since the
        last entry (less would be the server's own housekeeping, which our message itself causes).
        True: stop (``once``, and everything committed before the start is recorded)."""
        now = time.monotonic()
        if self.once_target is not None and self.end >= self.once_target:
            return True
        if now - self.progress_asked < 1.0:
            return False
        ahead = pgdb.current_lsn(self.conn) - self.end
        quiet = now - self.last_write >= self.config.progress_seconds
        if ahead >= PROGRESS_BYTES or (ahead >= PROGRESS_MIN_BYTES and quiet) or self.once_target is not None:
            self.progress_asked = now
            self.conn.execute("SELECT pg_logical_emit_message(true, %s, 'progress')", (MESSAGE_PREFIX,))
        return False
