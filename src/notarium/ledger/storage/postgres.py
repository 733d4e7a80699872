"""The replicated ledger log in PostgreSQL (docs/design/ha.md).

Schema ``notarium``: ``tx`` (one row per transaction: the exact bytes of a chunk file entry),
``lease`` (one row: who sequences, in which view, until when by PostgreSQL's clock), ``nodes``
(where nodes are; operational only) and ``meta`` (the schema version).

**Fencing.** Every write transaction (:meth:`PostgresLog.append`, :meth:`PostgresLog.truncate_after`)
first takes the lease row ``FOR UPDATE`` and checks that the writer still holds ``(view, holder)``;
otherwise it rolls back and raises :class:`FencedError`. A takeover (:meth:`PostgresLog.try_acquire`)
updates that same row, so the row lock orders every write against every takeover: a write that
committed before the takeover is seen by the new primary; a write after it fails the check. A
deposed primary can therefore never write, whatever its clock or its network says. Expiry is
judged by PostgreSQL's ``now()`` only, never by a node's clock.

This module moves rows; it does not judge them (the engine verifies what it reads). It is
synchronous and thread-safe: one connection serves reads and writes (calls are serialised), a
second one is dedicated to ``LISTEN``.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import psycopg
from psycopg import conninfo as pg_conninfo
from psycopg import sql
from psycopg.rows import TupleRow

from notarium.errors import FencedError, StorageError, StoreUnavailableError

SCHEMA_VERSION = 1
NOTIFY_CHANNEL = "notarium_tx"
DEFAULT_SCHEMA = "notarium"
# a schema name notarium makes (lower-case, unquoted): also safe to format into SQL text
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,54}")
_MAX_SEQNO = 2**63 - 1
_SCHEMA_LOCK = 0x6E6F746172697531  # pg_advisory_xact_lock key: creating the schema is serialised
# SQLSTATE classes of a server that cannot serve right now: connection exception, insufficient
# resources (too many connections…), operator intervention (shutting down, starting up, crashed)
_UNAVAILABLE_CLASSES = frozenset({"08", "53", "57"})

Row = tuple[int, int, bool, bytes]
"""(seqno, view, is_signature, data)."""

_T = TypeVar("_T")
Conn = psycopg.Connection[TupleRow]

_CREATE = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.tx (
    seqno bigint PRIMARY KEY,
    view bigint NOT NULL,
    signature boolean NOT NULL,
    data bytea NOT NULL
);
CREATE INDEX IF NOT EXISTS tx_signatures ON {s}.tx (seqno) WHERE signature;
CREATE TABLE IF NOT EXISTS {s}.lease (
    id smallint PRIMARY KEY CHECK (id = 1),
    view bigint NOT NULL,
    holder text,
    address text,
    expires timestamptz
);
INSERT INTO {s}.lease (id, view) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS {s}.nodes (
    node_id text PRIMARY KEY,
    address text NOT NULL,
    last_seen timestamptz NOT NULL
);
"""


@dataclass(frozen=True)
class Lease:
    """The lease row. ``expires_in_s`` is by PostgreSQL's clock (negative once expired), None if no holder."""

    view: int
    holder: str | None
    address: str | None
    expires_in_s: float | None


