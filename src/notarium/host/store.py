"""The registry of a host on PostgreSQL (``notarium host DIR --store postgresql://…``).

Schema ``notarium_host`` (docs/design/host.md, "On PostgreSQL"):

- ``ledgers(key, record)``: each ledger's ARM resource and state (the JSON of
  :class:`~notarium.host.registry.LedgerRecord`); ``bundles(schema, blob)``: its identity, sealed
  under the host's store key (:mod:`notarium.host.vault`);
- ``operations``: the long-running operations, with the host process (``owner``) running each;
- ``events``: the management history (what ``events.jsonl`` is for an embedded host);
- ``instances``: the host processes, each heartbeating (``last_seen``) while it runs;
- ``user_changes``: principals an update added, applied by the process that is the ledger's primary;
- ``meta``: the schema version and what tells a host's credentials apart (a hash of the token, the
  TLS CA's fingerprint, a check value of the store key), so that a process started with another
  host's files is refused at start.

Each hosted ledger's log is a schema of its own, ``ledger_<name>_<random>`` (:func:`ledger_schema`),
with the tables of ``serve --store`` (:mod:`notarium.ledger.storage.postgres`).

Every change of state is one conditional statement, so that host processes racing on the same
name or operation agree: :meth:`StoreRegistry.create` inserts only if the name is free (or its
last creation failed), :meth:`StoreRegistry.transition` changes a record only from the state the
caller saw. Reads go to PostgreSQL each time (every process sees the others' changes at once).
While PostgreSQL cannot be reached, calls fail fast for :data:`RETRY_AFTER_S` after a failed
one (:class:`~notarium.errors.StoreUnavailableError`, answered 503), so that management calls do
not each wait for a connection timeout.
"""

from __future__ import annotations

import datetime
import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, fields
from typing import Any, TypeVar

import psycopg
from psycopg import conninfo as pg_conninfo
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb

from notarium.errors import ServiceError, StorageError, StoreUnavailableError
from notarium.host.names import name_key
from notarium.host.registry import (
    DELETED,
    FAILED,
    IN_PROGRESS,
    MAX_OPERATIONS,
    Caller,
    LedgerRecord,
    Operation,
    iso,
    parse_iso,
    utcnow,
)
from notarium.ledger.storage.postgres import _redact_dsn

SCHEMA = "notarium_host"
SCHEMA_VERSION = "1"
RETRY_AFTER_S = 1.0
_LOCK_KEY = 0x6E6F746172686F73  # pg_advisory_xact_lock: creating the schema is serialised
_UNAVAILABLE_CLASSES = frozenset({"08", "53", "57"})
_T = TypeVar("_T")
Conn = psycopg.Connection[TupleRow]

_CREATE = """
CREATE SCHEMA IF NOT EXISTS notarium_host;
CREATE TABLE IF NOT EXISTS notarium_host.meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS notarium_host.ledgers (key text PRIMARY KEY, record jsonb NOT NULL);
CREATE TABLE IF NOT EXISTS notarium_host.bundles (schema_name text PRIMARY KEY, blob bytea NOT NULL);
CREATE TABLE IF NOT EXISTS notarium_host.operations (
    id text PRIMARY KEY,
    seq bigserial,
    body jsonb NOT NULL,
    status text NOT NULL,
    owner text NOT NULL
);
CREATE TABLE IF NOT EXISTS notarium_host.events (id bigserial PRIMARY KEY, body jsonb NOT NULL);
CREATE TABLE IF NOT EXISTS notarium_host.instances (
    id text PRIMARY KEY,
    address text NOT NULL,
    started timestamptz NOT NULL DEFAULT now(),
    last_seen timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS notarium_host.user_changes (
    id bigserial PRIMARY KEY,
    ledger text NOT NULL,
    body jsonb NOT NULL
);
"""


