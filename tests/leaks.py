"""Looking for plaintext where it must not be: in the files of a directory, in a PostgreSQL database."""

from __future__ import annotations

from pathlib import Path

import psycopg
from psycopg import sql


def files_holding(root: Path, markers: list[bytes]) -> list[str]:
    """Every file under ``root`` that holds one of ``markers`` (plain bytes), as ``path: marker``."""
    return [
        f"{path.relative_to(root)}: {m.decode()}"
        for path in sorted(root.rglob("*"))
        if path.is_file()
        for m in markers
        if m in path.read_bytes()
    ]


def tables_holding(dsn: str, markers: list[bytes]) -> list[str]:
    """Every table of the database (notarium's and any other) with a value holding one of
    ``markers``: byte strings as stored, every other value as text."""
    found = []
    with psycopg.connect(dsn) as conn:
        names = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_type = 'BASE TABLE'"
        ).fetchall()
        if ("notarium", "tx") not in names:
            raise AssertionError(f"the database holds no replicated log: {names}")
        for schema, table in names:
            query = sql.SQL("SELECT * FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
            for row in conn.execute(query):
                for value in row:
                    raw = value if isinstance(value, bytes) else str(value).encode()
                    found += [f"{schema}.{table}: {m.decode()}" for m in markers if m in raw]
    return found
