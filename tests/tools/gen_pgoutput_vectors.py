"""Record real pgoutput messages (protocol 1) from this machine's PostgreSQL as test vectors.

Each vector holds the raw message (hex) and what it must decode to, written from the SQL that made
it (not from notarium's parser): tests/unit/pgtrail/test_pgoutput.py checks the parser against
them. Run: .venv/bin/python tests/tools/gen_pgoutput_vectors.py (needs the PostgreSQL server
binaries; starts and removes a throwaway cluster).
"""

from __future__ import annotations

import json
import select
import sys
import time
from pathlib import Path

import psycopg
import psycopg2
import psycopg2.extras

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pg import PgCluster

OUT = Path(__file__).resolve().parents[1] / "vectors" / "pgoutput" / "stream.json"
BIG = "".join(f"{i:08x}" for i in range(3000))  # 24 kB, incompressible enough to be TOASTed out of line

SQL = [
    "INSERT INTO t VALUES (1, 'plain', NULL, 1.50, true)",
    "INSERT INTO t VALUES (2, 'ünïcødé ✓ \"quoted\" \\ back', '2026-12-05 10:00:00+00', -0.000001, false)",
    "UPDATE t SET note = 'changed' WHERE id = 1",
    "UPDATE t SET id = 10 WHERE id = 2",
    "DELETE FROM t WHERE id = 1",
    "INSERT INTO f VALUES ('a', 1), ('a', 1)",
    "DELETE FROM f WHERE ctid = (SELECT min(ctid) FROM f)",
    f"INSERT INTO big VALUES (1, '{BIG}', 0)",  # noqa: S608  (a constant)
    "UPDATE big SET n = 1 WHERE id = 1",
    "TRUNCATE f",
    "SELECT pg_logical_emit_message(true, 'notarium-pg', 'progress')",
]


def main() -> None:
    with PgCluster.create({"wal_level": "logical", "max_replication_slots": 4, "max_wal_senders": 4}) as c:
        dsn = c.dsn("postgres")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id int PRIMARY KEY, note text, at timestamptz, x numeric, ok boolean)")
            conn.execute("CREATE TABLE f (k text, v int)")
            conn.execute("ALTER TABLE f REPLICA IDENTITY FULL")
            conn.execute("CREATE TABLE big (id int PRIMARY KEY, doc text, n int)")
            conn.execute("ALTER TABLE big ALTER COLUMN doc SET STORAGE EXTERNAL")
            conn.execute("CREATE PUBLICATION p FOR TABLE t, f, big")
            conn.execute("SELECT pg_create_logical_replication_slot('s', 'pgoutput')")
            for statement in SQL:
                conn.execute(statement)
        repl = psycopg2.connect(
            dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection, options="-c TimeZone=UTC"
        )
        cur = repl.cursor()
        cur.start_replication(
            slot_name="s", decode=False, options={"proto_version": "1", "publication_names": "p", "messages": "true"}
        )
        messages: list[str] = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            msg = cur.read_message()
            if msg is None:
                select.select([cur], [], [], 0.2)
                continue
            messages.append(bytes(msg.payload).hex())
        repl.close()
    OUT.write_text(json.dumps({"sql": SQL, "big": BIG, "messages": messages}, indent=1) + "\n")
    print(f"{len(messages)} messages written to {OUT}")


if __name__ == "__main__":
    main()
