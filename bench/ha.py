"""High availability on PostgreSQL (docs/design/ha.md), on this machine, with a real PostgreSQL server.

(a) Committed appends over HTTPS through the primary (bench.loadgen append: 64 pipelined
    connections, 256-byte entries, client certificates): the committed seqno sampled from the
    primary before and after the measured window. Three set-ups in one run, interleaved by round:
    the embedded store (the baseline), one node on PostgreSQL, and the primary of three nodes on
    PostgreSQL (the two backups following on the same machine).
(b) Failover: SIGKILL of the primary (engine and HTTP front), N times, with the default lease
    (3 s): the time until the other node says it is the primary, and until a write through it is
    Committed. The killed node is started again as a backup after each kill.

PostgreSQL runs as the ``postgres`` user (tests/pg.py), fsync on, synchronous_commit on.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench.http import OUT, Service, _env, init_service_cli, loadgen, start_server, stop_server

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from pg import PgCluster  # the test fixture's PostgreSQL server, reused as it is

JOIN = (sys.executable, "-m", "notarium", "join")
TARGET_APPENDS = 2000
FAILOVER_BOUND_S = 10.0


def _client(svc: Service) -> httpx.Client:
    ctx = ssl.create_default_context(cafile=str(svc.cacert))
    ctx.check_hostname = False
    ctx.load_cert_chain(str(svc.user_pem))
    return httpx.Client(base_url=svc.url, verify=ctx, timeout=10)


def _committed(client: httpx.Client) -> int:
    return int(client.get("/readyz").json()["committed"].split(".")[1])


def committed_rate(svc: Service, duration: float, warmup: float = 1.0) -> dict[str, Any]:
    """Run the append load; the committed seqnos per second over the load's measured window.

    The committed seqno is sampled every 50 ms while the load generator runs; the window starts
    ``warmup`` seconds after the first commit of the load (the generator's own warm-up) and lasts
    ``duration`` seconds, as the generator's does."""
    samples: list[tuple[float, int]] = []
    done = threading.Event()
    with _client(svc) as client:

        def sample() -> None:
            while not done.is_set():
                samples.append((time.perf_counter(), _committed(client)))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            result = loadgen(svc, "append", duration=duration, warmup=warmup)
        finally:
            done.set()
            sampler.join()
    first = samples[0][1]
    began = next(t for t, c in samples if c > first + 100)
    start, end = began + warmup, began + warmup + duration
    return {
        "committed_per_s": round((_at(samples, end) - _at(samples, start)) / duration),
        "answered_per_s": result["rate"],
        "errors": result["errors"],
        "server_processes": result.get("server_processes"),
        "others_cpu_util": result.get("others_cpu_util"),
    }


def _at(samples: list[tuple[float, int]], when: float) -> float:
    """The committed seqno at ``when``, interpolated between samples."""
    for (t0, c0), (t1, c1) in itertools.pairwise(samples):
        if t0 <= when <= t1:
            return c0 + (c1 - c0) * (when - t0) / (t1 - t0)
    return float(samples[-1][1])


def _join(primary: Service, directory: Path) -> None:
    subprocess.run(
        [*JOIN, str(directory), "--target", primary.url, "--service-cert", str(primary.cacert), "--wait", "60"],
        check=True,
        capture_output=True,
        env=_env(),
    )
    # the load generator and probes act as the first administrator on every node
    shutil.copy(primary.user_pem, directory / primary.user_pem.name)


def _state(svc: Service) -> dict[str, Any]:
    with _client(svc) as client:
        result: dict[str, Any] = client.get("/node/state", timeout=2).json()
        return result


def _kill(svc: Service) -> None:
    pid = svc.process.pid
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            os.kill(int(child), signal.SIGKILL)
    svc.process.kill()
    svc.process.wait()


def failovers(scratch: Path, dsn: str, kills: int) -> dict[str, Any]:
    d0, d1 = scratch / "f0", scratch / "f1"
    init_service_cli(d0)
    nodes = [start_server(d0, 120.0, "--store", dsn, "--auto-trust-virtual-nodes")]
    _wait_role(nodes[0], "Primary", 30)
    _join(nodes[0], d1)
    nodes.append(start_server(d1, 120.0, "--store", dsn))
    to_primary: list[float] = []
    to_write: list[float] = []
    try:
        for _ in range(kills):
            primary = next(n for n in nodes if _state(n)["role"] == "Primary")
            other = next(n for n in nodes if n is not primary)
            _kill(primary)
            killed = time.perf_counter()
            _wait_role(other, "Primary", 60)
            to_primary.append(time.perf_counter() - killed)
            with _client(other) as client:
                while True:
                    with contextlib.suppress(httpx.HTTPError):
                        r = client.post("/app/transactions?api-version=2022-05-13", json={"contents": "x"})
                        if r.status_code == 200:
                            txid = r.headers["x-ms-ccf-transaction-id"]
                            while client.get(f"/app/transactions/{txid}/status").json()["state"] != "Committed":
                                time.sleep(0.005)
                            break
                    time.sleep(0.01)
            to_write.append(time.perf_counter() - killed)
            nodes[nodes.index(primary)] = start_server(primary.directory, 120.0, "--store", dsn)
            _wait_role(nodes[nodes.index(other) ^ 1], "Backup", 30)
    finally:
        for n in nodes:
            stop_server(n)

    def dist(xs: list[float]) -> dict[str, float]:
        return {"median_s": round(statistics.median(xs), 2), "max_s": round(max(xs), 2), "min_s": round(min(xs), 2)}

    return {
        "kills": kills,
        "lease_ttl_s": 3.0,
        "to_new_primary": dist(to_primary),
        "to_first_committed_write": dist(to_write),
        "all_s": [round(x, 2) for x in to_write],
        "target": f"< {FAILOVER_BOUND_S} s",
        "met": max(to_write) < FAILOVER_BOUND_S,
    }


def _wait_role(svc: Service, role: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
            if _state(svc)["role"] == role:
                return
        time.sleep(0.02)
    raise RuntimeError(f"{svc.directory.name} did not become {role}")


def bench_ha(quick: bool) -> dict[str, Any]:
    rounds = 1 if quick else 3
    duration = 2.0 if quick else 5.0
    kills = 3 if quick else 20
    OUT.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="notarium-ha-", dir=OUT))
    results: dict[str, Any] = {}
    with PgCluster.create() as pg:
        for db in ("one", "three", "failover"):
            pg.psql(f"CREATE DATABASE {db}")
        setups: dict[str, list[Service]] = {}
        try:
            init_service_cli(scratch / "embedded")
            setups["embedded"] = [start_server(scratch / "embedded")]
            init_service_cli(scratch / "pg1")
            setups["postgresql_1_node"] = [start_server(scratch / "pg1", 120.0, "--store", pg.dsn("one"))]
            init_service_cli(scratch / "pg3")
            three = [start_server(scratch / "pg3", 120.0, "--store", pg.dsn("three"), "--auto-trust-virtual-nodes")]
            _wait_role(three[0], "Primary", 30)
            for i in (1, 2):
                _join(three[0], scratch / f"pg3-{i}")
                three.append(start_server(scratch / f"pg3-{i}", 120.0, "--store", pg.dsn("three")))
            setups["postgresql_3_nodes"] = three
            _wait_role(setups["postgresql_1_node"][0], "Primary", 30)
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in setups}
            for _ in range(rounds):
                for name, nodes in setups.items():
                    runs[name].append(committed_rate(nodes[0], duration))
        finally:
            for nodes in setups.values():
                for n in nodes:
                    stop_server(n)
        medians = {name: statistics.median(r["committed_per_s"] for r in rs) for name, rs in runs.items()}
        for name, rs in runs.items():
            results[name] = {"median_committed_per_s": round(medians[name]), "rounds": rs}
        for name in ("postgresql_1_node", "postgresql_3_nodes"):
            results[name]["over_embedded"] = round(medians[name] / medians["embedded"], 3)
        results["target_committed_per_s"] = {
            "target": f">= {TARGET_APPENDS} (PostgreSQL, through the primary)",
            "met": min(medians["postgresql_1_node"], medians["postgresql_3_nodes"]) >= TARGET_APPENDS,
        }
        results["failover"] = failovers(scratch, pg.dsn("failover"), kills)
    return results
