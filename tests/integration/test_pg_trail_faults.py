"""The database trail under faults and bad input: the capture agent killed again and again, the
ledger down, PostgreSQL restarted, wrong connection strings, roles and servers, a slot in use, a
database that is not the trail's. Everything real (a PostgreSQL with wal_level = logical, pgbench,
a notarium server, the `notarium pg` commands); each test checks that no database transaction is
lost or recorded twice, or that a refusal is clear and leaves nothing half-created."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.pgtrail_kit import (
    Ledger,
    Trail,
    captured_transactions,
    execute,
    fill,
    ledger,
    logical_cluster,
    new_database,
    pgbench,
    reap,
    served_again,
    slot_row,
    start_pgbench,
    stop,
    system_identifier,
    trail,
    wait_until,
)
from pg import PgCluster, free_port

HISTORY = "public.pgbench_history"
# every pgbench transaction changes these three; leaving out pgbench_accounts (100,000 rows) keeps
# the baseline and verify short, and makes its changes WAL that capture must step over
SOME_TABLES = "pgbench_branches,pgbench_tellers,pgbench_history"


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    with logical_cluster() as c:
        yield c


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    """One ledger for the module's trails (one collection per database)."""
    with ledger(tmp_path_factory.mktemp("ledger")) as s:
        yield s


# --- helpers --------------------------------------------------------------------------------------


def history_rows(dsn: str) -> int:
    return int(execute(dsn, "SELECT count(*) FROM pgbench_history")[0][0])


def assert_captured_exactly_once(t: Trail) -> int:
    """Every pgbench transaction of the database is in the trail once: ``pg status`` counts as many
    as pgbench_history holds rows, the ledger's txs entries hold each commit once and, between
    them, one insert into pgbench_history per row; ``pg verify`` finds the database identical.
    Returns the number of transactions."""
    expected = history_rows(t.dsn)
    body = t.catch_up()
    assert body["transactionsCaptured"] == expected, body
    txs = captured_transactions(t.entries())
    repeated = [lsn for lsn, n in Counter(tx.lsn for tx in txs).items() if n > 1]
    assert repeated == [], f"{len(repeated)} transaction(s) recorded more than once"
    assert len(txs) == expected
    inserts = sum(1 for tx in txs for c in tx.changes if c.op == "I" and c.table == HISTORY)
    assert inserts == expected
    verified = t.pg("verify")
    assert verified.returncode == 0, (verified.stdout, verified.stderr)
    assert "identical" in verified.stdout
    return expected


def start_agent(t: Trail, log: Path) -> subprocess.Popen[str]:
    return t.start_capture(log=log)


