"""The database trail end to end: a real PostgreSQL (wal_level = logical), real pgbench, a real
notarium, the `notarium pg` commands as a database administrator runs them."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.pgtrail_kit import PGBENCH, execute, logical_cluster, pgbench, stop, trail
from integration.server import clean_env
from pg import PgCluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    with logical_cluster() as c:
        yield c


def test_capture_verify_restore_round_trip(cluster: PgCluster, tmp_path: Path) -> None:
    with trail(cluster, tmp_path) as t:
        init = t.pg_json("init", "--all-tables")
        assert init["created"] is True
        assert init["tables"] == [
            "public.pgbench_accounts",
            "public.pgbench_branches",
            "public.pgbench_history",
            "public.pgbench_tellers",
        ]
        again = t.pg_json("init", "--all-tables")
        assert again["created"] is False
        assert again["txid"] is None

        agent = t.start_capture(log=tmp_path / "capture.log")
        try:
            t.wait_baseline()
            pgbench(t.dsn, transactions=200, clients=2)
            body = t.catch_up()
            history = execute(t.dsn, "SELECT count(*) FROM pgbench_history")[0][0]
            assert history == 400
            assert body["transactionsCaptured"] == 400

            report = t.pg_json("verify")
            assert report["ok"] is True
            assert report["divergences"] == []
            assert report["tables"]["public.pgbench_accounts"] == 100_000
            assert report["transactions"] == 400
        finally:
            assert stop(agent) == 0

        target = cluster.dsn("postgres").rsplit("/", 1)[0] + "/restored_" + tmp_path.name[-8:].lower()
        cluster.psql(f'CREATE DATABASE "restored_{tmp_path.name[-8:].lower()}"')
        done = t.pg_json("restore", "--source-db", t.dsn, db=target)
        assert done["tables"]["public.pgbench_history"] == 400
        for table in ("pgbench_accounts", "pgbench_history", "pgbench_tellers", "pgbench_branches"):
            q = f"SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM {table} t"  # noqa: S608  (our names)
            assert execute(target, q) == execute(t.dsn, q), table


def test_verify_on_a_database_in_use_reports_no_tampering(cluster: PgCluster, tmp_path: Path) -> None:
    """pgbench keeps writing while verify runs, several times: each compares at one consistent
    point, so ordinary writes are never reported."""
    with trail(cluster, tmp_path) as t:
        t.pg_json("init", "--all-tables")
        agent = t.start_capture(log=tmp_path / "capture.log")
        try:
            t.wait_baseline()
            load = subprocess.Popen(
                [PGBENCH, "-n", "-c", "2", "-j", "2", "-T", "20", t.dsn],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=clean_env(),
            )
            try:
                reports = [t.pg_json("verify") for _ in range(3)]
            finally:
                assert load.wait(60) == 0
            for report in reports:
                assert report["ok"] is True, report["findings"]
                assert report["divergences"] == []
            assert reports[-1]["transactions"] > reports[0]["transactions"] > 0  # the load was there
            final = t.catch_up()
            assert final["transactionsCaptured"] == execute(t.dsn, "SELECT count(*) FROM pgbench_history")[0][0]
        finally:
            assert stop(agent) == 0
