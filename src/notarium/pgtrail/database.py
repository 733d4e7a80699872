"""The database side of the trail: connections, what the database is, captured tables' shapes,
the publication and the slot. Every PostgreSQL refusal becomes a :class:`TrailError` that says
what to do."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

import psycopg
from psycopg import sql

from notarium.pgtrail.errors import TrailError
from notarium.pgtrail.format import ColumnShape, TableShape
from notarium.pgtrail.pgoutput import parse_lsn

# Every session of the trail (the replication stream, the baseline, verify, restore) formats values
# the same way, so that a value's text is the same whichever way it was read.
SESSION_SETTINGS: Final = {
    "TimeZone": "UTC",
    "DateStyle": "ISO,MDY",
    "IntervalStyle": "postgres",
    "bytea_output": "hex",
    "extra_float_digits": "1",
    "client_encoding": "UTF8",
}
SESSION_OPTIONS: Final = " ".join(f"-c {k}={v}" for k, v in SESSION_SETTINGS.items())
APPLICATION: Final = "notarium-pg"
_NAME = re.compile(r"^[a-z0-9_]{1,63}$")


def check_slot_name(name: str) -> str:
    if not _NAME.match(name):
        raise TrailError(f"slot name {name[:80]!r} is not valid: use 1 to 63 lower-case letters, digits and _")
    return name


def default_slot(database: str) -> str:
    cleaned = re.sub(r"[^a-z0-9_]", "_", database.lower())
    return f"notarium_{cleaned}"[:63]


def _message(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@contextmanager
def connect(dsn: str, *, autocommit: bool = True) -> Iterator[psycopg.Connection[Any]]:
    """A connection with the trail's session settings; a refusal says what went wrong."""
    try:
        conn = psycopg.connect(dsn, options=SESSION_OPTIONS, autocommit=autocommit, application_name=APPLICATION)
    except psycopg.OperationalError as exc:
        raise TrailError(
            f"cannot connect to PostgreSQL: {_message(exc)}",
            hint="check --db (a libpq connection string or postgresql:// URL), the server and your credentials",
        ) from None
    except psycopg.ProgrammingError as exc:
        raise TrailError(f"--db is not a valid connection string: {_message(exc)}") from None
    try:
        yield conn
    finally:
        conn.close()


@dataclass(frozen=True, slots=True)
class DbInfo:
    system_identifier: str
    timeline: int
    database: str
    version: int
    wal_level: str
    lsn: int
    user: str
    replication: bool  # may use logical replication (superuser or REPLICATION)
    encoding: str


def info(conn: psycopg.Connection[Any]) -> DbInfo:
    row = conn.execute(
        "SELECT (SELECT system_identifier::text FROM pg_control_system()),"
        " (SELECT timeline_id FROM pg_control_checkpoint()),"
        " current_database(), current_setting('server_version_num')::int, current_setting('wal_level'),"
        " pg_current_wal_lsn()::text, current_user,"
        " (SELECT rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user),"
        " pg_encoding_to_char(encoding) FROM pg_database WHERE datname = current_database()"
    ).fetchone()
    if row is None:
        raise TrailError("the database did not describe itself")
    return DbInfo(
        str(row[0]),
        int(row[1]),
        str(row[2]),
        int(row[3]),
        str(row[4]),
        parse_lsn(row[5]),
        str(row[6]),
        bool(row[7]),
        str(row[8]),
    )


def current_lsn(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    return parse_lsn(row[0]) if row else 0


def check_capturable(db: DbInfo) -> None:
    """What the server and the role must allow before anything is created."""
    if db.version < 150000:
        raise TrailError(f"PostgreSQL {db.version // 10000} is too old: the trail needs PostgreSQL 15 or newer")
    if db.wal_level != "logical":
        raise TrailError(
            f"the server runs with wal_level = {db.wal_level}: capture needs logical decoding",
            hint="set wal_level = logical in postgresql.conf (ALTER SYSTEM SET wal_level = logical) and restart "
            "PostgreSQL; max_replication_slots and max_wal_senders must be at least 1",
        )
    if not db.replication:
        raise TrailError(
            f"role {db.user} may not use logical replication",
            hint=f"ALTER ROLE {db.user} REPLICATION (as a superuser), or connect as a role that has it",
        )
    if db.encoding != "UTF8":
        raise TrailError(f"database {db.database} is encoded {db.encoding}: the trail needs a UTF8 database")


# --- tables -------------------------------------------------------------------------------------


def _table_oid(conn: psycopg.Connection[Any], name: str) -> int:
    row = conn.execute("SELECT to_regclass(%s)::oid", (name,)).fetchone()
    if row is None or row[0] is None:
        raise TrailError(f"table {name} does not exist in this database")
    return int(row[0])


def _all_tables(conn: psycopg.Connection[Any]) -> list[int]:
    rows = conn.execute(
        "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind = 'r' AND c.relpersistence = 'p'"
        " AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
        " AND n.nspname NOT LIKE 'pg_toast%%' AND n.nspname NOT LIKE 'pg_temp%%'"
        " ORDER BY n.nspname, c.relname"
    ).fetchall()
    return [int(r[0]) for r in rows]


def shape(conn: psycopg.Connection[Any], oid: int) -> TableShape:
    """A table's shape as the trail records it, or a refusal that says how to make it capturable."""
    row = conn.execute(
        "SELECT n.nspname, c.relname, c.relkind, c.relreplident, c.relpersistence FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = %s",
        (oid,),
    ).fetchone()
    if row is None:
        raise TrailError(f"table {oid} vanished")
    schema, table, kind, ident, persistence = row
    name = f"{schema}.{table}"
    if kind != "r":
        raise TrailError(f"{name} is not an ordinary table (partitioned tables: name their partitions)")
    if persistence != "p":
        raise TrailError(
            f"{name} is an unlogged or temporary table: its changes are not in the WAL, so it cannot be captured",
            hint=f"ALTER TABLE {name} SET LOGGED, or leave it out of --tables",
        )
    columns = tuple(
        ColumnShape(str(r[0]), str(r[1]), int(r[2]))
        for r in conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod), atttypid FROM pg_attribute"
            " WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
            (oid,),
        ).fetchall()
    )
    if not columns:
        raise TrailError(f"table {name} has no columns to capture")
    quoted = sql.Identifier(schema, table).as_string(conn)
    if ident == "f":
        return TableShape(name, columns, tuple(c.name for c in columns), "full")
    key: tuple[str, ...] = ()
    if ident in ("d", "i"):  # the primary key, or the index chosen as replica identity
        rows = conn.execute(
            "SELECT a.attname FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, pos)"
            " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum"
            " WHERE i.indrelid = %s AND (CASE WHEN %s = 'd' THEN i.indisprimary ELSE i.indisreplident END)"
            " ORDER BY k.pos",
            (oid, ident),
        ).fetchall()
        key = tuple(str(r[0]) for r in rows)
    if not key:
        raise TrailError(
            f"table {name} has no primary key: capture must identify each row it records",
            hint=f"add a primary key (ALTER TABLE {quoted} ADD PRIMARY KEY (...)), or let the whole row identify it: "
            f"ALTER TABLE {quoted} REPLICA IDENTITY FULL",
        )
    return TableShape(name, columns, key, "key")