def assert_refused(done: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit 1, nothing on stdout, an ``error:`` on stderr saying each of ``needles``."""
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert done.stdout == ""
    assert done.stderr.startswith("error: "), done.stderr
    for needle in needles:
        assert needle in done.stderr, (needle, done.stderr)
    return done.stderr


def slot_names(dsn: str) -> list[str]:
    """The replication slots of the database."""
    rows = execute(dsn, "SELECT slot_name FROM pg_replication_slots WHERE database = current_database() ORDER BY 1")
    return [r[0] for r in rows]


def publications(dsn: str) -> list[str]:
    return [r[0] for r in execute(dsn, "SELECT pubname FROM pg_publication ORDER BY 1")]


def assert_nothing_created(t: Trail, dsn: str | None = None, collection: str | None = None) -> None:
    """No replication slot on the server, no publication in the database, no entry in the collection."""
    if dsn is not None:
        assert slot_names(dsn) == []
        assert publications(dsn) == []
    assert t.entries(collection) == []


# --- the agent killed ---------------------------------------------------------------------------


def test_agent_killed_repeatedly_during_pgbench(cluster: PgCluster, served: Ledger, tmp_path: Path) -> None:
    t = served.trail(new_database(cluster))
    t.pg_json("init", "--all-tables")
    log = tmp_path / "capture.log"
    agent = start_agent(t, log)
    t.wait_baseline()
    bench = start_pgbench(t.dsn, seconds=12, clients=2)
    try:
        for pause in random.Random(20240607).sample([0.7, 1.3, 1.6, 2.1, 2.5, 3.2], 5):
            time.sleep(pause)
            assert agent.poll() is None, log.read_text()
            assert stop(agent, signal.SIGKILL) == -signal.SIGKILL
            agent = start_agent(t, log)
        output, _ = bench.communicate(timeout=60)
        assert bench.returncode == 0, output
        assert history_rows(t.dsn) > 200
        assert_captured_exactly_once(t)
        assert agent.poll() is None, log.read_text()
        assert stop(agent) == 0
    finally:
        reap(bench)
        stop(agent, signal.SIGKILL)
    text = log.read_text()
    assert text.count("capturing ") >= 3, text  # (an agent killed very early may not get that far)
    assert "GAP" not in text, text


# --- the ledger down ----------------------------------------------------------------------------


def test_ledger_down_while_capturing(tmp_path: Path) -> None:
    # a server of its own, and a ledger of its own (it is stopped); the server drops a replication
    # connection it has not heard from for 3 s: the outage lasts longer
    with logical_cluster({"wal_sender_timeout": "3s"}) as pgc, trail(pgc, tmp_path) as t:
        init = t.pg_json("init", "--tables", SOME_TABLES)
        log = tmp_path / "capture.log"
        agent = start_agent(t, log)
        t.wait_baseline()
        bench = start_pgbench(t.dsn, seconds=10, clients=2)
        try:
            time.sleep(1.5)
            assert t.server.stop() == 0
            wait_until("the agent says the ledger is not available", lambda: "not available" in log.read_text())
            time.sleep(0.5)  # the confirmation of the last entry written before the stop has arrived
            held = slot_row(t.dsn, init["slot"])
            assert held is not None
            assert held["active"] is True
            wal_before = execute(t.dsn, "SELECT pg_current_wal_lsn()::text")[0][0]
            for _ in range(8):  # 4 s: the database writes on, the slot holds its WAL, the agent its connection
                time.sleep(0.5)
                assert slot_row(t.dsn, init["slot"]) == held
                assert agent.poll() is None, log.read_text()
            moved = execute(t.dsn, "SELECT pg_current_wal_lsn() - %s::pg_lsn", (wal_before,))[0][0]
            assert moved > 0  # pgbench went on while the ledger was down
            with served_again(t):
                output, _ = bench.communicate(timeout=60)
                assert bench.returncode == 0, output
                assert_captured_exactly_once(t)
                assert agent.poll() is None, log.read_text()
                after = slot_row(t.dsn, init["slot"])
                assert after is not None
                assert after["confirmed"] != held["confirmed"]
                assert stop(agent) == 0
        finally:
            reap(bench)
            stop(agent, signal.SIGKILL)  # (only if a check failed: it waits for the ledger otherwise)
        text = log.read_text()
        assert "the ledger is not available" in text, text
        assert "retrying" in text, text
        assert "GAP" not in text, text


# --- PostgreSQL restarted -----------------------------------------------------------------------


def test_postgres_restarted_while_capturing(cluster: PgCluster, served: Ledger, tmp_path: Path) -> None:
    t = served.trail(new_database(cluster))
    t.pg_json("init", "--tables", SOME_TABLES)
    log = tmp_path / "capture.log"
    agent = start_agent(t, log)
    try:
        t.wait_baseline()
        bench = start_pgbench(t.dsn, seconds=4, clients=2)
        time.sleep(1.5)
        try:
            cluster.stop("fast")
            reap(bench)  # its connections were cut
            time.sleep(1)
        finally:
            cluster.start()
        wait_until("the agent says so", lambda: "PostgreSQL is not available" in log.read_text())
        pgbench(t.dsn, transactions=50, clients=2)
        assert history_rows(t.dsn) > 100
        assert_captured_exactly_once(t)
        assert agent.poll() is None, log.read_text()
        assert stop(agent) == 0
    finally:
        stop(agent, signal.SIGKILL)
    text = log.read_text()
    assert text.count("capturing ") >= 2, text  # reconnected
    assert "GAP" not in text, text


# --- bad input ----------------------------------------------------------------------------------


def test_wrong_connection_strings_are_refused(served: Ledger) -> None:
    t = served.trail("unused")
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/shop"
    for command in (["init", "--all-tables"], ["capture"], ["verify"], ["status"]):
        assert_refused(t.pg(*command, db=nowhere), "cannot connect to PostgreSQL", "Connection refused", "check --db")
    garbage = "shop on the usual server"
    for command in (["init", "--all-tables", "--collection", "pg:shop"], ["capture", "--collection", "pg:shop"]):
        assert_refused(t.pg(*command, db=garbage), "--db is not a valid connection string")
    assert_nothing_created(t, collection="pg:shop")


def test_role_without_replication_is_refused(cluster: PgCluster, served: Ledger) -> None:
    dsn = new_database(cluster)
    t = served.trail(dsn)
    execute(dsn, "CREATE ROLE clerk LOGIN")
    execute(dsn, "GRANT ALL ON ALL TABLES IN SCHEMA public TO clerk")
    as_clerk = dsn.replace("postgresql://postgres@", "postgresql://clerk@")
    assert_refused(
        t.pg("init", "--all-tables", db=as_clerk),
        "role clerk may not use logical replication",
        "ALTER ROLE clerk REPLICATION",
    )
    assert_nothing_created(t, dsn)


def test_server_without_logical_wal_is_refused(pg_dsn: str, served: Ledger) -> None:
    fill(pg_dsn)  # the session's server: wal_level = replica
    t = served.trail(pg_dsn)
    assert_refused(t.pg("init", "--all-tables"), "wal_level = replica", "wal_level = logical")
    assert_nothing_created(t, pg_dsn)


def test_table_without_primary_key_is_refused(cluster: PgCluster, served: Ledger) -> None:
    t = served.trail(new_database(cluster))
    execute(t.dsn, "CREATE TABLE public.notes (at timestamptz, note text)")
    for which in (["--tables", "pgbench_branches,notes"], ["--all-tables"]):
        assert_refused(
            t.pg("init", *which),
            "table public.notes has no primary key",
            'ALTER TABLE "public"."notes" ADD PRIMARY KEY',
            'ALTER TABLE "public"."notes" REPLICA IDENTITY FULL',
        )
    assert_nothing_created(t, t.dsn)
    execute(t.dsn, "ALTER TABLE public.notes REPLICA IDENTITY FULL")  # as the message says
    assert t.pg_json("init", "--tables", "pgbench_branches,notes")["created"] is True


def test_slot_in_use_and_slot_taken_are_refused(cluster: PgCluster, served: Ledger, tmp_path: Path) -> None:
    t = served.trail(new_database(cluster))
    init = t.pg_json("init", "--tables", SOME_TABLES)
    log = tmp_path / "capture.log"
    agent = start_agent(t, log)
    try:
        t.wait_baseline()
        before = len(t.entries())
        assert_refused(t.pg("capture", "--once", timeout=60), f"replication slot {init['slot']} is in use")
        assert agent.poll() is None, log.read_text()
        assert len(t.entries()) == before
        assert stop(agent) == 0
    finally:
        stop(agent, signal.SIGKILL)

    other = served.trail(new_database(cluster))
    execute(other.dsn, "SELECT pg_create_logical_replication_slot('taken', 'pgoutput')")
    try:
        assert_refused(
            other.pg("init", "--all-tables", "--slot", "taken"),
            "replication slot taken already exists",
            "--slot",
        )
        assert slot_row(other.dsn, "taken") is not None  # left as it was
        assert publications(other.dsn) == []
        assert other.entries() == []
    finally:
        execute(other.dsn, "SELECT pg_drop_replication_slot('taken')")


def test_init_twice_changes_nothing(cluster: PgCluster, served: Ledger) -> None:
    t = served.trail(new_database(cluster))
    first = t.pg_json("init", "--tables", SOME_TABLES)
    assert first["created"] is True
    slot = slot_row(t.dsn, first["slot"])
    pubs = execute(t.dsn, "SELECT oid, pubname FROM pg_publication")
    published = execute(t.dsn, "SELECT * FROM pg_publication_tables ORDER BY 1, 2, 3")
    entries = t.entries()
    again = t.pg("init", "--tables", SOME_TABLES, "--json")
    assert again.returncode == 0, again.stderr
    assert "already prepared" in again.stderr
    assert "nothing changed" in again.stderr
    body = t.pg_json("init", "--tables", SOME_TABLES)
    assert body["created"] is False
    assert body["txid"] is None
    assert (body["epoch"], body["slot"], body["tables"]) == (first["epoch"], first["slot"], first["tables"])
    assert slot_row(t.dsn, first["slot"]) == slot
    assert execute(t.dsn, "SELECT oid, pubname FROM pg_publication") == pubs
    assert execute(t.dsn, "SELECT * FROM pg_publication_tables ORDER BY 1, 2, 3") == published
    assert [(r.txid, r.entry) for r in t.entries()] == [(r.txid, r.entry) for r in entries]


# --- another database ---------------------------------------------------------------------------


def test_another_database_is_refused(cluster: PgCluster, served: Ledger) -> None:
    t = served.trail(new_database(cluster))
    t.pg_json("init", "--tables", SOME_TABLES)
    done = t.pg("capture", "--once", timeout=120)
    assert done.returncode == 0, done.stderr
    entries = t.entries()
    name = t.dsn.rsplit("/", 1)[1]
    with logical_cluster() as elsewhere:
        impostor = new_database(elsewhere, name=name)  # the same name, another server
        ours, theirs = system_identifier(t.dsn), system_identifier(impostor)
        assert ours != theirs
        for command in (["capture", "--once"], ["verify"], ["status"]):
            for collection in ([], ["--collection", t.collection]):
                assert_refused(t.pg(*command, *collection, db=impostor, timeout=60), ours, theirs)
        assert slot_names(impostor) == []
        assert publications(impostor) == []
    assert [r.txid for r in t.entries()] == [r.txid for r in entries]


# --- status -------------------------------------------------------------------------------------


def test_status_reports_lag(cluster: PgCluster, served: Ledger, tmp_path: Path) -> None:
    t = served.trail(new_database(cluster))
    t.pg_json("init", "--tables", SOME_TABLES)
    log = tmp_path / "capture.log"
    agent = start_agent(t, log)
    try:
        t.wait_baseline()
        assert stop(agent) == 0
        pgbench(t.dsn, transactions=40, clients=2)
        behind = t.pg_json("status")
        assert behind["lagBytes"] > 0, behind
        assert behind["transactionsCaptured"] < history_rows(t.dsn) == 80, behind
        assert behind["slot"]["active"] is False
        agent = start_agent(t, log)
        caught = t.catch_up()
        assert caught["lagBytes"] == 0
        assert caught["transactionsCaptured"] == 80
        assert caught["slot"]["active"] is True
        assert stop(agent) == 0
    finally:
        stop(agent, signal.SIGKILL)
    assert "GAP" not in log.read_text()
