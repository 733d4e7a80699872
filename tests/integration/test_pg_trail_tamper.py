"""The database trail against the insider: what an administrator of the database can do to hide a
change, and what the trail shows of it; and the trail's fidelity (DDL, large transactions, every
kind of value, TRUNCATE, restoring to a point).

Everything is real: a PostgreSQL with wal_level = logical, a notarium server, the ``notarium pg``
commands as subprocesses. One ledger serves the module; each test has a database of its own (so a
collection ``pg:<database>`` of its own).
"""

from __future__ import annotations

import datetime
import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from integration.pgtrail_kit import Ledger, Trail, digest, execute, ledger, logical_cluster, new_database, stop
from notarium.pgtrail.format import Baseline, Change, Gap, Init, Part, Stop, Txs, encode, join_parts
from notarium.pgtrail.pgoutput import UNCHANGED
from notarium.pgtrail.restore import _program
from notarium.pgtrail.trail import Recorded
from pg import PgCluster

ACCOUNTS = """
CREATE TABLE accounts(id int PRIMARY KEY, owner text NOT NULL, balance numeric(12, 2) NOT NULL);
INSERT INTO accounts SELECT g, 'owner ' || g, g * 10 FROM generate_series(1, 50) g;
CREATE TABLE notes(id int PRIMARY KEY, body text);
INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 5) g;
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    with logical_cluster() as c:
        yield c


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    with ledger(tmp_path_factory.mktemp("ledger")) as lg:
        yield lg


def prepared(served: Ledger, cluster: PgCluster, schema: str = ACCOUNTS) -> tuple[Trail, dict[str, object]]:
    """A fresh database holding ``schema``, prepared with ``pg init --all-tables``."""
    t = served.trail(new_database(cluster, scale=None))
    with psycopg.connect(t.dsn, autocommit=True) as conn:
        conn.execute(schema.encode())
    init = t.pg_json("init", "--all-tables")
    assert init["created"] is True
    assert init["epoch"] == 1
    return t, init


@contextmanager
def capturing(t: Trail, log: Path, *args: str) -> Iterator[subprocess.Popen[str]]:
    """``pg capture`` running (its baseline done) for the duration; stopped with SIGTERM after."""
    agent = t.start_capture(*args, log=log)
    try:
        t.wait_baseline()
        yield agent
    finally:
        stop(agent)


def changes_of(entries: list[Recorded]) -> list[tuple[Recorded, int, Change]]:
    """Every recorded change with the entry holding it (the last part, for a transaction written in
    parts): (entry, xid, change)."""
    out: list[tuple[Recorded, int, Change]] = []
    parts: list[Part] = []
    for r in entries:
        e = r.entry
        if isinstance(e, Part):
            parts.append(e)
            if e.part == e.of:
                e, parts = join_parts(parts), []
        if isinstance(e, Txs):
            out += [(r, tx.xid, c) for tx in e.txs for c in tx.changes]
    return out


def empty_database(cluster: PgCluster) -> str:
    return new_database(cluster, scale=None)


def verified(t: Trail, *args: str, db: str | None = None) -> dict[str, Any]:
    """``pg verify --json ARGS``, which must find the database identical to the trail."""
    done = t.pg("verify", *args, "--json", db=db)
    report: dict[str, Any] = json.loads(done.stdout) if done.stdout.startswith("{") else {}
    short = [(d["table"], d["key"], d["what"]) for d in report.get("divergences", [])][:10]
    assert done.returncode == 0, (done.returncode, short, report.get("findings"), done.stderr)
    assert report["ok"] is True
    assert report["divergences"] == []
    return report


# --- the insider ---------------------------------------------------------------------------------


def test_changes_hidden_by_advancing_the_slot_are_named(served: Ledger, cluster: PgCluster, tmp_path: Path) -> None:
    t, init = prepared(served, cluster)
    log = tmp_path / "capture.log"
    with capturing(t, log) as agent:
        execute(t.dsn, "UPDATE accounts SET balance = 555 WHERE id = 5")
        t.catch_up()
    assert agent.returncode == 0

    # the insider: capture is stopped; change, delete, insert, then move the slot past it all
    execute(t.dsn, "UPDATE accounts SET balance = 999999 WHERE id = 5")
    execute(t.dsn, "DELETE FROM accounts WHERE id = 7")
    execute(t.dsn, "INSERT INTO accounts VALUES (1000, 'mallory', 1)")
    execute(t.dsn, "SELECT pg_replication_slot_advance(%s, pg_current_wal_lsn())", (init["slot"],))

    with capturing(t, log):
        execute(t.dsn, "UPDATE accounts SET balance = 42 WHERE id = 9")  # recorded: not divergent
        t.catch_up()
        report = t.pg_json("verify", expect=3)
        human = t.pg("verify")

    entries = t.entries()
    baseline = next(
        str(r.txid) for r in entries if isinstance(r.entry, Baseline) and r.entry.table == "public.accounts"
    )
    legit = next(
        str(r.txid) for r, _, c in changes_of(entries) if c.table == "public.accounts" and c.new and c.new[0] == "5"
    )
    gaps = [r for r in entries if isinstance(r.entry, Gap)]
    assert len(gaps) == 1, "capture records the skipped range when it starts again"

    assert report["ok"] is False
    by_key = {d["key"]["id"]: d for d in report["divergences"]}
    assert set(by_key) == {"5", "7", "1000"}, report["divergences"]
    assert all(d["table"] == "public.accounts" for d in report["divergences"])
    changed, deleted, inserted = by_key["5"], by_key["7"], by_key["1000"]
    assert changed["what"] == "differs"
    assert changed["ledger"] == {"id": "5", "owner": "owner 5", "balance": "555.00"}
    assert changed["database"] == {"id": "5", "owner": "owner 5", "balance": "999999.00"}
    assert changed["lastChange"] == legit
    assert deleted["what"] == "only in the ledger"
    assert deleted["ledger"] == {"id": "7", "owner": "owner 7", "balance": "70.00"}
    assert deleted["database"] is None
    assert deleted["lastChange"] == baseline
    assert inserted["what"] == "only in the database"
    assert inserted["ledger"] is None
    assert inserted["database"] == {"id": "1000", "owner": "mallory", "balance": "1.00"}
    assert inserted["lastChange"] is None
    found = [f for f in report["findings"] if f["kind"] == "gap"]
    assert [f["txid"] for f in found] == [str(gaps[0].txid)], report["findings"]

    assert human.returncode == 3, human.stderr
    out = human.stdout
    assert "GAP: " in out
    assert "DIVERGENT public.accounts [id=5]: differs" in out
    assert f'"balance": "555.00"}}  (last change {legit})' in out
    assert '"balance": "999999.00"' in out
    assert "DIVERGENT public.accounts [id=7]: only in the ledger" in out
    assert "DIVERGENT public.accounts [id=1000]: only in the database" in out
    assert "NOT identical: 3 divergent row(s)" in out


def test_a_dropped_slot_is_a_gap_and_capture_refuses(served: Ledger, cluster: PgCluster, tmp_path: Path) -> None:
    t, init = prepared(served, cluster)
    with capturing(t, tmp_path / "capture.log") as agent:
        execute(t.dsn, "UPDATE accounts SET balance = 1 WHERE id = 1")
        t.catch_up()
    assert agent.returncode == 0

    execute(t.dsn, "UPDATE accounts SET balance = 2 WHERE id = 3")
    execute(t.dsn, "SELECT pg_drop_replication_slot(%s)", (init["slot"],))

    report = t.pg_json("verify", "--timeout", "2", expect=3)
    gaps = [f for f in report["findings"] if f["kind"] == "gap"]
    assert len(gaps) == 1, report["findings"]
    assert "no longer exists" in gaps[0]["message"]
    assert [d["key"] for d in report["divergences"]] == [{"id": "3"}]
    assert report["divergences"][0]["database"]["balance"] == "2.00"

    refused = t.pg("capture", "--once", timeout=120)
    assert refused.returncode == 1, (refused.stdout, refused.stderr)
    assert f"replication slot {init['slot']} no longer exists" in refused.stderr
    assert t.pg_json("status")["slot"] is None


def test_a_table_dropped_from_the_publication_shows_as_divergent(
    served: Ledger, cluster: PgCluster, tmp_path: Path
) -> None:
    """The stream stops sending a table the insider takes out of the publication, while capture
    runs: verify names the rows changed since, and capture refuses to start again."""
    t, init = prepared(served, cluster)
    with capturing(t, tmp_path / "capture.log"):
        execute(t.dsn, f"ALTER PUBLICATION {init['slot']} DROP TABLE notes")
        execute(t.dsn, "UPDATE notes SET body = 'unseen' WHERE id = 2")
        execute(t.dsn, "UPDATE accounts SET balance = 3 WHERE id = 3")  # still recorded
        t.catch_up()
        report = t.pg_json("verify", expect=3)
    assert [(d["table"], d["key"], d["what"]) for d in report["divergences"]] == [
        ("public.notes", {"id": "2"}, "differs")
    ]
    assert report["divergences"][0]["database"]["body"] == "unseen"
    named = [f for f in report["findings"] if f["kind"] == "gap" and "not the recorded tables" in f["message"]]
    assert len(named) == 1, report["findings"]  # the publication itself is named, not only the rows
    refused = t.pg("capture", "--once", timeout=120)
    assert refused.returncode == 1, (refused.stdout, refused.stderr)
    assert "not the recorded tables" in refused.stderr


def test_an_edit_while_capture_runs_is_recorded_with_its_time(
    served: Ledger, cluster: PgCluster, tmp_path: Path
) -> None:
    t, _ = prepared(served, cluster)
    with capturing(t, tmp_path / "capture.log"):
        with psycopg.connect(t.dsn) as conn:  # the insider's own session, one transaction
            conn.execute("UPDATE accounts SET balance = 4242, owner = 'insider' WHERE id = 3")
            row = conn.execute("SELECT pg_current_xact_id()::text::bigint, now()").fetchone()
            assert row is not None
            xid, began = row[0] % 2**32, row[1]
            conn.commit()
        after = execute(t.dsn, "SELECT now()")[0][0]
        t.catch_up()
        report = verified(t)

    found = [(r, c) for r, x, c in changes_of(t.entries()) if x == xid]
    assert len(found) == 1, found
    recorded, change = found[0]
    assert (change.op, change.table) == ("U", "public.accounts")
    assert change.new == ("3", "insider", "4242.00")
    assert isinstance(recorded.entry, Txs)
    (tx,) = [tx for tx in recorded.entry.txs if tx.xid == xid]
    when = datetime.datetime.fromisoformat(tx.time)
    assert when.tzinfo is not None
    assert began <= when <= after, (began, tx.time, after)
    assert report["lastEntry"] is not None


def test_restore_as_of_a_txid_and_from_a_schema_file(served: Ledger, cluster: PgCluster, tmp_path: Path) -> None:
    t, _ = prepared(served, cluster)
    with capturing(t, tmp_path / "capture.log"):
        execute(t.dsn, "UPDATE accounts SET balance = balance + 1 WHERE id <= 10")
        execute(t.dsn, "DELETE FROM accounts WHERE id = 20")
        execute(t.dsn, "INSERT INTO accounts VALUES (51, 'owner 51', 510)")
        at = t.catch_up()["lastEntry"]
        then = digest(t.dsn, "accounts"), digest(t.dsn, "notes")

        execute(t.dsn, "UPDATE accounts SET balance = balance * 2")
        execute(t.dsn, "DELETE FROM accounts WHERE id BETWEEN 30 AND 40")
        execute(t.dsn, "INSERT INTO notes VALUES (6, 'later')")
        t.catch_up()
    now = digest(t.dsn, "accounts"), digest(t.dsn, "notes")
    assert now != then

    past = empty_database(cluster)
    done = t.pg_json("restore", "--source-db", t.dsn, "--at", at, db=past)
    assert done["restoredTo"] == at
    assert done["tables"] == {"public.accounts": 50, "public.notes": 5}
    assert (digest(past, "accounts"), digest(past, "notes")) == then
    assert execute(past, "SELECT balance::text FROM accounts WHERE id = 10") == [("101.00",)]
    same = verified(t, "--at", at, "--collection", t.collection, db=past)
    assert same["lastEntry"] == at
    differs = t.pg_json("verify", "--collection", t.collection, "--at", at, expect=3)  # the live database
    what = [d["what"] for d in differs["divergences"]]
    assert (what.count("differs"), what.count("only in the ledger"), what.count("only in the database")) == (39, 11, 1)

    schema = tmp_path / "schema.sql"
    subprocess.run([_program("pg_dump"), "--schema-only", "-f", str(schema), "-d", t.dsn], check=True)
    latest = empty_database(cluster)
    done = t.pg_json("restore", "--schema", str(schema), "--collection", t.collection, db=latest)
    assert done["tables"] == {"public.accounts": 39, "public.notes": 6}
    assert (digest(latest, "accounts"), digest(latest, "notes")) == now
    keys = (
        "SELECT conrelid::regclass::text FROM pg_constraint"
        " WHERE contype = 'p' AND connamespace = 'public'::regnamespace ORDER BY 1"
    )
    assert execute(latest, keys) == [("accounts",), ("notes",)]


# --- fidelity ------------------------------------------------------------------------------------


def test_ddl_stops_capture_and_a_rebaseline_resumes(served: Ledger, cluster: PgCluster, tmp_path: Path) -> None:
    t, _ = prepared(served, cluster)
    log = tmp_path / "capture.log"
    agent = t.start_capture(log=log)
    try:
        t.wait_baseline()
        execute(t.dsn, "UPDATE notes SET body = 'before' WHERE id = 1")
        execute(t.dsn, "ALTER TABLE accounts ADD COLUMN flagged boolean NOT NULL DEFAULT false")
        execute(t.dsn, "UPDATE accounts SET flagged = true WHERE id = 2")
        assert agent.wait(timeout=60) == 1
    finally:
        stop(agent)
    said = log.read_text()
    assert "capture stopped: table public.accounts changed shape" in said, said

    stops = [r.entry for r in t.entries() if isinstance(r.entry, Stop)]
    assert [(s.table, s.epoch) for s in stops] == [("public.accounts", 1)]
    assert t.pg_json("status")["stopped"] is not None
    refused = t.pg("capture", "--once", timeout=120)
    assert refused.returncode == 1, (refused.stdout, refused.stderr)
    assert "capture stopped" in refused.stderr

    again = t.pg_json("init", "--all-tables", "--rebaseline")
    assert again["created"] is True
    assert again["epoch"] == 2
    with capturing(t, log):
        execute(t.dsn, "UPDATE accounts SET flagged = true, balance = 7 WHERE id = 3")
        t.catch_up()
        unaccepted = t.pg_json("verify", expect=3)  # a re-baseline fails verify until an auditor accepts it
        report = verified(t, "--epoch", "2")
    assert unaccepted["divergences"] == []
    assert [(f["kind"], f["alarming"]) for f in unaccepted["findings"] if f["kind"] == "epoch"] == [("epoch", True)]
    assert report["epoch"] == 2
    kinds = [f["kind"] for f in report["findings"]]
    assert {"epoch", "stop"} <= set(kinds), report["findings"]
    epoch = next(f for f in report["findings"] if f["kind"] == "epoch")
    assert "after capture stopped" in epoch["message"]
    assert epoch["epoch"] == 2
    assert epoch["alarming"] is False
    inits = [r.entry for r in t.entries() if isinstance(r.entry, Init)]
    assert [i.epoch for i in inits] == [1, 2]
    assert "flagged" in [c.name for c in inits[1].tables[0].columns]


def test_a_transaction_larger_than_an_entry_is_written_in_parts(
    served: Ledger, cluster: PgCluster, tmp_path: Path
) -> None:
    limit = 20_000
    t, _ = prepared(
        served,
        cluster,
        "CREATE TABLE items(id int PRIMARY KEY, qty int NOT NULL, label text NOT NULL);"
        "INSERT INTO items SELECT g, g, 'item label ' || lpad(g::text, 6, '0') FROM generate_series(1, 3000) g;"
        # rows of 6 kB (2,000 characters of 3 bytes): a few fill a baseline entry
        "CREATE TABLE docs(id int PRIMARY KEY, body text NOT NULL);"
        "INSERT INTO docs SELECT g, repeat('世', 2000) FROM generate_series(1, 10) g;",
    )
    log = tmp_path / "capture.log"
    with capturing(t, log, "--max-entry-bytes", str(limit)):
        execute(t.dsn, "UPDATE items SET qty = qty + 1")
        execute(t.dsn, "UPDATE items SET label = 'after' WHERE id = 1")
        t.catch_up()
    # while capture is stopped: a large transaction, and one committed before it whose 12,000
    # characters (28 kB of UTF-8 and JSON escapes) are larger than an entry too. Read back to back,
    # the first is still waiting for company while the second streams in and is spooled to disk.
    with psycopg.connect(t.dsn) as bulk:
        bulk.execute("INSERT INTO items SELECT g, g, 'bulk' FROM generate_series(3001, 13000) g")
        execute(t.dsn, r"INSERT INTO docs SELECT g, repeat(E'界\\\"', 40) FROM generate_series(11, 110) g")
        bulk.commit()
    with capturing(t, log, "--max-entry-bytes", str(limit)):
        t.catch_up()
        report = verified(t)
    assert report["tables"] == {"public.docs": 110, "public.items": 13000}
    assert report["transactions"] == 4

    entries = t.entries()
    assert max(len(encode(r.entry).encode()) for r in entries) <= limit
    assert len([r for r in entries if isinstance(r.entry, Baseline) and r.entry.table == "public.docs"]) >= 4
    by_tx: dict[str, list[Part]] = {}
    for r in entries:
        if isinstance(r.entry, Part):
            by_tx.setdefault(r.entry.sha256, []).append(r.entry)
    assert len(by_tx) == 3, "three transactions written in parts"
    for group in by_tx.values():
        assert group[0].of >= 2
        assert [p.part for p in group] == list(range(1, group[0].of + 1))
    update, docs, insert = (join_parts(group).txs[0] for group in by_tx.values())
    assert [c.op for c in update.changes] == ["U"] * 3000
    assert update.changes[0].new == ("1", "2", "item label 000001")
    assert [c.new for c in docs.changes] == [(str(i), '界\\"' * 40) for i in range(11, 111)]
    assert [c.op for c in insert.changes] == ["I"] * 10000
    small = [tx for r in entries if isinstance(r.entry, Txs) for tx in r.entry.txs]
    assert [c.new for tx in small for c in tx.changes] == [("1", "2", "after")]


VALUES = r"""
CREATE TABLE vals(
    id int PRIMARY KEY,
    amount numeric, at timestamptz, day date, span interval, raw bytea, doc jsonb, tags text[],
    flag boolean, name text, f float8, r real, stamp timestamp, code char(5), uid uuid, big text,
    twice numeric GENERATED ALWAYS AS (amount * 2) STORED
);
ALTER TABLE vals ALTER COLUMN big SET STORAGE EXTERNAL;
INSERT INTO vals VALUES
    (1, 12345678901234567890.123456789, '2024-02-29 23:59:59.123456+05:30', '2024-02-29',
     '1 year 2 mons 3 days 04:05:06.789', '\x00ff10', '{"b": [1, 2.50, null], "a": "ü"}',
     ARRAY['a', 'b c', NULL, '"q"', 'x,y', '{}'], true, E'Grüße, 世界 🙂\ttab\nline\\end',
     0.1, 3.4028235e38, '2000-01-01 00:00:00.000001', 'ab', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
     (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 600) g)),
    (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
    (3, 'NaN', 'infinity', '-infinity', '-1 days -00:00:00.000001', '', '[]', '{}', false, '',
     '-0', 'NaN', 'infinity', '', '00000000-0000-0000-0000-000000000000', NULL);
CREATE TABLE dups(a int, b text, big text);
ALTER TABLE dups REPLICA IDENTITY FULL;
ALTER TABLE dups ALTER COLUMN big SET STORAGE EXTERNAL;
INSERT INTO dups (a, b) VALUES (1, 'x'), (1, 'x'), (1, 'x'), (2, NULL), (2, NULL), (3, 'y');
INSERT INTO dups VALUES
    (4, 'w', (SELECT string_agg(md5(g::text || 'w'), '') FROM generate_series(1, 300) g));
"""


def test_values_round_trip_through_verify_and_restore(served: Ledger, cluster: PgCluster, tmp_path: Path) -> None:
    t, _ = prepared(served, cluster, VALUES)
    toast = execute(t.dsn, "SELECT reltoastrelid::regclass::text FROM pg_class WHERE oid = 'vals'::regclass")[0][0]
    with capturing(t, tmp_path / "capture.log"):
        execute(
            t.dsn,
            "INSERT INTO vals VALUES (4, -0.000001, '1999-12-31 23:59:59.999999-08', '0001-01-01 BC', '-3 years',"
            r" '\xdeadbeef', '{}', ARRAY[''], true, 'ﬁ ☃ \', 1e300, -1.5e-30, '1999-12-31 23:59:59', 'abcde',"
            " gen_random_uuid(), (SELECT string_agg(md5(g::text || 'x'), '') FROM generate_series(1, 600) g))",
        )
        # changes other columns only: pgoutput sends the TOASTed value as 'unchanged'
        execute(t.dsn, "UPDATE vals SET flag = NOT flag, amount = amount + 1 WHERE id IN (1, 4)")
        execute(t.dsn, "UPDATE vals SET id = 40 WHERE id = 4")  # a new key, the TOASTed value still unchanged
        execute(t.dsn, "UPDATE vals SET name = 'renamed ☃' WHERE id = 2")
        execute(t.dsn, "DELETE FROM vals WHERE id = 3")
        execute(t.dsn, "DELETE FROM dups WHERE ctid = (SELECT min(ctid) FROM dups WHERE a = 1)")
        execute(t.dsn, "UPDATE dups SET b = 'z' WHERE ctid = (SELECT min(ctid) FROM dups WHERE a = 2)")
        execute(t.dsn, "INSERT INTO dups VALUES (3, 'y')")
        execute(t.dsn, "UPDATE dups SET b = 'v' WHERE a = 4")  # the whole row identifies it; its big value unchanged
        t.catch_up()
        report = verified(t)
    assert report["tables"] == {"public.dups": 7, "public.vals": 3}
    out_of_line = execute(t.dsn, f"SELECT count(*) FROM {toast}")[0][0]  # noqa: S608  (a catalog name)
    assert out_of_line > 0, "the large values are stored out of line"
    assert execute(t.dsn, "SELECT a, b, count(*) FROM dups GROUP BY 1, 2 ORDER BY 1, 2") == [
        (1, "x", 2),
        (2, "z", 1),
        (2, None, 1),
        (3, "y", 2),
        (4, "v", 1),
    ]

    updates = [c for _, _, c in changes_of(t.entries()) if c.op == "U"]
    unchanged = [(c.table, (c.new or ())[0]) for c in updates if (c.new or ())[-1] is UNCHANGED]
    assert sorted(unchanged) == [
        ("public.dups", "4"),
        ("public.vals", "1"),
        ("public.vals", "4"),
        ("public.vals", "40"),
    ]

    restored = empty_database(cluster)
    done = t.pg_json("restore", "--source-db", t.dsn, db=restored)
    assert done["tables"] == {"public.dups": 7, "public.vals": 3}
    for table in ("vals", "dups"):
        assert digest(restored, table) == digest(t.dsn, table), table
    big = "SELECT id, md5(big), length(big) FROM vals ORDER BY id"
    assert execute(restored, big) == execute(t.dsn, big)
    assert [r[2] for r in execute(restored, big)] == [19200, None, 19200]


def test_truncate_is_recorded_and_replayed(served: Ledger, cluster: PgCluster, tmp_path: Path) -> None:
    t, _ = prepared(served, cluster)
    with capturing(t, tmp_path / "capture.log"):
        execute(t.dsn, "TRUNCATE notes")
        execute(t.dsn, "INSERT INTO notes VALUES (1, 'after the truncate')")
        with psycopg.connect(t.dsn) as conn:  # a truncate in the middle of a transaction
            conn.execute("DELETE FROM accounts WHERE id < 5")
            conn.execute("TRUNCATE accounts, notes")
            conn.execute("INSERT INTO accounts VALUES (7, 'seven', 7), (8, 'eight', 8)")
            conn.commit()
        t.catch_up()
        report = verified(t)
    assert report["tables"] == {"public.accounts": 2, "public.notes": 0}
    truncates = [sorted(c.tables) for _, _, c in changes_of(t.entries()) if c.op == "T"]
    assert truncates == [["public.notes"], ["public.accounts", "public.notes"]], truncates
