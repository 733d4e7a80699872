"""``make bench``: notarium's performance figures, each beside a baseline measured in the same run.

Usage: python -m bench [--quick] [--only NAME ...]

Benchmarks (issue #2):
  engine   committed transactions/s of the in-process engine (256-byte private entries, fsync on,
           a signature every <= 10 ms) vs plain batched SQLite inserts with the same fsync cadence
  memory   resident memory of the engine at 100k and at 1M transactions
  audit    `notarium audit` vs the `ccf` package's LedgerValidator on the same chunk files
  http     the HTTPS server under load from a separate process (bench/http.py, bench/loadgen.py)
  client, export, tokens, recovery   (bench/<name>.py)
  ha       committed appends through the primary on PostgreSQL vs the embedded store, and the
           failover time over 20 SIGKILLs of the primary (bench/ha.py)
  pgtrail  the database trail (`notarium pg`) under pgbench: capture throughput and lag, pgbench's tps
           with capture vs without, pg verify and pg restore time and memory (bench/pgtrail.py)
  join     3,500 unauthenticated joins from one client, then governance requests/s (a member's, and
           forged ones) with and without them, the server's join limits at default and raised (bench/join.py)
  bomb     2 MiB gzip bombs without a credential: the front's CPU seconds per bomb, and an Administrator's
           append latency alone and with 4 bomb clients (bench/bomb.py)
  console  `notarium console` page render times on a ledger of 1M entries, each <= 300 ms (bench/console.py)
  anchor   committed appends through the client with and without a running `notarium anchor --every 1`
           (frozen with SIGSTOP in the phases without), alternating phases, median ratio (bench/anchor.py)
  host     a ledger host on PostgreSQL: appends/s of 1 and 10 hosted ledgers with 1 and 2 host processes,
           failover time over 10 SIGKILLs of a host process, memory with 100 idle ledgers (bench/host.py)
  e2e      committed appends through the client, plain vs sealed end to end (grants re-read, envelope),
           alternating phases, median ratio (bench/e2e.py)
Results are printed and written to bench/out/results.json (a run with --only updates its sections).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from notarium.auditing import audit, find_target
from notarium.ledger import EngineConfig, init_service, open_ledger

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
PAYLOAD = "x" * 256
CCF_PYTHON = ROOT / ".venv-ccf" / "bin" / "python"


def _scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix="notarium-bench-", dir=ROOT / "bench" / "out"))


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def engine_run(n: int) -> float:
    """Committed tx/s: append n entries as fast as possible, until the last one is committed."""
    d = _scratch() / "svc"
    init_service(d)
    ledger = open_ledger(d, EngineConfig(signature_interval_ms=10.0))
    try:
        start = time.perf_counter()
        last = None
        for _ in range(n):
            last = ledger.append_entry(PAYLOAD, "bench")
        ledger.wait_committed(last)  # type: ignore[arg-type]
        return n / (time.perf_counter() - start)
    finally:
        ledger.close()
        shutil.rmtree(d.parent)


def sqlite_run(n: int) -> float:
    """Baseline: the same payloads as plain rows, committed (fsync, WAL + synchronous=FULL) every 10 ms."""
    d = _scratch()
    conn = sqlite3.connect(d / "baseline.sqlite", isolation_level="DEFERRED")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE entries (id INTEGER PRIMARY KEY, collection TEXT, contents TEXT)")
    try:
        start = time.perf_counter()
        last_commit = start
        batch: list[tuple[str, str]] = []
        for _ in range(n):
            batch.append(("bench", PAYLOAD))
            now = time.perf_counter()
            if now - last_commit >= 0.010:
                conn.executemany("INSERT INTO entries (collection, contents) VALUES (?, ?)", batch)
                conn.commit()
                batch = []
                last_commit = now
        conn.executemany("INSERT INTO entries (collection, contents) VALUES (?, ?)", batch)
        conn.commit()
        return n / (time.perf_counter() - start)
    finally:
        conn.close()
        shutil.rmtree(d)


def bench_engine(quick: bool) -> dict[str, Any]:
    n = 50_000 if quick else 200_000
    rounds = 3
    eng, base = [], []
    for _ in range(rounds):  # interleaved, so both see the same machine noise
        eng.append(engine_run(n))
        base.append(sqlite_run(n))
    e, b = statistics.median(eng), statistics.median(base)
    return {
        "transactions_per_round": n,
        "rounds": rounds,
        "engine_committed_tx_per_s": [round(x) for x in eng],
        "sqlite_baseline_tx_per_s": [round(x) for x in base],
        "engine_median": round(e),
        "sqlite_median": round(b),
        "engine_over_sqlite": round(e / b, 3),
        "settings": "256-byte private entries, fsync on, signature every <= 10 ms (or 5000 tx)",
    }


def bench_memory(quick: bool) -> dict[str, Any]:
    total = 200_000 if quick else 1_000_000
    marks = {100_000: 0.0, total: 0.0}
    d = _scratch() / "svc"
    init_service(d)
    ledger = open_ledger(d)
    try:
        last = None
        for i in range(1, total + 1):
            last = ledger.append_entry(PAYLOAD, f"c{i % 16}")
            if i in marks:
                ledger.wait_committed(last)
                marks[i] = rss_mb()
        assert last is not None
        ledger.wait_committed(last)
    finally:
        ledger.close()
    size = sum(p.stat().st_size for p in (d / "ledger").iterdir()) / 2**20
    return {
        "rss_mb_at_100k": round(marks[100_000], 1),
        f"rss_mb_at_{total // 1000}k": round(marks[total], 1),
        "growth_mb": round(marks[total] - marks[100_000], 1),
        "ledger_mb": round(size, 1),
        "ledger_dir": str(d),
    }


CCF_TIMER = r"""
import sys, time, json
import ccf.ledger as L
L.LedgerValidator.node_certificates = {}
L.LedgerValidator.node_activity_status = {}
start = time.perf_counter()
v = L.LedgerValidator()
n = 0
for chunk in L.Ledger([sys.argv[1]]):
    for tx in chunk:
        v.add_transaction(tx)
        n += 1
