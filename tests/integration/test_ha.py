"""Several nodes of one service on a real PostgreSQL server (docs/design/ha.md), as real processes.

Nodes are `notarium serve DIR --store postgresql://…` processes (each an engine and an HTTP front);
the second and third join through the first with the real `notarium join`. Tests:

- the unmodified Azure SDK writes through each node; every node reads every entry back the same,
  Committed, with a receipt the SDK's ``verify_receipt`` accepts;
- every node answers ``/app/enclaveQuotes`` with a quote for each of the three trusted nodes (both
  SDKs check the virtual evidence and measurement, as ACL's own verification test does);
- the primary killed with SIGKILL under a write load, repeatedly: another node takes over within
  the bound; every TxId seen Committed anywhere is Committed on every node with the bytes written;
  no TxId is Committed on one node and Invalid on another; the killed node comes back as a
  follower; an export from a node passes `notarium audit` and the `ccf` package's validator;
- a deposed primary (SIGSTOP, then SIGCONT after a takeover) writes nothing and rejoins as a
  follower;
- PostgreSQL primary + synchronous standby: the PostgreSQL primary stopped, the standby promoted,
  the service goes on with nothing Committed lost;
- a row changed or deleted in PostgreSQL: a node filling from the log stops following and says so
  (``/readyz``), and ``notarium audit --store`` fails at that transaction.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import requests

from integration.oracle import ccf_validate, interpreter
from integration.server import Server, clean_env, new_identity, running
from integration.test_identity_change import _restore_secrets, _write
from leaks import files_holding, tables_holding
from notarium.auditing import audit, find_target
from notarium.client.export import export_ledger
from notarium.ledger import init_service
from notarium.ledger.identity import load_cert
from notarium.ledger.service import recover_service_identity
from notarium.verify import verify_json_receipt
from pg import primary_with_standby

TTL = "1"  # lease seconds: a dead primary is replaced in about this long
FAILOVER_BOUND_S = 10.0
NODE_ARGS = ("--lease-ttl", TTL, "--chunk-size", "20000", "--auto-trust-virtual-nodes")
SDK_SCENARIO = Path(__file__).with_name("sdk_ha_scenario.py")
SDK_SUITE_SCENARIO = Path(__file__).with_name("sdk_acl_suite_scenario.py")
API = "api-version=2022-05-13"
JOIN = (sys.executable, "-m", "notarium", "join")


@dataclass
class Node:
    directory: Path
    server: Server
    stack: contextlib.ExitStack

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def pids(self) -> list[int]:
        """The engine process and its HTTP front."""
        pid = self.server.process.pid
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            children = []
        return [pid, *map(int, children)]


@dataclass
class Service:
    root: Path
    dsn: str
    nodes: list[Node] = field(default_factory=list)
    _local: threading.local = field(default_factory=threading.local)
    _sessions: list[requests.Session] = field(default_factory=list)

    @property
    def cert(self) -> Path:
        return self.root / "n0" / "service_cert.pem"

    @property
    def admin(self) -> Path:
        return self.root / "n0" / "user0_combined.pem"

    def call(self, node: Node, method: str, path: str, **kw: Any) -> requests.Response:
        """One request, TLS pinned to the service certificate on the request itself; keep-alive per thread."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            self._sessions.append(session)
        return session.request(
            method, node.url + path, verify=str(self.cert), cert=str(self.admin), timeout=kw.pop("timeout", 10), **kw
        )

    def state(self, node: Node) -> dict[str, Any]:
        result: dict[str, Any] = self.call(node, "GET", "/node/state", timeout=3).json()
        return result

    def start(self, directory: Path, *extra: str) -> Node:
        stack = contextlib.ExitStack()
        server = stack.enter_context(running(directory, "--store", self.dsn, *NODE_ARGS, *extra, timeout=60))
        node = Node(directory, server, stack)
        self.nodes.append(node)
        return node

    def join(self, name: str) -> Node:
        directory = self.root / name
        primary = self.primary()
        proc = subprocess.run(
            [*JOIN, str(directory), "--target", primary.url, "--service-cert", str(self.cert), "--wait", "30"],
            capture_output=True,
            text=True,
            timeout=60,
            env=clean_env(),
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return self.start(directory)

    def alive(self) -> list[Node]:
        return [n for n in self.nodes if n.server.process.poll() is None]

    def primary(self, timeout: float = 20.0, other_than: Node | None = None) -> Node:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node in self.alive():
                if node is other_than:
                    continue
                with contextlib.suppress(requests.RequestException, ValueError):
                    if self.state(node)["role"] == "Primary":
                        return node
            time.sleep(0.05)
        raise AssertionError("no primary")

    def stop(self) -> None:
        for node in self.nodes:
            node.stack.close()
        for session in self._sessions:
            session.close()


def _make_service(root: Path, dsn: str, n: int = 3) -> Service:
    init_service(root / "n0")
    svc = Service(root, dsn)
    svc.start(root / "n0")
    svc.primary()
    for i in range(1, n):
        svc.join(f"n{i}")
    return svc


@pytest.fixture
def service(tmp_path: Path, pg_dsn: str) -> Iterator[Service]:
    svc = _make_service(tmp_path, pg_dsn)
    yield svc
    svc.stop()


def wait_committed(svc: Service, node: Node, txid: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    state = "Pending"
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            r = svc.call(node, "GET", f"/app/transactions/{txid}/status?{API}", timeout=3)
            if r.status_code == 404:
                return "Invalid"
            state = r.json()["state"]
            if state != "Pending":
                return state
        time.sleep(0.05)
    return state


# --- the SDK through every node ---------------------------------------------------------------


def test_the_sdk_writes_through_each_node_and_reads_agree(service: Service) -> None:
    python = interpreter("acl1")
    config = {
        "nodes": [n.url for n in service.nodes],
        "service_cert": str(service.cert),
        "admin_pem": str(service.admin),
        "per_node": 3,
    }
    proc = subprocess.run(
        [str(python), "-I", str(SDK_SCENARIO)],
        input=json.dumps(config),
        capture_output=True,
        text=True,
        timeout=180,
        env=clean_env(),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout)
    assert report["errors"] == []
    assert len(report["written"]) == 3 * len(service.nodes)
    assert {w["node"] for w in report["written"]} == {0, 1, 2}  # two of them were backups: forwarded
    written = {w["txid"]: w["contents"] for w in report["written"]}
    assert len(report["reads"]) == len(written) * len(service.nodes)
    for read in report["reads"]:
        assert "error" not in read, read
        assert read["contents"] == written[read["txid"]]
        assert read["status"] == "Committed"
        assert read["receipt_verified"] is True


def test_a_user_added_through_a_backup_acts_on_every_node(service: Service, tmp_path: Path) -> None:
    primary = service.primary()
    backups = [n for n in service.nodes if n is not primary]
    pem, user_id = new_identity(tmp_path, "reader")
    r = service.call(
        backups[0],
        "PATCH",
        f"/app/users/{user_id}?{API}",
        data='{"assignedRole": "Reader"}',
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert r.status_code == 200, r.text  # forwarded to the primary, answered by it
    entry = service.call(primary, "POST", f"/app/transactions?{API}", json={"contents": "for the reader"})
    txid = entry.headers["x-ms-ccf-transaction-id"]
    for node in service.nodes:
        assert wait_committed(service, node, txid) == "Committed"

    def as_reader(node: Node, method: str, path: str, **kw: Any) -> requests.Response:
        return requests.request(method, node.url + path, verify=str(service.cert), cert=str(pem), timeout=10, **kw)

    for node in service.nodes:  # every node learned of the new user from the log
        deadline = time.monotonic() + 10
        while (got := as_reader(node, "GET", f"/app/transactions/{txid}?{API}")).status_code == 401:
            assert time.monotonic() < deadline, got.text
            time.sleep(0.05)
        assert got.status_code == 200, got.text
        assert got.json()["entry"]["contents"] == "for the reader"
        # a Reader's write is refused by the primary, wherever it arrives
        denied = as_reader(node, "POST", f"/app/transactions?{API}", json={"contents": "no"})
        assert denied.status_code == 403, denied.text
        assert denied.json()["error"]["code"] == "NotAllowed"


def test_every_node_quotes_every_trusted_node(service: Service) -> None:
    """Issue #16, point 6: ``/app/enclaveQuotes`` lists one quote per trusted node (three, as ACL's
    own verification test expects of ACL), through every node, checked by both unmodified SDKs:
    the virtual platform's evidence in ``raw``, bound to each node id, and ``mrenclave``."""
    listed = service.call(service.nodes[0], "GET", f"/node/network/nodes?{API}").json()["nodes"]
    trusted = sorted(n["nodeId"] for n in listed if n["status"] == "Trusted")
    assert len(trusted) == 3
    for node in service.nodes:
        body = service.call(node, "GET", f"/app/enclaveQuotes?{API}").json()
        assert sorted(body["enclaveQuotes"]) == trusted
        assert body["currentNodeId"] == service.call(node, "GET", f"/node/network/nodes?{API}").json()["currentNodeId"]
        for oracle in ("acl1", "acl2"):
            config = {
                "endpoint": node.url,
                "service_cert": str(service.cert),
                "admin_pem": str(service.admin),
                "aad_token": None,
                "quotes": 3,
                "only": ["p6:"],
            }
            proc = subprocess.run(
                [str(interpreter(oracle)), "-I", str(SDK_SUITE_SCENARIO)],
                input=json.dumps(config),
                capture_output=True,
                text=True,
                timeout=120,
                env=clean_env(),
                check=False,
            )
            assert proc.returncode == 0, proc.stderr[-4000:]
            report = json.loads(proc.stdout)
            assert report["checks"]["p6:enclave_quotes"]["ok"], report["checks"]["p6:enclave_quotes"]["error"]
            assert report["data"]["quotes"] == {"currentNodeId": body["currentNodeId"], "nodes": trusted}


# --- failover -----------------------------------------------------------------------------------


class Load:
    """Writers posting to any live node; a checker noting every TxId some node says is Committed."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc
        self.stop = threading.Event()
        self.written: dict[str, str] = {}  # txid -> contents, for every POST answered 200
        self.seen_committed: set[str] = set()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._write, args=(i,), daemon=True) for i in range(3)]
        self.threads.append(threading.Thread(target=self._check, daemon=True))

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(15)

    def _write(self, writer: int) -> None:
        k = 0
        while not self.stop.is_set():
            nodes = self.svc.alive()
            if not nodes:
                time.sleep(0.05)
                continue
            node = random.choice(nodes)
            contents = f"writer {writer} entry {k}"
            k += 1
            try:
                r = self.svc.call(node, "POST", f"/app/transactions?{API}", json={"contents": contents}, timeout=5)
            except requests.RequestException:
                continue
            if r.status_code == 200:
                with self.lock:
                    self.written[r.headers["x-ms-ccf-transaction-id"]] = contents

    def _check(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                pending = [t for t in self.written if t not in self.seen_committed][-50:]
            for txid in pending:
                nodes = self.svc.alive()
                if not nodes:
                    break
                with contextlib.suppress(requests.RequestException, ValueError, KeyError):
                    r = self.svc.call(random.choice(nodes), "GET", f"/app/transactions/{txid}/status?{API}", timeout=3)
                    if r.status_code == 200 and r.json()["state"] == "Committed":
                        with self.lock:
                            self.seen_committed.add(txid)
            time.sleep(0.02)


def settled(svc: Service, nodes: list[Node], timeout: float = 20.0) -> None:
    """Wait until every node has committed the same last transaction."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException, ValueError, KeyError):
            if len({svc.state(n)["committed"] for n in nodes}) == 1:
                return
        time.sleep(0.1)
    raise AssertionError("the nodes did not converge")


def committed_entries(svc: Service, node: Node) -> dict[str, str]:
    """Every committed entry of the default collection, by TxId, listed page by page."""
    out: dict[str, str] = {}
    path: str | None = f"/app/transactions?{API}"
    while path is not None:
        body = svc.call(node, "GET", path).json()
        out.update({e["transactionId"]: e["contents"] for e in body["entries"]})
        path = body.get("nextLink")
    return out


def _kill(node: Node) -> None:
    for pid in node.pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    node.server.process.wait(10)


def test_killing_the_primary_under_load_loses_nothing_committed(service: Service, tmp_path: Path) -> None:
    failovers: list[float] = []
    with Load(service) as load:
        for _round in range(3):
            time.sleep(1.0)  # load on the current primary
            old = service.primary()
            old_view = service.state(old)["view"]
            _kill(old)
            killed_at = time.monotonic()
            new = service.primary(timeout=FAILOVER_BOUND_S + 5, other_than=old)
            failovers.append(time.monotonic() - killed_at)
            assert service.state(new)["view"] > old_view
            # the killed node comes back, as a follower of the new primary
            service.nodes.remove(old)
            old.stack.close()
            back = service.start(old.directory)
            assert service.state(back)["role"] == "Backup"
        time.sleep(1.0)
    assert max(failovers) < FAILOVER_BOUND_S, failovers
    assert len(load.written) > 50
    assert load.seen_committed
    nodes = service.alive()
    settled(service, nodes)
    listings = [committed_entries(service, node) for node in nodes]
    assert all(listing == listings[0] for listing in listings)  # every node holds the same committed entries
    committed = listings[0]
    for txid in load.seen_committed:  # seen Committed once: Committed everywhere, with the bytes written
        assert committed.get(txid) == load.written[txid], txid
    for txid, contents in load.written.items():
        if txid in committed:
            assert committed[txid] == contents
        else:  # never committed: Invalid on every node (no node says Committed, no node says Pending)
            assert {wait_committed(service, node, txid) for node in nodes} == {"Invalid"}, txid
    # an export from one node: the audit and the ccf package's validator accept it
    node = nodes[-1]
    out = tmp_path / "export"
    with httpx.Client(base_url=node.url, verify=_pinned(service), timeout=30) as client:
        result = export_ledger(client, out, service.cert.read_bytes())
    assert result.chunks
    report = audit(find_target(out))
    assert report.service_cert_pinned
    assert report.last_signed is not None
    validation = ccf_validate(out / "ledger", out / "service_cert.pem")
    assert validation.ok, validation.error


def _pinned(svc: Service) -> Any:
    import ssl

    ctx = ssl.create_default_context(cafile=str(svc.cert))
    ctx.check_hostname = False
    ctx.load_cert_chain(str(svc.admin))
    return ctx


def test_a_deposed_primary_cannot_write(service: Service) -> None:
    old = service.primary()
    old_view = service.state(old)["view"]
    for pid in old.pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        new = service.primary(timeout=FAILOVER_BOUND_S + 5, other_than=old)
        new_view = service.state(new)["view"]
        assert new_view > old_view
    finally:
        for pid in old.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    # whatever the old primary does now, nothing of its view lands after the takeover
    with psycopg.connect(service.dsn) as conn:
        (first_new,) = conn.execute("SELECT min(seqno) FROM notarium.tx WHERE view = %s", [new_view]).fetchone()
    for i in range(5):
        with contextlib.suppress(requests.RequestException):
            service.call(old, "POST", f"/app/transactions?{API}", json={"contents": f"stale {i}"}, timeout=5)
    time.sleep(2.0)
    with psycopg.connect(service.dsn) as conn:
        (stale,) = conn.execute(
            "SELECT count(*) FROM notarium.tx WHERE view = %s AND seqno >= %s", [old_view, first_new]
        ).fetchone()
    assert stale == 0
    # it starts again as a follower, and writes through it reach the new primary
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException, ValueError, KeyError):
            if service.state(old)["role"] == "Backup":
                break
        time.sleep(0.1)
    r = service.call(old, "POST", f"/app/transactions?{API}", json={"contents": "through the old primary"})
    assert r.status_code == 200, r.text
    txid = r.headers["x-ms-ccf-transaction-id"]
    assert int(txid.split(".")[0]) >= new_view
    assert wait_committed(service, old, txid) == "Committed"
    assert any("starting again as a follower" in line for line in old.server.output)


# --- PostgreSQL failover ----------------------------------------------------------------------


def test_postgresql_failover_to_the_synchronous_standby(tmp_path: Path) -> None:
    primary, standby = primary_with_standby()
    try:
        primary.psql("CREATE DATABASE ha")
        standby_wait = time.monotonic() + 20
        while time.monotonic() < standby_wait:  # the database reaches the standby
            with contextlib.suppress(psycopg.Error):
                standby.psql("SELECT 1", dbname="ha")
                break
            time.sleep(0.1)
        dsn = (
            f"postgresql://postgres@127.0.0.1:{primary.port},127.0.0.1:{standby.port}/ha"
            "?target_session_attrs=read-write&connect_timeout=2"
        )
        svc = _make_service(tmp_path, dsn, n=2)
        try:
            node = svc.primary()
            before = []
            for i in range(20):
                r = svc.call(node, "POST", f"/app/transactions?{API}", json={"contents": f"before {i}"})
                assert r.status_code == 200
                before.append(r.headers["x-ms-ccf-transaction-id"])
            assert wait_committed(svc, node, before[-1]) == "Committed"
            primary.stop("immediate")
            standby.promote()
            after = None
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and after is None:
                for n in svc.alive():
                    with contextlib.suppress(requests.RequestException):
                        r = svc.call(n, "POST", f"/app/transactions?{API}", json={"contents": "after"}, timeout=5)
                        if r.status_code == 200:
                            txid = r.headers["x-ms-ccf-transaction-id"]
                            if wait_committed(svc, n, txid, timeout=10) == "Committed":
                                after = txid
                                break
                time.sleep(0.2)
            assert after is not None, "the service did not continue on the promoted standby"
            for n in svc.alive():
                for txid in before:
                    assert wait_committed(svc, n, txid) == "Committed"
            with psycopg.connect(standby.dsn("ha")) as conn:
                (rows,) = conn.execute("SELECT count(*) FROM notarium.tx").fetchone()
            assert rows >= int(after.split(".")[1])
        finally:
            svc.stop()
    finally:
        for cluster in (primary, standby):
            cluster.destroy()


# --- tampering ----------------------------------------------------------------------------------


@pytest.mark.parametrize("tamper", ["change", "delete"])
def test_tampering_in_postgresql_is_detected(service: Service, tamper: str) -> None:
    node = service.primary()
    txids = []
    for i in range(10):
        r = service.call(node, "POST", f"/app/transactions?{API}", json={"contents": f"entry {i}"})
        txids.append(r.headers["x-ms-ccf-transaction-id"])
    assert wait_committed(service, node, txids[-1]) == "Committed"
    target = int(txids[3].split(".")[1])
    with psycopg.connect(service.dsn, autocommit=True) as conn:
        if tamper == "change":
            conn.execute(
                "UPDATE notarium.tx SET data = overlay(data placing '\\x00'::bytea from 60 for 1) WHERE seqno = %s",
                [target],
            )
        else:
            conn.execute("DELETE FROM notarium.tx WHERE seqno = %s", [target])
    # the audit of the log finds it: a deleted row at its seqno; a changed one at the signature
    # that covers it, or, with a node's directory (its ledger secrets), at the row itself
    audit_store = [sys.executable, "-m", "notarium", "audit", "--store", service.dsn]
    proc = subprocess.run(
        [*audit_store, "--service-cert", str(service.cert), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
        check=False,
    )
    assert proc.returncode != 0
    if tamper == "delete":
        assert "audit failed" in proc.stderr
        assert f"?.{target} [log-sequence]" in proc.stderr, proc.stderr
    else:
        failure = json.loads(proc.stdout)
        assert failure["check"] == "signature-root"
        covering = int(failure["txid"].split(".")[1])
        assert target < covering <= int(txids[-1].split(".")[1]) + 1
        proc = subprocess.run(
            [*audit_store, str(service.root / "n1"), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            env=clean_env(),
            check=False,
        )
        assert proc.returncode != 0
        failure = json.loads(proc.stdout)
        assert (failure["check"], failure["txid"]) == ("entry-secret", txids[3]), failure
        assert f"the root signed at {failure['txid'].split('.')[0]}.{covering}" in failure["error"]
    # a node filling its replica from the log finds it: it stops following and says so
    fresh = service.join("n9")
    deadline = time.monotonic() + 20
    ready = None
    while time.monotonic() < deadline:
        ready = service.call(fresh, "GET", "/readyz")
        if ready.status_code == 503:
            break
        time.sleep(0.1)
    assert ready is not None
    assert ready.status_code == 503
    assert "failed verification" in ready.json()["reason"]
    assert service.state(fresh)["following"] is False


# --- confidentiality at rest --------------------------------------------------------------------


def test_collection_ids_and_tags_are_in_no_node_directory_and_not_in_postgresql(service: Service) -> None:
    """Entries with marked collection ids and tags, written through the primary: every node (the
    backups index what they follow) lists the collection and finds the entries by collection and
    tag, and the markers are in no file of any node's directory nor in any table of PostgreSQL."""
    in_collection, in_tag = secrets.token_hex(8), secrets.token_hex(8)
    collection, tag = f"orders-{in_collection}", f"urgent-{in_tag}"
    primary = service.primary()
    txids = []
    for i in range(6):
        params = {"collectionId": collection, "tags": f"{tag},x" if i % 2 else "x"}
        r = service.call(primary, "POST", f"/app/transactions?{API}", params=params, json={"contents": f"e{i}"})
        assert r.status_code == 200, r.text
        txids.append(r.headers["x-ms-ccf-transaction-id"])
    for node in service.nodes:
        assert wait_committed(service, node, txids[-1]) == "Committed"
        r = service.call(node, "GET", f"/app/collections?{API}")
        assert {"collectionId": collection} in r.json()["collections"], r.text
        r = service.call(node, "GET", f"/app/transactions?{API}", params={"collectionId": collection, "tag": tag})
        assert [e["transactionId"] for e in r.json()["entries"]] == txids[1::2], r.text
    service.stop()
    markers = [in_collection.encode(), in_tag.encode()]
    assert files_holding(service.root, markers) == []
    assert tables_holding(service.dsn, markers) == []


# --- a service that went through a disaster recovery ------------------------------------------------


def test_a_node_joining_after_an_identity_change_verifies_the_old_history(tmp_path: Path, pg_dsn: str) -> None:
    """Signatures made under the previous service identity verify only through its endorsement by
    the new one: the join carries the chain, and the new node follows the whole log."""
    d0 = tmp_path / "n0"
    init_service(d0)
    old = _write(d0, ["before the disaster"])
    _restore_secrets(d0)
    (d0 / "secrets" / "service_privk.pem").unlink()  # the old service key is lost in the disaster
    recover_service_identity(d0)
    svc = Service(tmp_path, pg_dsn)
    try:
        svc.start(d0)
        svc.primary()
        joined = svc.join("n1")
        assert (tmp_path / "n1" / "previous_service_identities" / "0000.endorsement.pem").is_file()
        primary_committed = svc.state(svc.primary())["committed"]
        deadline = time.monotonic() + 20
        while (state := svc.state(joined))["committed"] != primary_committed:
            assert state["following"], "the joined node stopped following the log"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        r = svc.call(joined, "GET", f"/app/transactions/{old[0]}?{API}")
        assert r.json()["entry"]["contents"] == "before the disaster"
        receipt = svc.call(joined, "GET", f"/app/transactions/{old[0]}/receipt?{API}").json()
        verify_json_receipt(receipt["receipt"], load_cert(svc.cert), application_claims=receipt["applicationClaims"])
    finally:
        svc.stop()


def test_a_rekey_voted_through_a_backup_reaches_every_node(service: Service) -> None:
    """Governance through a backup (forwarded to the primary), a rekey carried out by the primary,
    the new ledger secret reaching every node through the log: all read what is written after it."""
    primary = service.primary()
    backup = next(n for n in service.nodes if n is not primary)

    def gov(*args: str) -> dict[str, Any]:
        connection = ("--endpoint", backup.url, "--dir", str(service.root / "n0"), "--json")
        p = subprocess.run(
            [sys.executable, "-m", "notarium", "gov", *args, *connection],
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=60,
            check=False,
        )
        assert p.returncode == 0, p.stdout + p.stderr
        return dict(json.loads(p.stdout))

    proposal = gov("propose", "--action", "trigger_ledger_rekey")
    assert gov("vote", proposal["proposalId"], "--accept")["proposalState"] == "Accepted"
    marker = b"public:notarium.nodes.ledger_secrets"
    deadline = time.monotonic() + 20
    rekey = None
    while rekey is None:
        assert time.monotonic() < deadline, "the rekey never reached the log"
        with psycopg.connect(service.dsn) as conn:
            row = conn.execute(
                "SELECT seqno FROM notarium.tx WHERE position(%s in data) > 0 ORDER BY seqno LIMIT 1", [marker]
            ).fetchone()
        rekey = row[0] if row is not None else None
        time.sleep(0.1)
    r = service.call(backup, "POST", f"/app/transactions?{API}", json={"contents": "under the new secret"})
    txid = r.headers["x-ms-ccf-transaction-id"]
    assert int(txid.split(".")[1]) > rekey
    for node in service.nodes:
        assert wait_committed(service, node, txid) == "Committed"
        got = service.call(node, "GET", f"/app/transactions/{txid}?{API}")
        assert got.json()["entry"]["contents"] == "under the new secret"
        assert service.state(node)["following"] is True
