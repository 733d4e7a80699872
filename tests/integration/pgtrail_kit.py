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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg

from integration.server import Server, clean_env, running
from notarium.client.client import Client
from notarium.client.profile import load_profile
from notarium.pgtrail.format import Part, Tx, Txs, join_parts
from notarium.pgtrail.trail import Recorded, TrailLedger, default_collection
from pg import PgCluster

LOGICAL = {"wal_level": "logical", "max_replication_slots": 20, "max_wal_senders": 20, "max_connections": 60}
PGBENCH = shutil.which("pgbench") or "pgbench"


def logical_cluster(settings: dict[str, str | int] | None = None) -> PgCluster:
    """A fresh server with ``wal_level = logical`` (and ``settings``, postgresql.conf)."""
    return PgCluster.create({**LOGICAL, **(settings or {})})


def new_database(cluster: PgCluster, *, scale: int | None = 1, name: str | None = None) -> str:
    """A fresh database (filled by ``pgbench -i -s scale`` unless scale is None); its DSN."""
    name = name or f"shop_{uuid.uuid4().hex[:10]}"
    cluster.psql(f'CREATE DATABASE "{name}"')
    dsn = cluster.dsn(name)
    if scale is not None:
        fill(dsn, scale=scale)
    return dsn


def fill(dsn: str, *, scale: int = 1) -> None:
    """``pgbench -i -s scale`` into an existing database (``pgbench_history`` gets REPLICA IDENTITY
    FULL: it has no primary key)."""
    subprocess.run([PGBENCH, "-i", "-s", str(scale), "-q", dsn], check=True, capture_output=True, env=clean_env())
    execute(dsn, "ALTER TABLE pgbench_history REPLICA IDENTITY FULL")


def execute(dsn: str, sql: str, params: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def digest(dsn: str, table: str) -> str:
    """The md5 of a table's rows in their text form, in a stable order: equal digests, equal rows."""
    query = f"SELECT md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) FROM {table} t"  # noqa: S608
    rows = execute(dsn, query)
    return str(rows[0][0])


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


def start_pgbench(dsn: str, *, seconds: float, clients: int = 2) -> subprocess.Popen[str]:
    """pgbench's TPC-B-like workload for ``seconds``, in the background (its output in a pipe)."""
    return subprocess.Popen(
        [PGBENCH, "-n", "-c", str(clients), "-j", str(min(clients, 2)), "-T", str(int(seconds)), dsn],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=clean_env(),
    )


def reap(proc: subprocess.Popen[str]) -> str:
    """End a background program whose output is piped (SIGTERM if it still runs), close the pipe;
    what it printed (nothing if it was read already)."""
    if proc.poll() is None:
        proc.terminate()
    if proc.stdout is None or proc.stdout.closed:
        proc.wait(30)
        return ""
    return proc.communicate(timeout=30)[0] or ""


def wait_until(what: str, check: Callable[[], Any], timeout: float = 60, every: float = 0.2) -> Any:
    """Poll ``check`` until it returns something true (returned); fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(every)


def slot_row(dsn: str, name: str) -> dict[str, Any] | None:
    """The replication slot ``name`` as ``pg_replication_slots`` shows it (None: there is none)."""
    rows = execute(
        dsn,
        "SELECT slot_name, plugin, database, active, restart_lsn::text, confirmed_flush_lsn::text, catalog_xmin::text"
        " FROM pg_replication_slots WHERE slot_name = %s",
        (name,),
    )
    keys = ("name", "plugin", "database", "active", "restart", "confirmed", "catalog_xmin")
    return dict(zip(keys, rows[0], strict=True)) if rows else None


def system_identifier(dsn: str) -> str:
    return str(execute(dsn, "SELECT system_identifier::text FROM pg_control_system()")[0][0])


def captured_transactions(entries: list[Recorded]) -> list[Tx]:
    """Every database transaction the trail's ``txs`` entries (and joined ``part`` groups) hold, in
    ledger order, as written: one sent again would be in the list twice."""
    found: list[Tx] = []
    parts: dict[tuple[int, str], list[Part]] = {}
    for r in entries:
        if isinstance(r.entry, Txs):
            found.extend(r.entry.txs)
        elif isinstance(r.entry, Part):
            group = parts.setdefault((r.entry.lsn, r.entry.sha256), [])
            group.append(r.entry)
            if len(group) == r.entry.of:
                found.extend(join_parts(sorted(group, key=lambda e: e.part)).txs)
    return found


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

    @property
    def collection(self) -> str:
        """The trail's default collection: ``pg:<database>``."""
        return default_collection(self.dsn.rsplit("/", 1)[1].split("?", 1)[0])

    def entries(self, collection: str | None = None) -> list[Recorded]:
        """The trail's entries (or another collection's) as the ledger holds them, each verified by
        its receipt, decoded."""
        with Client.from_profile(load_profile(env=self.env)) as client:
            return list(TrailLedger(client, collection or self.collection).read())

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


@dataclass
class Ledger:
    """A running ledger and the environment (its Administrator profile) the commands use; it can
    hold the trails of many databases, one collection each."""

    server: Server
    env: dict[str, str]

    def trail(self, dsn: str) -> Trail:
        return Trail(dsn, self.server, self.env)


@contextmanager
def ledger(tmp: Path) -> Iterator[Ledger]:
    """A fresh ledger in ``tmp``, served while the context lasts."""
    directory = init_ledger(tmp)
    with running(directory) as server:
        env = clean_env()
        env["NOTARIUM_PROFILE"] = str(directory / "user0_profile.json")
        env["NOTARIUM_ENDPOINT"] = server.url
        yield Ledger(server, env)


@contextmanager
def trail(cluster: PgCluster, tmp: Path, *, dsn: str | None = None, scale: int | None = 1) -> Iterator[Trail]:
    """A database (``pgbench -i`` at ``scale``) and a running ledger whose Administrator profile the
    commands use."""
    with ledger(tmp) as served:
        yield served.trail(dsn or new_database(cluster, scale=scale))


@contextmanager
def served_again(t: Trail) -> Iterator[Server]:
    """The trail's ledger, stopped earlier, served again on the same port (the URL its profile and
    every running command name); ``t.server`` is the new process while the context lasts."""
    port = urlsplit(t.server.url).port
    assert port, t.server.url
    assert t.server.process.poll() is not None, "stop the ledger first"
    with running(t.server.directory, port=port) as server:
        assert server.url == t.server.url, (server.url, t.server.url)
        t.server = server
        yield server
