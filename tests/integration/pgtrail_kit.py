"""What the database trail's tests share: a PostgreSQL server with ``wal_level = logical``, a
database made by ``pgbench -i``, a running notarium, and the ``notarium pg`` command line.

Everything is real: the server binaries run as the ``postgres`` user (tests/pg.py), ``pgbench`` is
the machine's, the ledger is a ``notarium serve`` process spoken to over TLS, and the commands
run as ``python -m notarium pg ...`` subprocesses.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from integration.server import Server, clean_env, running
from pg import PgCluster

LOGICAL = {"wal_level": "logical", "max_replication_slots": 20, "max_wal_senders": 20, "max_connections": 60}
PGBENCH = shutil.which("pgbench") or "pgbench"


def logical_cluster() -> PgCluster:
    return PgCluster.create(LOGICAL)


def new_database(cluster: PgCluster, *, scale: int | None = 1) -> str:
    """A fresh database (filled by ``pgbench -i -s scale`` unless scale is None); its DSN."""
    name = f"shop_{uuid.uuid4().hex[:10]}"
    cluster.psql(f'CREATE DATABASE "{name}"')
    dsn = cluster.dsn(name)
    if scale is not None:
        subprocess.run([PGBENCH, "-i", "-s", str(scale), "-q", dsn], check=True, capture_output=True, env=clean_env())
        execute(dsn, "ALTER TABLE pgbench_history REPLICA IDENTITY FULL")
    return dsn


def execute(dsn: str, sql: str, params: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def pgbench(dsn: str, *, seconds: float = 3, clients: int = 2, transactions: int | None = None) -> str:
    """Run pgbench's TPC-B-like workload; its output."""
    run = ["-T", str(int(seconds))] if transactions is None else ["-t", str(transactions)]
    done = subprocess.run(
        [PGBENCH, "-n", "-c", str(clients), "-j", str(min(clients, 2)), *run, dsn],
        check=True,
        capture_output=True,
        text=True,
        env=clean_env(),
    )
    return done.stdout


def init_ledger(tmp: Path) -> Path:
    directory = tmp / "ledger"
    subprocess.run(
        [sys.executable, "-m", "notarium", "init", str(directory)], check=True, capture_output=True, env=clean_env()
    )
    return directory


@dataclass
class Trail:
    """A database, a ledger and the environment the ``notarium pg`` commands run with."""

    dsn: str
    server: Server
    env: dict[str, str]

    def pg(self, *args: str, timeout: float = 300, db: str | None = None) -> subprocess.CompletedProcess[str]:
        """``notarium pg ARGS --db DSN``: the completed process (never raises on a non-zero exit)."""
        command, *rest = args
        return subprocess.run(
            [sys.executable, "-m", "notarium", "pg", command, "--db", db or self.dsn, *rest],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def pg_json(self, *args: str, expect: int = 0, **kw: Any) -> Any:
        done = self.pg(*args, "--json", **kw)
        assert done.returncode == expect, (done.returncode, done.stdout, done.stderr)
        return json.loads(done.stdout)

    def start_capture(self, *args: str, log: Path | None = None) -> subprocess.Popen[str]:
        """``pg capture`` in the background, its output appended to ``log``."""
        out = log.open("a") if log is not None else None
        try:
            return subprocess.Popen(
                [sys.executable, "-m", "notarium", "pg", "capture", "--db", self.dsn, *args],
                env=self.env,
                stdout=out if out is not None else subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                text=True,
            )
        finally:
            if out is not None:
                out.close()  # the child has its own copy

    def wait_baseline(self, timeout: float = 60) -> Any:
        """Wait until capture has recorded the epoch's baseline."""
        deadline = time.monotonic() + timeout
        while True:
            body = self.pg_json("status")
            if body["baselineDone"]:
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"no baseline: {body}")
            time.sleep(0.2)

    def catch_up(self, timeout: float = 60) -> Any:
        """Wait until the trail has recorded everything committed so far (``pg status`` lag 0)."""
        deadline = time.monotonic() + timeout
        while True:
            body = self.pg_json("status")
            if body["baselineDone"] and body["lagBytes"] == 0:
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"the trail did not catch up: {body}")
            time.sleep(0.2)


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    return proc.wait(timeout)


@contextmanager
def trail(cluster: PgCluster, tmp: Path, *, dsn: str | None = None, scale: int | None = 1) -> Iterator[Trail]:
    """A database (``pgbench -i`` at ``scale``) and a running ledger whose Administrator profile the
    commands use."""
    directory = init_ledger(tmp)
    with running(directory) as server:
        env = clean_env()
        env["NOTARIUM_PROFILE"] = str(directory / "user0_profile.json")
        env["NOTARIUM_ENDPOINT"] = server.url
        yield Trail(dsn or new_database(cluster, scale=scale), server, env)