def shapes(conn: psycopg.Connection[Any], tables: Sequence[str] | None) -> list[TableShape]:
    oids = _all_tables(conn) if tables is None else [_table_oid(conn, t) for t in tables]
    if not oids:
        raise TrailError("there is no table to capture", hint="name them with --tables, or create them first")
    found = [shape(conn, oid) for oid in dict.fromkeys(oids)]
    return sorted(found, key=lambda t: t.name)


def ident(name: str) -> sql.Composable:
    """A qualified table name ("schema.table", as the trail records it) as an SQL identifier."""
    schema, _, table = name.partition(".")
    return sql.Identifier(schema, table)


# --- slot and publication -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SlotInfo:
    name: str
    plugin: str | None
    database: str | None
    active: bool
    confirmed_flush: int | None
    restart: int | None
    wal_status: str | None


def slot(conn: psycopg.Connection[Any], name: str) -> SlotInfo | None:
    row = conn.execute(
        "SELECT plugin, database, active, confirmed_flush_lsn::text, restart_lsn::text, wal_status"
        " FROM pg_replication_slots WHERE slot_name = %s",
        (name,),
    ).fetchone()
    if row is None:
        return None
    return SlotInfo(
        name,
        row[0],
        row[1],
        bool(row[2]),
        parse_lsn(row[3]) if row[3] else None,
        parse_lsn(row[4]) if row[4] else None,
        row[5],
    )


def publication_tables(conn: psycopg.Connection[Any], name: str) -> list[str] | None:
    exists = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (name,)).fetchone()
    if exists is None:
        return None
    rows = conn.execute(
        "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = %s ORDER BY 1", (name,)
    ).fetchall()
    return [str(r[0]) for r in rows]


def publication_problem(conn: psycopg.Connection[Any], name: str, tables: Sequence[str]) -> str | None:
    """What makes the publication publish less than the trail needs, if anything: other tables,
    an operation left out, a row filter or a column list (each would drop changes silently)."""
    row = conn.execute(
        "SELECT pubinsert AND pubupdate AND pubdelete AND pubtruncate FROM pg_publication WHERE pubname = %s",
        (name,),
    ).fetchone()
    if row is None:
        return f"publication {name} no longer exists"
    if not row[0]:
        return f"publication {name} leaves out inserts, updates, deletes or truncates"
    published = publication_tables(conn, name)
    if published != sorted(tables):
        return f"publication {name} publishes {published}, not the recorded tables {sorted(tables)}"
    filtered = conn.execute(
        "SELECT n.nspname || '.' || c.relname FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid"
        " JOIN pg_class c ON c.oid = r.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE p.pubname = %s AND (r.prqual IS NOT NULL OR r.prattrs IS NOT NULL)",
        (name,),
    ).fetchall()
    if filtered:
        return f"publication {name} filters rows or columns of {', '.join(str(r[0]) for r in filtered)}"
    return None


def create_publication(conn: psycopg.Connection[Any], name: str, tables: Sequence[TableShape]) -> None:
    names = sql.SQL(", ").join(ident(t.name) for t in tables)
    try:
        conn.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(sql.Identifier(name), names))
    except psycopg.errors.InsufficientPrivilege as exc:
        raise TrailError(
            f"cannot create publication {name}: {_message(exc)}",
            hint="the role needs CREATE on the database and must own the captured tables (or be a superuser)",
        ) from None


def set_publication(conn: psycopg.Connection[Any], name: str, tables: Sequence[TableShape]) -> None:
    names = sql.SQL(", ").join(ident(t.name) for t in tables)
    conn.execute(sql.SQL("ALTER PUBLICATION {} SET TABLE {}").format(sql.Identifier(name), names))


def drop_publication(conn: psycopg.Connection[Any], name: str) -> None:
    conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(name)))


def create_slot(conn: psycopg.Connection[Any], name: str) -> None:
    try:
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (name,))
    except psycopg.errors.DuplicateObject:
        raise TrailError(f"replication slot {name} already exists", hint="name another with --slot") from None
    except psycopg.Error as exc:
        raise TrailError(f"cannot create replication slot {name}: {_message(exc)}") from None


def drop_slot(conn: psycopg.Connection[Any], name: str) -> None:
    conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s", (name,))