class PostgresLog:
    """The ledger log, the lease and the node directory in one PostgreSQL database.

    ``dsn`` is a libpq URL or ``key=value`` string; it may name several hosts, in which case
    ``target_session_attrs=read-write`` is added (unless given) so that a reconnection after a
    PostgreSQL failover finds the new primary. A call that fails because the connection dropped
    is retried once on a fresh connection when that is safe: reads, the lease and heartbeat
    statements (idempotent), and a write whose ``COMMIT`` was not sent (it cannot have committed).
    A connection lost *during* ``COMMIT`` leaves the outcome unknown: :class:`StoreUnavailableError`, and
    the caller re-reads the tail. A server that cannot be reached (refused, lost, starting or
    stopping) raises :class:`StoreUnavailableError`, any other failure :class:`StorageError`.

    ``connect=False`` connects (and checks the schema) only at the first call, so a node can open
    while PostgreSQL is down and retry (docs/design/ha.md, "When PostgreSQL is unreachable").

    ``schema`` holds the tables (default ``notarium``); a ledger host keeps each hosted ledger's
    log in a schema of its own (docs/design/host.md), notified on the channel ``{schema}_tx``.
    """

    @property
    def schema(self) -> str:
        return self._schema

    def __init__(
        self, dsn: str, *, connect_timeout: float = 5.0, connect: bool = True, schema: str = DEFAULT_SCHEMA
    ) -> None:
        if not _SCHEMA_NAME.fullmatch(schema):
            raise StorageError(f"invalid schema name {schema[:64]!r}: lower-case letters, digits and _, at most 55")
        self._schema = schema
        # the default schema keeps its historical channel; another schema (a hosted ledger's) has its own
        self._channel = NOTIFY_CHANNEL if schema == DEFAULT_SCHEMA else f"{schema}_tx"
        try:
            params: dict[str, Any] = pg_conninfo.conninfo_to_dict(dsn)
        except psycopg.Error:
            raise StorageError("invalid PostgreSQL connection string (not shown: it may hold a password)") from None
        self._password = str(params.get("password") or "")
        self._redacted = _redact_dsn(dsn, self._password)
        if len(str(params.get("host", "")).split(",")) > 1:
            params.setdefault("target_session_attrs", "read-write")
        params.setdefault("connect_timeout", max(2, math.ceil(connect_timeout)))
        params.setdefault("application_name", "notarium")
        # a server gone silent (network partition) fails calls in seconds instead of TCP's minutes
        for key, value in (("keepalives_idle", 10), ("keepalives_interval", 5), ("keepalives_count", 3)):
            params.setdefault(key, value)
        params.setdefault("tcp_user_timeout", 30_000)
        self._conninfo = pg_conninfo.make_conninfo(**params)
        self._lock = threading.Lock()
        self._listen_lock = threading.Lock()
        self._conn: Conn | None = None
        self._listen: Conn | None = None
        self._closed = False
        self._schema_checked = False
        if connect:
            try:
                self._retrying(lambda _conn: None)
            except BaseException:
                self.close()
                raise

    @property
    def redacted_dsn(self) -> str:
        """The connection string with its password replaced by ``***``, for logs."""
        return self._redacted

    # -- connections -----------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        if self._password:
            for form in {self._password, quote(self._password, safe="")}:
                text = text.replace(form, "***")
        return text

    def _error(self, what: str, exc: BaseException, *, unavailable: bool = False) -> StorageError:
        """A :class:`StorageError` (:class:`StoreUnavailableError` when the server cannot serve right now)."""
        sqlstate = getattr(exc, "sqlstate", None) or ""
        kind = StoreUnavailableError if unavailable or sqlstate[:2] in _UNAVAILABLE_CLASSES else StorageError
        return kind(self._redact(f"{what} ({self._redacted}): {exc}".strip()))

    def _connect(self) -> Conn:
        if self._closed:
            raise StorageError(f"PostgresLog is closed ({self._redacted})")
        try:
            return psycopg.connect(self._conninfo, autocommit=True)
        except psycopg.Error as e:
            # from None: the original error may quote the connection string
            raise self._error("cannot connect to PostgreSQL", e, unavailable=True) from None

    def _session(self) -> Conn:
        """The connection for reads and writes (``_lock`` held): a new one if there is none; the
        schema is checked (created if missing) on the first one."""
        if self._conn is None:
            conn = self._connect()
            if not self._schema_checked:
                try:
                    self._ensure_schema(conn)
                except psycopg.Error as e:
                    lost = self._lost(conn)
                    conn.close()
                    raise self._error("cannot check the notarium schema", e, unavailable=lost) from e
                except BaseException:
                    conn.close()
                    raise
                self._schema_checked = True
            self._conn = conn
        return self._conn

    @staticmethod
    def _lost(conn: Conn) -> bool:
        return conn.closed or conn.broken

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _retrying(self, op: Callable[[Conn], _T]) -> _T:
        """Run ``op`` (safe to run twice) on the connection; once more on a fresh one if it dropped."""
        with self._lock:
            for attempt in range(2):
                conn = self._session()
                try:
                    return op(conn)
                except psycopg.Error as e:
                    if not self._lost(conn):
                        raise self._error("PostgreSQL error", e) from e
                    self._drop()
                    if attempt == 1:
                        raise self._error("PostgreSQL connection lost", e, unavailable=True) from e
            raise StorageError("unreachable")  # pragma: no cover

    def _fenced(self, view: int, holder: str, body: Callable[[psycopg.Cursor[TupleRow]], _T]) -> _T:
        """Run ``body`` in one transaction that first checks, row locked, that ``(view, holder)`` holds the lease."""
        with self._lock:
            for attempt in range(2):
                conn = self._session()
                committing = False
                try:
                    with conn.transaction(), conn.cursor() as cur:
                        cur.execute(_sql("SELECT view, holder FROM {s}.lease WHERE id = 1 FOR UPDATE", self._schema))
                        row = cur.fetchone()
                        if row is None or (row[0], row[1]) != (view, holder):
                            current = "missing" if row is None else f"view {row[0]}, holder {row[1]!r}"
                            raise FencedError(f"fenced: lease is {current}, not view {view}, holder {holder!r}")
                        result = body(cur)
                        committing = True  # leaving the block sends COMMIT
                    return result
                except psycopg.Error as e:
                    if not self._lost(conn):
                        raise self._error("PostgreSQL write failed, nothing written", e) from e
                    self._drop()
                    if committing:
                        raise self._error(
                            "PostgreSQL connection lost during COMMIT: outcome unknown, re-read the tail",
                            e,
                            unavailable=True,
                        ) from e
                    if attempt == 1:
                        raise self._error("PostgreSQL connection lost, nothing written", e, unavailable=True) from e
            raise StorageError("unreachable")  # pragma: no cover

    def _ensure_schema(self, conn: Conn) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [_SCHEMA_LOCK])
            found = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [f"{self._schema}.meta"]).fetchone()
            version: int | None = None
            if found is not None and found[0]:
                row = conn.execute(
                    _sql("SELECT value FROM {s}.meta WHERE key = 'schema_version'", self._schema)
                ).fetchone()
                version = None if row is None else int(row[0])
            if version is None:
                conn.execute(_sql(_CREATE, self._schema))
                conn.execute(
                    _sql("INSERT INTO {s}.meta (key, value) VALUES ('schema_version', %s)", self._schema),
                    [str(SCHEMA_VERSION)],
                )
            elif version > SCHEMA_VERSION:
                raise StorageError(
                    f"the notarium schema in PostgreSQL is version {version}, newer than this notarium "
                    f"(version {SCHEMA_VERSION}): upgrade notarium ({self._redacted})"
                )

    def close(self) -> None:
        """Close both connections. Further calls raise :class:`StorageError`."""
        self._closed = True
        with self._lock:
            self._drop()
        with self._listen_lock:
            if self._listen is not None:
                self._listen.close()
                self._listen = None

    def __enter__(self) -> PostgresLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the log -------------------------------------------------------------------------------------

    def append(self, view: int, holder: str, rows: Sequence[Row]) -> None:
        """Append ``rows`` (contiguous seqnos, the first one right after the stored tail), fenced.

        One transaction: lock the lease row and check ``(view, holder)`` (else :class:`FencedError`),
        check the first seqno is the stored last + 1 (else :class:`StorageError`), ``COPY`` the rows,
        ``NOTIFY notarium_tx`` with the last seqno, ``COMMIT``. Durable when it returns (as the
        server's ``synchronous_commit`` makes commits durable). Nothing is written on any error.
        """
        if not rows:
            return
        first = rows[0][0]
        for i, row in enumerate(rows):
            if row[0] != first + i:
                raise ValueError(f"rows are not contiguous: seqno {row[0]} at position {i} after {first}")
        last = first + len(rows) - 1

        def body(cur: psycopg.Cursor[TupleRow]) -> None:
            stored = _last_seqno(cur, self._schema)
            if first != stored + 1:
                kind = "gap" if first > stored + 1 else "overlap"
                raise StorageError(f"append refused ({kind}): first seqno {first}, stored tail {stored}")
            with cur.copy(
                _sql("COPY {s}.tx (seqno, view, signature, data) FROM STDIN (FORMAT BINARY)", self._schema)
            ) as copy:
                copy.set_types(["int8", "int8", "bool", "bytea"])
                for row in rows:
                    copy.write_row(row)
            cur.execute("SELECT pg_notify(%s, %s)", [self._channel, str(last)])

        self._fenced(view, holder, body)

    def truncate_after(self, view: int, holder: str, seqno: int) -> int:
        """Delete the rows after ``seqno``, fenced like :meth:`append`; return how many were deleted."""

        def body(cur: psycopg.Cursor[TupleRow]) -> int:
            cur.execute(_sql("DELETE FROM {s}.tx WHERE seqno > %s", self._schema), [seqno])
            return cur.rowcount

        return self._fenced(view, holder, body)

    def read(self, start: int, end: int | None = None, limit: int = 10_000) -> list[Row]:
        """Rows with ``start <= seqno`` (``<= end`` if given), ascending, at most ``limit``."""

        def op(conn: Conn) -> list[Row]:
            with conn.cursor(binary=True) as cur:
                cur.execute(
                    _sql(
                        "SELECT seqno, view, signature, data FROM {s}.tx"
                        " WHERE seqno >= %s AND seqno <= %s ORDER BY seqno LIMIT %s",
                        self._schema,
                    ),
                    [start, _MAX_SEQNO if end is None else end, limit],
                )
                return [(r[0], r[1], r[2], r[3]) for r in cur.fetchall()]

        return self._retrying(op)

    def last_seqno(self) -> int:
        """The last stored seqno, 0 if the log is empty."""

        def op(conn: Conn) -> int:
            with conn.cursor() as cur:
                return _last_seqno(cur, self._schema)

        return self._retrying(op)

    def last_signature(self) -> tuple[int, int] | None:
        """``(seqno, view)`` of the newest signature row, None if there is none."""

        def op(conn: Conn) -> tuple[int, int] | None:
            row = conn.execute(
                _sql("SELECT seqno, view FROM {s}.tx WHERE signature ORDER BY seqno DESC LIMIT 1", self._schema)
            ).fetchone()
            return None if row is None else (int(row[0]), int(row[1]))

        return self._retrying(op)

    # -- the lease -----------------------------------------------------------------------------------

    def lease(self) -> Lease:
        """The lease row as it is now."""

        def op(conn: Conn) -> Lease:
            row = conn.execute(
                _sql(
                    "SELECT view, holder, address, extract(epoch FROM expires - now())::float8"
                    " FROM {s}.lease WHERE id = 1",
                    self._schema,
                )
            ).fetchone()
            if row is None:
                raise StorageError(f"the {self._schema}.lease row is missing")
            holder = row[1]
            return Lease(int(row[0]), holder, row[2], None if holder is None or row[3] is None else float(row[3]))

        return self._retrying(op)

    def try_acquire(self, holder: str, address: str, seen_view: int, ttl_s: float, *, min_view: int = 0) -> int | None:
        """Take the lease if it is free or expired and still in ``seen_view``: return the new view
        (one more than ``seen_view``, and at least ``min_view``), else None.

        One statement bumps the view and sets the holder: the takeover waits for an in-flight fenced
        write (row lock), and every later write of the previous holder fails its check.
        """
        attempts = 0

        def op(conn: Conn) -> int | None:
            nonlocal attempts
            attempts += 1
            row = conn.execute(
                _sql(
                    "UPDATE {s}.lease SET view = greatest(view + 1, %s), holder = %s, address = %s,"
                    " expires = now() + %s * interval '1 second'"
                    " WHERE id = 1 AND view = %s AND (holder IS NULL OR expires < now()) RETURNING view",
                    self._schema,
                ),
                [min_view, holder, address, float(ttl_s), seen_view],
            ).fetchone()
            return None if row is None else int(row[0])

        view = self._retrying(op)
        if view is None and attempts > 1:
            # retried after a lost connection: the first attempt may have committed, so ask
            lease = self.lease()
            if lease.view == max(seen_view + 1, min_view) and lease.holder == holder:
                return lease.view
        return view

    def renew(self, view: int, holder: str, ttl_s: float) -> bool:
        """Extend the lease if ``(view, holder)`` still holds it unexpired; False when it is lost."""

        def op(conn: Conn) -> bool:
            row = conn.execute(
                _sql(
                    "UPDATE {s}.lease SET expires = now() + %s * interval '1 second'"
                    " WHERE id = 1 AND view = %s AND holder = %s AND expires >= now() RETURNING view",
                    self._schema,
                ),
                [float(ttl_s), view, holder],
            ).fetchone()
            return row is not None

        return self._retrying(op)

    def release(self, view: int, holder: str) -> None:
        """Expire the lease now, if ``(view, holder)`` still holds it, so a backup takes over at once."""

        def op(conn: Conn) -> None:
            conn.execute(
                _sql("UPDATE {s}.lease SET expires = now() WHERE id = 1 AND view = %s AND holder = %s", self._schema),
                [view, holder],
            )

        self._retrying(op)

    # -- nodes and notifications ---------------------------------------------------------------------

    def heartbeat(self, node_id: str, address: str) -> None:
        """Record that ``node_id`` is alive at ``address``."""

        def op(conn: Conn) -> None:
            conn.execute(
                _sql(
                    "INSERT INTO {s}.nodes (node_id, address, last_seen) VALUES (%s, %s, now())"
                    " ON CONFLICT (node_id) DO UPDATE SET address = excluded.address, last_seen = excluded.last_seen",
                    self._schema,
                ),
                [node_id, address],
            )

        self._retrying(op)

    def nodes(self) -> list[tuple[str, str, float]]:
        """``(node_id, address, seconds since last seen)`` of every node, by node id."""

        def op(conn: Conn) -> list[tuple[str, str, float]]:
            rows = conn.execute(
                _sql(
                    "SELECT node_id, address, extract(epoch FROM now() - last_seen)::float8"
                    " FROM {s}.nodes ORDER BY node_id",
                    self._schema,
                )
            ).fetchall()
            return [(str(r[0]), str(r[1]), float(r[2])) for r in rows]

        return self._retrying(op)

    def wait_for_notify(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for a ``notarium_tx`` notification (an append committed).

        True if one came, *or* if the listening connection was just (re)opened or dropped: a
        notification may have been missed then, so the caller should re-read the tail anyway.
        """
        with self._listen_lock:
            if self._listen is None:
                conn = self._connect()
                try:
                    conn.execute(f"LISTEN {self._channel}")
                except psycopg.Error as e:
                    lost = self._lost(conn)
                    conn.close()
                    raise self._error("cannot LISTEN", e, unavailable=lost) from e
                self._listen = conn
                return True
            came = False
            try:
                for _ in self._listen.notifies(timeout=max(0.0, timeout_s), stop_after=1):
                    came = True
            except psycopg.Error:
                self._listen.close()
                self._listen = None
                return True
            return came


def _sql(text: str, schema: str) -> sql.Composed:
    """``text`` with ``{s}`` replaced by the quoted schema name."""
    return sql.SQL(text).format(s=sql.Identifier(schema))


def _last_seqno(cur: psycopg.Cursor[TupleRow], schema: str) -> int:
    cur.execute(_sql("SELECT coalesce(max(seqno), 0) FROM {s}.tx", schema))
    row = cur.fetchone()
    return 0 if row is None else int(row[0])


def _redact_dsn(dsn: str, password: str) -> str:
    """``dsn`` with its password shown as ``***`` (URL user info, ``password=`` in a URL or conninfo)."""
    out = re.sub(r"^(postgres(?:ql)?://[^:@/?]*):[^@/?]*@", r"\1:***@", dsn)
    out = re.sub(r"([?&]password=)[^&]*", r"\1***", out)
    out = re.sub(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", out)
    if password:
        for form in {password, quote(password, safe="")}:
            out = out.replace(form, "***")
    return out
