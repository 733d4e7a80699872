"""A ledger host on PostgreSQL (`notarium host DIR --store`, docs/design/host.md), on this machine.

(a) Appends/s: committed appends of 1 and of 10 hosted ledgers on one store, with 1 host process
    and with 2 (half the ledgers created through each, so each process leads half of them; the
    clients split evenly over both processes, so half the writes are forwarded). Load: 16
    concurrent appenders per ledger over HTTPS keep-alive connections (aiohttp, client
    certificate), 256-byte entries; the figure is the committed seqnos gained per second over the
    measured window, summed over the ledgers (each ledger's ``/node/state`` before and after).
(b) Failover: two host processes, one ledger; SIGKILL of the process holding its lease, N times
    (default lease 3 s): the time until a write through the survivor is Committed. The killed
    process is started again (it follows) before the next kill.
(c) Memory: the resident memory of one host process and of its ledger processes with N idle
    ledgers (100; 10 in quick mode), with the PostgreSQL connections they hold.

PostgreSQL runs as in tests/pg.py (fsync on, synchronous_commit on).
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT / "tests"))
from integration.host_store_kit import (  # noqa: E402  (the tests' kit, reused as it is)
    StoreHost,
    admin_of,
    committed_append,
    create,
    node_state,
    twin_dir,
    until,
)
from pg import PgCluster  # noqa: E402

PAYLOAD = "x" * 256
CONCURRENCY = 16
API = "api-version=2024-12-09-preview"


def _seqno(host: StoreHost, name: str) -> int:
    return int(str(node_state(host, name)["committed"]).split(".")[1])


async def _load(targets: list[tuple[StoreHost, str, Path]], duration: float, per_target: int) -> None:
    """``per_target`` appenders per (host, ledger, admin) target, each sending one append at a time."""
    stop = time.monotonic() + duration

    async def appender(session: aiohttp.ClientSession, url: str) -> None:
        while time.monotonic() < stop:
            try:
                async with session.post(url, json={"contents": PAYLOAD}) as r:
                    await r.read()
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)

    sessions = []
    tasks = []
    for host, name, admin in targets:
        ctx = ssl.create_default_context(cafile=str(host.ca))
        ctx.load_cert_chain(str(admin))
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=CONCURRENCY))
        sessions.append(session)
        url = f"{host.url}/ledgers/{name}/app/transactions?{API}"
        tasks += [asyncio.create_task(appender(session, url)) for _ in range(per_target)]
    await asyncio.gather(*tasks)
    for session in sessions:
        await session.close()


def appends_per_s(hosts: list[StoreHost], ledgers: list[str], admins: dict[str, Path], duration: float) -> float:
    """Committed appends/s over all ``ledgers``, the clients of each spread over ``hosts``."""
    targets = [(hosts[i % len(hosts)], name, admins[name]) for name in ledgers for i in range(len(hosts))]
    per_target = max(1, CONCURRENCY // len(hosts))
    asyncio.run(_load(targets, 1.0, per_target))  # warm-up: connections, caches
    before = {n: _seqno(hosts[0], n) for n in ledgers}
    start = time.monotonic()
    asyncio.run(_load(targets, duration, per_target))
    elapsed = time.monotonic() - start
    time.sleep(0.5)  # the last signatures
    gained = sum(_seqno(hosts[0], n) - before[n] for n in ledgers)
    return gained / elapsed


def _hosts(work: Path, dsn: str, count: int, tag: str) -> list[StoreHost]:
    first = StoreHost(work / f"{tag}-a", dsn).start()
    hosts = [first]
    for i in range(1, count):
        directory = work / f"{tag}-{chr(97 + i)}"
        directory.mkdir()
        twin_dir(first.directory, directory)
        hosts.append(StoreHost(directory, dsn).start())
    return hosts


def throughput(work: Path, pg: PgCluster, processes: int, count: int, duration: float) -> dict[str, Any]:
    db = f"tp{processes}x{count}"
    pg.psql(f"CREATE DATABASE {db}")
    hosts = _hosts(work, pg.dsn(db), processes, db)
    try:
        names = [f"bench{i}" for i in range(count)]
        admins = {n: admin_of(work, f"{db}-{n}") for n in names}
        for i, name in enumerate(names):
            create(hosts[i % processes], name, admins[name])
        for host in hosts:
            for name in names:
                until(f"{name} served", lambda h=host, n=name: node_state(h, n)["committed"], timeout=60)
        rate = appends_per_s(hosts, names, admins, duration)
    finally:
        for host in hosts:
            host.stop()
    return {"host_processes": processes, "ledgers": count, "committed_appends_per_s": round(rate)}


def failovers(work: Path, dsn: str, kills: int) -> dict[str, Any]:
    hosts = _hosts(work, dsn, 2, "failover")
    times = []
    try:
        admin = admin_of(work, "failover")
        create(hosts[0], "fover", admin)
        until("both serve it", lambda: node_state(hosts[1], "fover")["role"] == "Backup", timeout=60)
        for _ in range(kills):
            primary = next(h for h in hosts if node_state(h, "fover")["role"] == "Primary")
            survivor = next(h for h in hosts if h is not primary)
            primary.kill()
            killed = time.monotonic()
            while committed_append(survivor, "fover", admin, "after") is None:
                time.sleep(0.05)
                if time.monotonic() - killed > 60:
                    raise RuntimeError("no failover within 60 s")
            times.append(time.monotonic() - killed)
            primary.start()
            until(
                "the killed process follows", lambda p=primary: node_state(p, "fover")["role"] == "Backup", timeout=60
            )
    finally:
        for host in hosts:
            host.stop()
    return {
        "kills": kills,
        "median_s": round(statistics.median(times), 2),
        "max_s": round(max(times), 2),
        "all_s": [round(t, 2) for t in times],
        "lease_ttl_s": 3.0,
    }


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as f:
        pages = int(f.read().split()[1])
    return pages * 4096 / 2**20


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def memory(work: Path, pg: PgCluster, count: int) -> dict[str, Any]:
    pg.psql("CREATE DATABASE idle")
    host = StoreHost(work / "idle", pg.dsn("idle")).start()
    try:
        for i in range(count):
            create(host, f"idle{i}", admin_of(work, "idle"))
        time.sleep(3)
        assert host.process is not None
        pid = host.process.pid
        children = _children(pid)
        connections = pg.psql("SELECT count(*) FROM pg_stat_activity WHERE datname = 'idle'")[0][0]
        front, engines = _rss_mb(pid), sum(_rss_mb(c) for c in children)
    finally:
        host.stop()
    return {
        "idle_ledgers": count,
        "host_process_rss_mb": round(front),
        "ledger_processes": len(children),
        "ledger_processes_rss_mb": round(engines),
        "per_ledger_mb": round((front + engines) / count, 1),
        "postgresql_connections": connections,
    }


def bench_host(quick: bool) -> dict[str, Any]:
    duration = 2.0 if quick else 5.0
    kills = 3 if quick else 10
    idle = 10 if quick else 100
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="notarium-host-", dir=OUT))
    results: dict[str, Any] = {"appends": []}
    try:
        with PgCluster.create({"max_connections": 2 * idle + 60}) as pg:
            for processes in (1, 2):
                for count in (1, 10):
                    results["appends"].append(throughput(work, pg, processes, count, duration))
            pg.psql("CREATE DATABASE failover")
            results["failover"] = failovers(work, pg.dsn("failover"), kills)
            results["memory"] = memory(work, pg, idle)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results