def ledger_schema(name: str) -> str:
    """A fresh schema name for a new incarnation of ledger ``name`` (names are letters, digits and
    hyphens: a hyphen becomes ``_``; the random part keeps a re-creation apart from a failed one)."""
    return f"ledger_{name_key(name).replace('-', '_')}_{secrets.token_hex(4)}"


def token_hash(token: str) -> str:
    return hashlib.sha256(b"notarium-host-token/1\x00" + token.encode()).hexdigest()


def _record(obj: Any) -> LedgerRecord:
    known = {f.name for f in fields(LedgerRecord)}
    return LedgerRecord(**{k: v for k, v in dict(obj).items() if k in known})


def _operation(obj: Any) -> Operation:
    known = {f.name for f in fields(Operation)}
    return Operation(**{k: v for k, v in dict(obj).items() if k in known})


class StoreRegistry:
    """The registry (ledgers, operations, events) in PostgreSQL, shared by the host's processes.

    Thread-safe: one connection, calls serialised. ``instance`` names this host process."""

    def __init__(self, dsn: str, instance: str, *, connect_timeout: float = 3.0) -> None:
        try:
            params: dict[str, Any] = pg_conninfo.conninfo_to_dict(dsn)
        except psycopg.Error:
            raise StorageError("invalid PostgreSQL connection string (not shown: it may hold a password)") from None
        self._password = str(params.get("password") or "")
        self.redacted_dsn = _redact_dsn(dsn, self._password)
        if len(str(params.get("host", "")).split(",")) > 1:
            params.setdefault("target_session_attrs", "read-write")
        params.setdefault("connect_timeout", max(2, round(connect_timeout)))
        params.setdefault("application_name", "notarium-host")
        params.setdefault("keepalives_idle", 10)
        params.setdefault("keepalives_interval", 5)
        params.setdefault("keepalives_count", 3)
        self._conninfo = pg_conninfo.make_conninfo(**params)
        self.instance = instance
        self._lock = threading.Lock()
        self._conn: Conn | None = None
        self._failed_at = 0.0
        self._failure = ""

    # --- connection ----------------------------------------------------------------------------

    def _error(self, what: str, exc: BaseException, *, unavailable: bool = False) -> StorageError:
        sqlstate = getattr(exc, "sqlstate", None) or ""
        kind = StoreUnavailableError if unavailable or sqlstate[:2] in _UNAVAILABLE_CLASSES else StorageError
        text = f"{what} ({self.redacted_dsn}): {' '.join(str(exc).split())}"
        if self._password:
            text = text.replace(self._password, "***")
        return kind(text)

    def _call(self, op: Callable[[Conn], _T]) -> _T:
        """Run ``op`` (one transaction) on the connection; once more on a fresh one if it dropped
        before committing (every op here is one statement or one transaction: safe to repeat)."""
        with self._lock:
            if self._conn is None and time.monotonic() - self._failed_at < RETRY_AFTER_S:
                raise StoreUnavailableError(self._failure)
            for attempt in range(2):
                if self._conn is None:
                    try:
                        self._conn = psycopg.connect(self._conninfo, autocommit=True)
                    except psycopg.Error as exc:
                        error = self._error("cannot connect to PostgreSQL", exc, unavailable=True)
                        self._failed_at, self._failure = time.monotonic(), str(error)
                        raise error from None
                conn = self._conn
                try:
                    return op(conn)
                except psycopg.Error as exc:
                    lost = conn.closed or conn.broken
                    if not lost:
                        raise self._error("PostgreSQL error", exc) from None
                    conn.close()
                    self._conn = None
                    if attempt == 1:
                        error = self._error("PostgreSQL connection lost", exc, unavailable=True)
                        self._failed_at, self._failure = time.monotonic(), str(error)
                        raise error from None
            raise StorageError("unreachable")  # pragma: no cover

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def prepare(self, token: str, ca_fingerprint: str, store_key_check: str) -> None:
        """Create the schema if missing, then check this process's credentials against the
        host's: the first process records them, the others must match (:class:`ServiceError`)."""

        def op(conn: Conn) -> list[str]:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])
                conn.execute(_CREATE)
                wanted = {
                    "schema_version": SCHEMA_VERSION,
                    "token_sha256": token_hash(token),
                    "ca_sha256": ca_fingerprint,
                    "store_key_check": store_key_check,
                }
                for key, value in wanted.items():
                    conn.execute(
                        "INSERT INTO notarium_host.meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING",
                        [key, value],
                    )
                rows: dict[str, str] = dict(conn.execute("SELECT key, value FROM notarium_host.meta").fetchall())
                return [key for key, value in wanted.items() if rows.get(key) != value]

        differ = self._call(op)
        if "schema_version" in differ:
            raise ServiceError("the host schema notarium_host in PostgreSQL has another version than this notarium")
        names = {
            "token_sha256": "host_token",
            "ca_sha256": "tls/ca_cert.pem and tls/ca_privk.pem",
            "store_key_check": "store_key",
        }
        if differ:
            files = ", ".join(names[d] for d in differ)
            raise ServiceError(
                f"this host directory's {files} differ from those of the host already on {self.redacted_dsn}: "
                "every process of one host needs the same host_token, tls/ca_cert.pem, tls/ca_privk.pem and store_key "
                "(copy them from the first host process's directory; docs/operations/ha.md)"
            )

    # --- ledgers -------------------------------------------------------------------------------

    def get(self, name: str) -> LedgerRecord | None:
        row = self._call(
            lambda c: c.execute("SELECT record FROM notarium_host.ledgers WHERE key = %s", [name_key(name)]).fetchone()
        )
        return None if row is None else _record(row[0])

    def records(self) -> list[LedgerRecord]:
        rows = self._call(lambda c: c.execute("SELECT record FROM notarium_host.ledgers ORDER BY key").fetchall())
        return [_record(r[0]) for r in rows]

    def __iter__(self) -> Iterator[LedgerRecord]:
        return iter(self.records())

    def put(self, record: LedgerRecord) -> None:
        self._call(
            lambda c: c.execute(
                "INSERT INTO notarium_host.ledgers (key, record) VALUES (%s, %s)"
                " ON CONFLICT (key) DO UPDATE SET record = excluded.record",
                [record.key, Jsonb(asdict(record))],
            )
        )

    def create(self, record: LedgerRecord) -> bool:
        """Insert ``record`` if its name is free or its last creation failed; False when another
        process has it (the loser of a race gets the conflict)."""
        row = self._call(
            lambda c: c.execute(
                "INSERT INTO notarium_host.ledgers (key, record) VALUES (%s, %s)"
                " ON CONFLICT (key) DO UPDATE SET record = excluded.record"
                " WHERE notarium_host.ledgers.record->>'state' = %s RETURNING key",
                [record.key, Jsonb(asdict(record)), FAILED],
            ).fetchone()
        )
        return row is not None

    def transition(self, record: LedgerRecord, expected_state: str) -> bool:
        """Replace the record if it is still in ``expected_state`` (one statement)."""
        row = self._call(
            lambda c: c.execute(
                "UPDATE notarium_host.ledgers SET record = %s WHERE key = %s AND record->>'state' = %s RETURNING key",
                [Jsonb(asdict(record)), record.key, expected_state],
            ).fetchone()
        )
        return row is not None

    def remove(self, name: str) -> None:
        self._call(lambda c: c.execute("DELETE FROM notarium_host.ledgers WHERE key = %s", [name_key(name)]))

    def take_for_purge(self, record: LedgerRecord) -> bool:
        """Remove a deleted ledger's record, once: True for the one process that did."""
        row = self._call(
            lambda c: c.execute(
                "DELETE FROM notarium_host.ledgers WHERE key = %s AND record->>'state' = %s"
                " AND record->>'schema' IS NOT DISTINCT FROM %s RETURNING key",
                [record.key, DELETED, record.schema],
            ).fetchone()
        )
        return row is not None

    def listed(self, subscription: str, resource_group: str | None = None) -> list[LedgerRecord]:
        return [
            r
            for r in self.records()
            if not r.gone
            and r.subscription.lower() == subscription.lower()
            and (resource_group is None or r.resource_group.lower() == resource_group.lower())
        ]

    def due_for_purge(self, now: datetime.datetime) -> list[LedgerRecord]:
        return [
            r
            for r in self.records()
            if r.state == DELETED and r.purge_after is not None and parse_iso(r.purge_after) <= now
        ]

    def record_event(self, event: str, record: LedgerRecord, caller: Caller | None, **details: Any) -> None:
        line = {
            "time": iso(utcnow()),
            "event": event,
            "ledger": record.name,
            "subscription": record.subscription,
            "resourceGroup": record.resource_group,
            "by": caller.name if caller else "host",
            "byType": caller.kind if caller else "Host",
            "instance": self.instance,
            **details,
        }
        self._call(lambda c: c.execute("INSERT INTO notarium_host.events (body) VALUES (%s)", [Jsonb(line)]))

    def events(self) -> list[dict[str, Any]]:
        rows = self._call(lambda c: c.execute("SELECT body FROM notarium_host.events ORDER BY id").fetchall())
        return [dict(r[0]) for r in rows]

    # --- identity bundles ----------------------------------------------------------------------

    def put_bundle(self, schema: str, blob: bytes) -> None:
        self._call(
            lambda c: c.execute(
                "INSERT INTO notarium_host.bundles (schema_name, blob) VALUES (%s, %s)"
                " ON CONFLICT (schema_name) DO UPDATE SET blob = excluded.blob",
                [schema, blob],
            )
        )

    def bundle(self, schema: str) -> bytes | None:
        row = self._call(
            lambda c: c.execute("SELECT blob FROM notarium_host.bundles WHERE schema_name = %s", [schema]).fetchone()
        )
        return None if row is None else bytes(row[0])

    def drop_ledger_schema(self, schema: str) -> None:
        """Remove a ledger's log for good (the purge, or a failed creation's leftovers)."""

        def op(conn: Conn) -> None:
            with conn.transaction():
                conn.execute(psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(psycopg.sql.Identifier(schema)))
                conn.execute("DELETE FROM notarium_host.bundles WHERE schema_name = %s", [schema])

        self._call(op)

    def ledger_schemas(self) -> list[str]:
        rows = self._call(
            lambda c: c.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'ledger\\_%%' ORDER BY nspname"
            ).fetchall()
        )
        return [str(r[0]) for r in rows]

    # --- operations ----------------------------------------------------------------------------

    def put_operation(self, op: Operation) -> None:
        def run(conn: Conn) -> None:
            conn.execute(
                "INSERT INTO notarium_host.operations (id, body, status, owner) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (id) DO UPDATE SET body = excluded.body, status = excluded.status",
                [op.id, Jsonb(asdict(op)), op.status, op.owner],
            )
            conn.execute(
                "DELETE FROM notarium_host.operations WHERE status <> %s AND seq <"
                " (SELECT min(seq) FROM (SELECT seq FROM notarium_host.operations ORDER BY seq DESC LIMIT %s) AS kept)",
                [IN_PROGRESS, MAX_OPERATIONS],
            )

        self._call(run)

    def get_operation(self, op_id: str) -> Operation | None:
        row = self._call(
            lambda c: c.execute("SELECT body FROM notarium_host.operations WHERE id = %s", [op_id]).fetchone()
        )
        return None if row is None else _operation(row[0])

    def unfinished_operations(self) -> list[Operation]:
        rows = self._call(
            lambda c: c.execute(
                "SELECT body FROM notarium_host.operations WHERE status = %s ORDER BY seq", [IN_PROGRESS]
            ).fetchall()
        )
        return [_operation(r[0]) for r in rows]

    def orphaned_operations(self, dead_after_s: float) -> list[Operation]:
        """Operations still running whose host process stopped heartbeating ``dead_after_s`` ago."""
        rows = self._call(
            lambda c: c.execute(
                "SELECT o.body FROM notarium_host.operations o LEFT JOIN notarium_host.instances i ON i.id = o.owner"
                " WHERE o.status = %s AND (i.id IS NULL OR i.last_seen < now() - %s * interval '1 second')"
                " ORDER BY o.seq",
                [IN_PROGRESS, dead_after_s],
            ).fetchall()
        )
        return [_operation(r[0]) for r in rows]

    def claim_operation(self, op: Operation) -> bool:
        """Take over an orphaned operation (``op.owner`` as read): True for the one process that did."""
        row = self._call(
            lambda c: c.execute(
                "UPDATE notarium_host.operations SET owner = %s WHERE id = %s AND owner = %s AND status = %s"
                " RETURNING id",
                [self.instance, op.id, op.owner, IN_PROGRESS],
            ).fetchone()
        )
        return row is not None

    # --- host processes ------------------------------------------------------------------------

    def heartbeat(self, address: str) -> None:
        self._call(
            lambda c: c.execute(
                "INSERT INTO notarium_host.instances (id, address) VALUES (%s, %s)"
                " ON CONFLICT (id) DO UPDATE SET address = excluded.address, last_seen = now()",
                [self.instance, address],
            )
        )

    def instances(self) -> list[tuple[str, str, float]]:
        """``(id, address, seconds since last seen)`` of the host processes, newest first."""
        rows = self._call(
            lambda c: c.execute(
                "SELECT id, address, extract(epoch FROM now() - last_seen)::float8 FROM notarium_host.instances"
                " ORDER BY last_seen DESC"
            ).fetchall()
        )
        return [(str(r[0]), str(r[1]), float(r[2])) for r in rows]

    def forget_instances(self, older_than_s: float) -> None:
        self._call(
            lambda c: c.execute(
                "DELETE FROM notarium_host.instances i WHERE last_seen < now() - %s * interval '1 second'"
                " AND NOT EXISTS (SELECT 1 FROM notarium_host.operations o WHERE o.owner = i.id AND o.status = %s)",
                [older_than_s, IN_PROGRESS],
            )
        )

    # --- user changes --------------------------------------------------------------------------

    def queue_user_change(self, ledger_key: str, principals: dict[str, Any]) -> None:
        self._call(
            lambda c: c.execute(
                "INSERT INTO notarium_host.user_changes (ledger, body) VALUES (%s, %s)", [ledger_key, Jsonb(principals)]
            )
        )

    def user_changes(self, ledger_key: str) -> list[tuple[int, dict[str, Any]]]:
        rows = self._call(
            lambda c: c.execute(
                "SELECT id, body FROM notarium_host.user_changes WHERE ledger = %s ORDER BY id", [ledger_key]
            ).fetchall()
        )
        return [(int(r[0]), dict(r[1])) for r in rows]

    def done_user_change(self, change_id: int) -> None:
        self._call(lambda c: c.execute("DELETE FROM notarium_host.user_changes WHERE id = %s", [change_id]))

    def forget_user_changes(self, ledger_key: str) -> None:
        self._call(lambda c: c.execute("DELETE FROM notarium_host.user_changes WHERE ledger = %s", [ledger_key]))

    def all_user_changes(self) -> list[tuple[int, str, dict[str, Any]]]:
        """``(id, ledger key, principals)`` of every queued user change, oldest first."""
        rows = self._call(
            lambda c: c.execute("SELECT id, ledger, body FROM notarium_host.user_changes ORDER BY id").fetchall()
        )
        return [(int(r[0]), str(r[1]), dict(r[2])) for r in rows]
