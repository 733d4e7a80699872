"""``python -m bench --only console``: the console's page render times on a ledger of 1M entries.

A service is pre-filled in-process (no server yet) with 1,000,000 entries: a dense collection
("main", tagged t0…t9), a sparse one ("rare", one entry in 1,000) and a few others. Then `notarium
serve` and `notarium console --profile` run as separate processes, and each page is fetched
``ROUNDS`` times over a logged-in session: its time is the whole answer (the console's reads of
the ledger, verification, rendering). The row badges (each a receipt verified for one row) load
after the page and are measured on their own. Target (issue #18): each page <= 300 ms.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.http import OUT, _env, init_service_cli, start_server, stop_server
from notarium.ledger import open_ledger

ROUNDS = 15
TARGET_MS = 300.0
_URL = re.compile(r"(http://\S+/login\?token=\S+)")


def fill(directory: Path, total: int) -> tuple[list[str], float]:
    """``total`` entries; returns a few TxIds of "main" (first, middle, newest) and the time taken."""
    start = time.perf_counter()
    picked: list[str] = []
    ledger = open_ledger(directory)
    try:
        last = None
        for i in range(total):
            if i % 1000 == 999:
                last = ledger.append_entry(f"rare entry {i}", "rare")
            elif i % 100 == 50:
                last = ledger.append_entry(f"other entry {i}", f"c{i % 7}")
            else:
                last = ledger.append_entry(f"main entry {i} " + "x" * 64, "main", tags=f"t{i % 10}")
                if i in (0, total // 2) or i >= total - 3:
                    picked.append(str(last))
        assert last is not None
        ledger.wait_committed(last)
    finally:
        ledger.close()
    return picked, time.perf_counter() - start


def _console(profile: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "notarium", "console", "--profile", str(profile), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(),
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        m = _URL.search(line)
        if m:
            return proc, m.group(1)
    raise RuntimeError("the console did not start")


def _time(session: httpx.Client, path: str, rounds: int, method: str = "GET", **kw: Any) -> dict[str, Any]:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        r = session.request(method, path, **kw)
        times.append((time.perf_counter() - start) * 1000)
        if r.status_code != 200:
            raise RuntimeError(f"{path}: {r.status_code} {r.text[:300]}")
    median = statistics.median(times)
    return {
        "median_ms": round(median, 1),
        "p90_ms": round(sorted(times)[int(len(times) * 0.9) - 1], 1),
        "max_ms": round(max(times), 1),
        "target": f"<= {TARGET_MS:.0f} ms",
        "met": median <= TARGET_MS,
    }


def bench_console(quick: bool) -> dict[str, Any]:
    total = 100_000 if quick else 1_000_000
    rounds = 5 if quick else ROUNDS
    scratch = Path(tempfile.mkdtemp(prefix="notarium-console-", dir=OUT))
    results: dict[str, Any] = {"entries": total, "rounds": rounds}
    try:
        d = scratch / "svc"
        init_service_cli(d)
        picked, fill_s = fill(d, total)
        results["fill_s"] = round(fill_s, 1)
        print(f"  console: pre-filled {total} entries in {fill_s:.1f} s", flush=True)
        svc = start_server(d)
        console = None
        try:
            profile = scratch / "profile.json"
            profile.write_text(
                json.dumps(
                    {
                        "endpoint": svc.url,
                        "service_cert": str(svc.cacert),
                        "cert": str(svc.user_pem),
                        "state": str(scratch / "trusted.json"),
                    }
                )
            )
            console, login = _console(profile)
            base = login.split("/login?")[0]
            with httpx.Client(base_url=base, timeout=60, follow_redirects=True) as session:
                session.get(login).raise_for_status()
                first, middle, newest = picked[0], picked[1], picked[-1]
                mid_seqno = int(middle.split(".")[1])
                pages = {
                    "overview": "/",
                    "entries_newest": "/entries?collection=main",
                    "entries_deep_page": f"/entries?collection=main&before={mid_seqno}",
                    "entries_sparse_collection": "/entries?collection=rare",
                    "entries_tag_filter": "/entries?collection=main&tag=t3",
                    "entries_txid_range": f"/entries?collection=main&from={first}&to={middle}",
                    "entry_detail": f"/entries/{middle}",
                    "entry_badge": f"/entries/{newest}/badge?h=0",
                    "users": "/users",
                    "governance": "/governance",
                    "append_form": "/append",
                }
                for name, path in pages.items():
                    session.get(path)  # warm (the client's first verification of a node, TLS)
                    results[name] = _time(session, path, rounds)
                    print(f"  console: {name} {results[name]['median_ms']} ms", flush=True)
                receipt = session.get(f"/entries/{middle}/receipt.json").text
                csrf = re.search(r'name="csrf" value="([^"]+)"', session.get("/verify").text)
                assert csrf is not None
                form = {"receipt": (None, receipt), "csrf": (None, csrf.group(1))}
                results["verify_pasted_receipt"] = _time(session, "/verify", rounds, "POST", files=form)
            results["all_met"] = all(v.get("met", True) for v in results.values() if isinstance(v, dict))
        finally:
            if console is not None:
                console.send_signal(signal.SIGTERM)
                console.wait(30)
            results["server_exit_code"] = stop_server(svc)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return results
