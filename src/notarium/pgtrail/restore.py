"""``notarium pg restore``: rebuild the captured tables in an empty database from the ledger alone.

The trail is replayed (every entry's receipt verified) up to ``--at`` (default: its end); the
tables are created from the source database's definitions (``pg_dump --schema-only``, in two
sections: tables first, then indexes and constraints once the rows are in) or from a schema
file; the rows are loaded with COPY in their text form, so every value comes back exactly as
PostgreSQL printed it; sequences owned by restored columns are set past the restored values.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from notarium.pgtrail import database as pgdb
from notarium.pgtrail.errors import TrailError
from notarium.pgtrail.prepare import current_init
from notarium.pgtrail.replay import Replay, ReplayResult
from notarium.pgtrail.trail import TrailLedger
from notarium.types import TxId


@dataclass
class RestoreReport:
    database: str
    replay: ReplayResult
    tables: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        r = self.replay
        return {
            "ok": True,
            "database": self.database,
            "restoredTo": None if r.last_txid is None else str(r.last_txid),
            "epoch": r.init.epoch if r.init else None,
            "transactions": r.count,
            "tables": self.tables,
            "findings": [f.to_json() for f in r.findings],
        }


def _program(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        config = shutil.which("pg_config") or "/usr/bin/pg_config"
        bindir = subprocess.run([config, "--bindir"], capture_output=True, text=True, check=True).stdout.strip()
        if (Path(bindir) / name).exists():
            return str(Path(bindir) / name)
    raise TrailError(f"{name} is not installed", hint="install PostgreSQL's client programs")


def _run(args: list[str], what: str) -> str:
    env = {**os.environ, "PGOPTIONS": pgdb.SESSION_OPTIONS}
    done = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.strip().splitlines() if ln.strip()]
        # psql follows its ERROR line with the statement and a caret: name the error
        errors = [ln for ln in lines if "ERROR:" in ln or "FATAL:" in ln]
        raise TrailError(f"{what} failed: {(errors or lines)[-1] if lines else done.returncode}")
    return done.stdout


def _apply_sql(dsn: str, text: str, what: str) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(text)
        path = f.name
    try:
        _run([_program("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-f", path], what)
    finally:
        os.unlink(path)


def _dump(source: str, tables: list[str], section: str) -> str:
    args = [_program("pg_dump"), "--schema-only", f"--section={section}", "--no-owner", "--no-privileges", "-d", source]
    for t in tables:
        schema, _, name = t.partition(".")
        args += ["-t", f'"{schema}"."{name}"']
    return _run(args, f"pg_dump of the source database ({section})")


def restore(
    dsn: str,
    ledger: TrailLedger,
    *,
    at: TxId | None = None,
    source_db: str | None = None,
    schema: Path | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> RestoreReport:
    if (source_db is None) == (schema is None):
        raise ValueError("name exactly one of --source-db and --schema")
    found = current_init(ledger)
    if found is None:
        raise TrailError(f"collection {ledger.collection} holds no trail")
    with pgdb.connect(dsn) as conn:
        target = pgdb.info(conn)
        busy = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
            " AND n.nspname NOT LIKE 'pg_toast%%'"
        ).fetchone()
        if busy and busy[0]:
            raise TrailError(
                f"database {target.database} is not empty ({busy[0]} table(s)): restore fills an empty database only",
                hint="create one: createdb NAME, then pass it to --db",
            )
    with (
        tempfile.TemporaryDirectory(prefix="notarium-pg-restore-") as work,
        contextlib.closing(Replay(Path(work))) as replay,
    ):
        say("replaying the trail from the ledger")
        result = replay.feed_all(ledger.read(last=at))
        if result.init is None or not result.baseline_done:
            raise TrailError("the trail holds no complete baseline to restore from")
        tables = result.init.tables
        names = [t.name for t in tables]
        if source_db is not None:
            _apply_sql(dsn, _dump(source_db, names, "pre-data"), "creating the tables")
        else:
            assert_path = schema
            if assert_path is None:
                raise ValueError("no schema")
            _apply_sql(dsn, assert_path.read_text(), "applying the schema file")
        report = RestoreReport(target.database, result)
        with pgdb.connect(dsn, autocommit=False) as conn:
            for t in tables:
                cols = sql.SQL(", ").join(sql.Identifier(c.name) for c in t.columns)
                query = sql.SQL("COPY {} ({}) FROM STDIN").format(pgdb.ident(t.name), cols)
                n = 0
                try:
                    with conn.cursor().copy(query) as copy:
                        for row, count in replay.rows(t.name):
                            for _ in range(count):
                                copy.write_row(row)
                                n += 1
                except psycopg.Error as exc:
                    raise TrailError(f"loading {t.name} failed: {str(exc).strip().splitlines()[0]}") from None
                report.tables[t.name] = n
                say(f"{t.name}: {n} rows")
            _reset_sequences(conn, tables)
            conn.commit()
        if source_db is not None:
            _apply_sql(dsn, _dump(source_db, names, "post-data"), "creating indexes and constraints")
        return report


def _reset_sequences(conn: psycopg.Connection[Any], tables: Any) -> None:
    for t in tables:
        for c in t.columns:
            row = conn.execute(
                "SELECT pg_get_serial_sequence(%s, %s)", (sql.Identifier(*t.name.split(".", 1)).as_string(conn), c.name)
            ).fetchone()
            if row and row[0]:
                conn.execute(
                    sql.SQL("SELECT setval(%s, coalesce((SELECT max({}) FROM {}), 0) + 1, false)").format(
                        sql.Identifier(c.name), pgdb.ident(t.name)
                    ),
                    (row[0],),
                )
