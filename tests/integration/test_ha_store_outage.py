"""A replicated service survives its PostgreSQL going away (docs/operations/ha.md, issue #15 point 14).

Three real `notarium serve --store` processes on one real PostgreSQL server, under a write load.
The postmaster is stopped — crashed (``immediate``: no shutdown checkpoint) or shut down cleanly
(``fast``) — for at least 5 s, then started again. While it is down, every node stays up, reports
itself not ready (``/readyz`` 503, naming PostgreSQL), answers writes with 503 in ACL's error
format, and keeps serving the entries it has verified; each node logs that it retries. Once
PostgreSQL is back, every node rejoins (a primary again, the others backups), with the same
process id as before, and nothing seen Committed is lost.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pytest
import requests

from integration.test_ha import API, Load, Node, Service, _make_service, committed_entries, settled, wait_committed
from pg import PgCluster

OUTAGE_S = 5.0  # the postmaster stays down at least this long
BOUND_S = 60.0  # bounded waits: generous, never a figure under test


def _until(what: str, check: Callable[[], bool], timeout: float = BOUND_S) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _answer(svc: Service, node: Node, method: str, path: str, **kw: object) -> requests.Response | None:
    """The node's answer, None while its port is closed (a deposed primary restarting its front)."""
    code = node.server.process.poll()
    assert code is None, f"{node.url} exited ({code}):\n" + "".join(node.server.output[-30:])
    try:
        return svc.call(node, method, path, timeout=10, **kw)
    except requests.RequestException:
        return None


def _not_ready(svc: Service, node: Node) -> bool:
    r = _answer(svc, node, "GET", "/readyz")
    return r is not None and r.status_code == 503 and "PostgreSQL" in r.json().get("reason", "")


def _write_refused(svc: Service, node: Node, round_: int) -> bool:
    r = _answer(svc, node, "POST", f"/app/transactions?{API}", json={"contents": f"during outage {round_}"})
    if r is None or r.status_code != 503:
        return False  # a write accepted just before the node noticed is Pending (later Invalid): ask again
    error = r.json()["error"]
    assert error["code"] == "ServiceUnavailable", r.text
    assert error["message"], r.text
    return True


def _ready(svc: Service, node: Node) -> bool:
    r = _answer(svc, node, "GET", "/readyz")
    return r is not None and r.status_code == 200


def _reads(svc: Service, node: Node, txid: str, contents: str) -> bool:
    r = _answer(svc, node, "GET", f"/app/transactions/{txid}?{API}")
    if r is None:
        return False  # its front is restarting (a deposed primary): ask again
    assert r.status_code == 200, r.text
    assert r.json()["entry"]["contents"] == contents
    return True


def _commits(svc: Service, node: Node, contents: str) -> bool:
    """A write through ``node`` commits (a node that just lost the lease or restarts refuses it: again)."""
    r = _answer(svc, node, "POST", f"/app/transactions?{API}", json={"contents": contents})
    if r is None or r.status_code != 200:
        return False
    return wait_committed(svc, node, r.headers["x-ms-ccf-transaction-id"]) == "Committed"


def _roles(svc: Service) -> list[str]:
    states = [_answer(svc, node, "GET", "/node/state") for node in svc.nodes]
    return sorted(str(r.json()["role"]) if r is not None else "?" for r in states)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["immediate", "fast"])
def test_postgresql_down_under_load_no_node_exits_and_all_rejoin(
    tmp_path: Path, mode: Literal["immediate", "fast"]
) -> None:
    with PgCluster.create() as cluster:
        cluster.psql("CREATE DATABASE ha")
        svc = _make_service(tmp_path, cluster.dsn("ha"))
        try:
            pids = {node.directory: node.server.process.pid for node in svc.nodes}
            first = svc.call(svc.primary(), "POST", f"/app/transactions?{API}", json={"contents": "before"})
            verified = first.headers["x-ms-ccf-transaction-id"]
            for node in svc.nodes:
                assert wait_committed(svc, node, verified) == "Committed"
            with Load(svc) as load:
                for round_ in range(2):
                    time.sleep(1.0)  # load on the current primary
                    cluster.stop(mode)
                    down_at = time.monotonic()
                    for node in svc.nodes:
                        _until(f"{node.url} never said it was not ready", lambda n=node: _not_ready(svc, n))
                        _until(f"{node.url} never refused a write", lambda n=node, r=round_: _write_refused(svc, n, r))
                        _until(
                            f"{node.url} never served a verified read",
                            lambda n=node: _reads(svc, n, verified, "before"),
                        )
                    assert all(node.server.process.poll() is None for node in svc.nodes)
                    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
                    assert all(node.server.process.poll() is None for node in svc.nodes)
                    cluster.start()
                    svc.primary(timeout=BOUND_S)
                    for node in svc.nodes:
                        _until(f"{node.url} never became ready again", lambda n=node: _ready(svc, n))
                        _until(
                            f"no write through {node.url} committed",
                            lambda n=node, r=round_: _commits(svc, n, f"after {r}"),
                        )
                    _until("not one primary and two backups", lambda: _roles(svc) == ["Backup", "Backup", "Primary"])
                time.sleep(1.0)
            # the same processes throughout: none exited, none was restarted
            assert {node.directory: node.server.process.pid for node in svc.nodes} == pids
            assert all(node.server.process.poll() is None for node in svc.nodes)
            for node in svc.nodes:  # the retries were visible in each node's log
                assert any("PostgreSQL" in line and "retrying in" in line for line in node.server.output), node.url
            assert load.seen_committed
            settled(svc, svc.nodes)
            listings = [committed_entries(svc, node) for node in svc.nodes]
            assert all(listing == listings[0] for listing in listings)
            for txid in load.seen_committed:  # seen Committed once: Committed everywhere, with the bytes written
                assert listings[0].get(txid) == load.written[txid], txid
        finally:
            with contextlib.suppress(Exception):
                cluster.start()
            svc.stop()
