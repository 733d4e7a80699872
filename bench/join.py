"""Unauthenticated joins against governance (issue #15): one client asks ``POST /node/join`` with
thousands of self-made keys, then members' governance requests are timed.

For each service (a fresh ``notarium serve`` each, default engine settings):

- ``none``: no join asked, the baseline;
- ``flood``: ``JOINS`` joins asked by 8 client threads, with the server's default join limits;
- ``flood_unlimited``: the same with the limits raised past the flood (``--join-rate`` and
  ``--max-pending-nodes`` 100000): the nodes table holds every one of them, the worst case.

it reports the joins recorded and refused, joins/s, the ledger's growth, and then governance
requests/s (4 client threads): ``member`` — member0's signed state-digest updates, each a committed
transaction; ``forged`` — proposals signed by a stranger (refused 401 ``UnknownMember``).

Run it against other code (e.g. the tree before a change) with ``PYTHONPATH=that/src``: the
server is started with the same interpreter and environment; a server without the join settings
runs ``flood_unlimited`` as ``flood`` (it has no limits to raise).
"""

from __future__ import annotations

import concurrent.futures
import datetime
import itertools
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from bench.http import _env, init_service_cli, start_server, stop_server
from notarium.cluster.join import make_join_request
from notarium.governance.request import sign_request
from notarium.ledger.identity import load_cert, load_private_ec, self_signed_identity
from notarium.verify.keys import cert_fingerprint

ROOT = Path(__file__).resolve().parent.parent
JOINS = 3500
THREADS_JOIN = 8
THREADS_GOV = 4
UNLIMITED = ("--join-rate", "100000", "--max-pending-nodes", "100000")
API = {"api-version": "2024-07-01"}


def _supports_join_limits() -> bool:
    out = subprocess.run(
        [sys.executable, "-m", "notarium", "serve", "--help"], capture_output=True, text=True, env=_env(), check=False
    )
    return "--max-pending-nodes" in out.stdout


def _clients(url: str, cert: Path, n: int) -> list[httpx.Client]:
    return [httpx.Client(base_url=url, verify=str(cert), timeout=60, trust_env=False) for _ in range(n)]


def _ledger_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in (directory / "ledger").iterdir() if p.is_file())


def flood(url: str, cert: Path, joins: int) -> dict[str, Any]:
    keys = [ec.generate_private_key(ec.SECP384R1()) for _ in range(joins)]
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    clients = _clients(url, cert, THREADS_JOIN)
    counter = itertools.count()

    def worker(client: httpx.Client) -> None:
        while (i := next(counter)) < joins:
            body = make_join_request(
                keys[i], hosts=["attacker.example"], address="https://attacker.example:1", created_at=int(time.time())
            )
            r = client.post("/node/join", json=body)
            with lock:
                statuses[r.status_code] += 1

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(THREADS_JOIN) as pool:
        list(pool.map(worker, clients))
    elapsed = time.perf_counter() - start
    for c in clients:
        c.close()
    return {"asked": joins, "statuses": dict(sorted(statuses.items())), "joins_per_s": round(joins / elapsed, 1)}


def _rate(url: str, cert: Path, target: str, bodies: list[bytes], expected: int) -> float:
    """Requests/s of ``bodies`` posted to ``target`` by THREADS_GOV clients; each must answer ``expected``."""
    clients = _clients(url, cert, THREADS_GOV)
    counter = itertools.count()
    wrong: list[str] = []

    def worker(client: httpx.Client) -> None:
        while (i := next(counter)) < len(bodies):
            r = client.post(target, content=bodies[i], params=API, headers={"Content-Type": "application/cose"})
            if r.status_code != expected:
                wrong.append(f"{r.status_code} {r.text[:200]}")

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(THREADS_GOV) as pool:
        list(pool.map(worker, clients))
    elapsed = time.perf_counter() - start
    for c in clients:
        c.close()
    if wrong:
        raise SystemExit(f"governance requests to {target} answered unexpectedly: {wrong[:3]}")
    return round(len(bodies) / elapsed, 1)


def governance_rate(url: str, cert: Path, directory: Path, requests: int) -> dict[str, float]:
    member_cert, member_key = (
        load_cert(directory / "member0_cert.pem"),
        load_private_ec(directory / "member0_privk.pem"),
    )
    stranger_key = ec.generate_private_key(ec.SECP384R1())
    stranger = self_signed_identity(stranger_key, "stranger", now=datetime.datetime.now(datetime.UTC), days=1)
    now = int(time.time())
    # distinct payloads: a request signed twice alike is a replay
    member = [sign_request(member_key, member_cert, "state_digest", b"%d" % i, created_at=now) for i in range(requests)]
    proposal = json.dumps({"actions": [{"name": "trigger_ledger_rekey", "args": {}}]}).encode()
    forged = [sign_request(stranger_key, stranger, "proposal", proposal, created_at=now) for _ in range(requests)]
    update = f"/gov/members/state-digests/{cert_fingerprint(member_cert)}:update"
    return {
        "member_per_s": _rate(url, cert, update, member, 200),
        "forged_per_s": _rate(url, cert, "/gov/members/proposals:create", forged, 401),
    }


def bench_join(quick: bool) -> dict[str, Any]:
    joins = 500 if quick else JOINS
    requests = 200 if quick else 600
    limits = _supports_join_limits()
    scratch = Path(tempfile.mkdtemp(prefix="notarium-join-", dir=ROOT / "bench" / "out"))
    results: dict[str, Any] = {"joins_asked": joins, "server_has_join_limits": limits}
    try:
        for name, ask, args in (
            ("none", 0, ()),
            ("flood", joins, ()),
            ("flood_unlimited", joins, UNLIMITED if limits else ()),
        ):
            directory = scratch / name
            init_service_cli(directory)
            svc = start_server(directory, 120.0, *args)
            try:
                before = _ledger_bytes(directory)
                section: dict[str, Any] = {}
                if ask:
                    section["joins"] = flood(svc.url, svc.cacert, ask)
                    time.sleep(0.5)  # the last signature
                    section["ledger_growth_kb"] = round((_ledger_bytes(directory) - before) / 1024, 1)
                r = httpx.get(svc.url + "/node/network/nodes", verify=str(svc.cacert), timeout=60, trust_env=False)
                section["pending_nodes"] = sum(1 for n in r.json()["nodes"] if n["status"] == "Pending")
                section["governance"] = governance_rate(svc.url, svc.cacert, directory, requests)
                results[name] = section
                print(f"  join: {name}: {json.dumps(section)}", flush=True)
            finally:
                stop_server(svc)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return results


if __name__ == "__main__":
    print(json.dumps(bench_join("--quick" in sys.argv), indent=2))