print(json.dumps({"seconds": time.perf_counter() - start, "transactions": n,
                  "last": str(v.last_verified_txid()), "signatures": v.signature_count}))
"""


def bench_audit(ledger_dir: Path) -> dict[str, Any]:
    service = ledger_dir
    ours, theirs = [], []
    info: dict[str, Any] = {}
    for _ in range(3):
        start = time.perf_counter()
        report = audit(find_target(service))
        ours.append(time.perf_counter() - start)
        out = subprocess.run(
            [str(CCF_PYTHON), "-c", CCF_TIMER, str(service / "ledger")], check=True, capture_output=True, text=True
        )
        ccf = json.loads(out.stdout.strip().splitlines()[-1])
        theirs.append(ccf["seconds"])
        info = {
            "transactions": report.transactions,
            "ccf_transactions": ccf["transactions"],
            "our_last_signed": str(report.last_signed),
            "ccf_last_verified": ccf["last"],
        }
        if ccf["transactions"] != report.transactions or ccf["last"] != str(report.last_signed):
            raise SystemExit(f"audit and ccf disagree: {info}")
    o, t = statistics.median(ours), statistics.median(theirs)
    return {
        **info,
        "notarium_audit_s": [round(x, 2) for x in ours],
        "ccf_validator_s": [round(x, 2) for x in theirs],
        "notarium_tx_per_s": round(info["transactions"] / o),
        "ccf_tx_per_s": round(info["transactions"] / t),
        "speedup": round(t / o, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    sections = ["engine", "memory", "audit", "http", "client", "export", "tokens", "recovery", "ha", "pgtrail"]
    sections += ["join", "bomb", "console", "host"]
    sections += ["anchor"]
    sections += ["e2e"]
    parser.add_argument("--only", nargs="*", choices=sections)
    args = parser.parse_args(argv)
    only = set(args.only or sections)
    OUT.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if "engine" in only:
        results["engine"] = bench_engine(args.quick)
        print("engine:", json.dumps(results["engine"], indent=2), flush=True)
    ledger_dir = None
    if "memory" in only or "audit" in only:
        results["memory"] = bench_memory(args.quick)
        ledger_dir = Path(results["memory"].pop("ledger_dir"))
        print("memory:", json.dumps(results["memory"], indent=2), flush=True)
    if "audit" in only and ledger_dir is not None:
        results["audit"] = bench_audit(ledger_dir)
        print("audit:", json.dumps(results["audit"], indent=2), flush=True)
    if ledger_dir is not None:
        shutil.rmtree(ledger_dir.parent, ignore_errors=True)
    # the sections that run a server or a client of their own: module bench.NAME, function bench_NAME
    for name in sections[3:]:  # all but engine, memory and audit (above)
        if name in only:
            run = getattr(importlib.import_module(f"bench.{name}"), f"bench_{name}")
            results[name] = run(args.quick)
            print(f"{name}:", json.dumps(results[name], indent=2), flush=True)
    path = OUT / "results.json"
    if args.only and path.exists():  # a partial run keeps the other sections of the last full one
        previous = json.loads(path.read_text())
        previous.update(results)
        results = previous
    path.write_text(json.dumps(results, indent=2))
    print(f"written to {OUT / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
