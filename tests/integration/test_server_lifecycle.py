"""Restart and shutdown of `notarium serve` (a real process, real TLS, SIGTERM).

- A restart between writes and reads loses nothing committed: every entry reads back identical
  through every read operation, its receipt verifies (notarium's ``verify_json_receipt``, with its
  application claims), users registered before the restart still act, and new writes continue
  after the old ones.
- SIGTERM during a write load: the process exits 0 within the shutdown timeout, the ledger on disk
  passes ``notarium audit`` with no unsigned tail, and every write that was answered 200 and then
  seen Committed is there after a restart (any other answered write is Committed with its own
  contents or does not exist: never Pending, never different).
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import requests
from cryptography import x509

from integration.server import Server, clean_env, running
from integration.server import new_identity as new_user
from notarium.auditing import audit, find_target
from notarium.ledger import init_service
from notarium.server.config import ServerConfig
from notarium.server.runner import KILL_GRACE_S
from notarium.types import TxId
from notarium.verify import verify_json_receipt

CA_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
SHUTDOWN_TIMEOUT = ServerConfig().shutdown_timeout_s
TIMEOUT = 10
N_ENTRIES = 24
COLLECTIONS = ("subledger:0", "restart-a", "restart-b")
WRITERS = 4
LOAD_SECONDS = 1.0


@pytest.fixture(autouse=True)
def no_system_ca(monkeypatch: pytest.MonkeyPatch) -> None:
    """The service certificate is the only trust anchor: requests would prefer REQUESTS_CA_BUNDLE."""
    for name in CA_VARIABLES:
        monkeypatch.delenv(name, raising=False)


class Client:
    """HTTP calls to one server as one identity, ``verify=`` pinned on every request."""

    def __init__(self, server: Server, pem: Path | None = None) -> None:
        self.url = server.url
        self.verify = str(server.service_cert)
        self.session = requests.Session()
        self.session.cert = str(pem or server.admin_pem)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.session.close()

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.session.request(method, self.url + path, verify=self.verify, timeout=TIMEOUT, **kwargs)

    def get(self, path: str, **kwargs: Any) -> Any:
        r = self.request("GET", path, **kwargs)
        assert r.status_code == 200, f"GET {path}: {r.status_code} {r.text}"
        return r.json()

    def write(self, contents: str, collection: str | None = None, tags: str | None = None) -> str:
        params = {k: v for k, v in (("collectionId", collection), ("tags", tags)) if v is not None}
        r = self.request("POST", "/app/transactions", params=params, json={"contents": contents})
        assert r.status_code == 200, r.text
        return r.headers["x-ms-ccf-transaction-id"]

    def status(self, txid: str) -> str:
        return str(self.get(f"/app/transactions/{txid}/status")["state"])

    def wait_committed(self, txid: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while (state := self.status(txid)) != "Committed":
            assert state == "Pending", f"{txid} is {state}"
            assert time.monotonic() < deadline, f"{txid} still Pending after {TIMEOUT} s"
            time.sleep(0.005)


def new_ledger(base: Path) -> Path:
    directory = base / "ledger"
    init_service(directory)
    return directory


def stop_in_time(server: Server) -> float:
    start = time.monotonic()
    rc = server.stop(signal.SIGTERM, timeout=SHUTDOWN_TIMEOUT + 20)
    elapsed = time.monotonic() - start
    assert rc == 0, f"exit code {rc}:\n{''.join(server.output[-40:])}"
    # the front finished its requests and exited by itself (else serve kills it after the timeout
    # and a grace, and says so); the time bound only catches a hang, not a slow machine
    assert not any("did not stop in time" in line for line in server.output), "".join(server.output[-40:])
    assert elapsed < SHUTDOWN_TIMEOUT + KILL_GRACE_S, f"took {elapsed:.1f} s to stop"
    return elapsed


def audit_clean(directory: Path) -> None:
    report = audit(find_target(directory))
    assert report.unsigned_tail == 0, report.summary()
    assert report.torn_tail_bytes == 0, report.summary()
    assert report.service_cert_pinned, report.summary()
    assert report.last_signed is not None


def test_restart_loses_nothing_committed(tmp_path: Path) -> None:
    directory = new_ledger(tmp_path)
    contributor_pem, contributor_id = new_user(tmp_path, "contributor")
    written: list[tuple[str, str, str, str | None]] = []  # txid, collection, contents, tags
    with running(directory, "--page-size", "7") as server, Client(server) as admin:
        r = admin.request(
            "PATCH",
            f"/app/users/{contributor_id}",
            data='{"assignedRole": "Contributor"}',
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert r.status_code == 200, r.text
        for i, collection in zip(range(N_ENTRIES), itertools.cycle(COLLECTIONS), strict=False):
            contents = f"entry {i} in {collection} ✓"
            tags = "even" if i % 2 == 0 else None
            written.append((admin.write(contents, collection, tags), collection, contents, tags))
        for txid, *_ in written:
            admin.wait_committed(txid)
        stop_in_time(server)
    audit_clean(directory)

    service_cert = x509.load_pem_x509_certificate((directory / "service_cert.pem").read_bytes())
    last_before = max(TxId.parse(w[0]) for w in written)
    with running(directory, "--page-size", "7") as server, Client(server) as admin:
        for txid, collection, contents, tags in written:
            assert admin.status(txid) == "Committed", txid
            body = admin.get(f"/app/transactions/{txid}", params={"collectionId": collection})
            assert body["state"] == "Ready"
            entry = body["entry"]
            assert (entry["transactionId"], entry["collectionId"], entry["contents"]) == (txid, collection, contents)
            assert entry.get("tags") == tags
            receipt = admin.get(f"/app/transactions/{txid}/receipt")
            assert receipt["state"] == "Ready"
            assert receipt["transactionId"] == txid
            claims = receipt["applicationClaims"]
            assert claims[0]["ledgerEntry"]["contents"] == contents
            assert claims[0]["ledgerEntry"]["collectionId"] == collection
            verify_json_receipt(receipt["receipt"], service_cert, application_claims=claims)
        for collection in COLLECTIONS:
            mine = [w for w in written if w[1] == collection]
            listed: list[dict[str, Any]] = []
            path, params = "/app/transactions", {"collectionId": collection}
            while True:
                page = admin.get(path, params=params)
                listed.extend(page["entries"])
                if "nextLink" not in page:
                    break
                path, params = page["nextLink"], {}
            assert [(e["transactionId"], e["contents"]) for e in listed] == [(w[0], w[2]) for w in mine]
            current = admin.get("/app/transactions/current", params={"collectionId": collection})
            assert current["transactionId"] == mine[-1][0]
            tagged = admin.get("/app/transactions", params={"collectionId": collection, "tag": "even"})["entries"]
            assert [e["transactionId"] for e in tagged] == [w[0] for w in mine if w[3] == "even"]
        collections = {c["collectionId"] for c in admin.get("/app/collections")["collections"]}
        assert set(COLLECTIONS) <= collections
        # the user registered before the restart still acts; new writes come after the old ones
        with Client(server, contributor_pem) as contributor:
            txid = contributor.write("after the restart", "restart-a")
            contributor.wait_committed(txid)
        new = TxId.parse(txid)
        assert (new.view, new.seqno) > (last_before.view, last_before.seqno)
        assert new.seqno > last_before.seqno
        assert admin.get(f"/app/transactions/{txid}")["entry"]["contents"] == "after the restart"
        stop_in_time(server)
    audit_clean(directory)


@dataclass
class Load:
    """What the writer threads saw."""

    acked: dict[str, tuple[str, str]] = field(default_factory=dict)  # txid -> (collection, contents), 200s
    committed: set[str] = field(default_factory=set)  # acked and then seen Committed
    early_errors: list[str] = field(default_factory=list)  # failures before SIGTERM was sent
    late_errors: int = 0  # failures after it (expected: the server is going away)
    lock: threading.Lock = field(default_factory=threading.Lock)
    signalled: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)


def writer(server: Server, load: Load, n: int) -> None:
    collection = f"load-{n % 2}"
    with Client(server) as client:
        for i in itertools.count():
            if load.stop.is_set():
                return
            contents = f"writer {n} entry {i}"
            try:
                r = client.request(
                    "POST", "/app/transactions", params={"collectionId": collection}, json={"contents": contents}
                )
                if r.status_code != 200:
                    raise RuntimeError(f"POST answered {r.status_code} {r.text[:200]}")
                txid = r.headers["x-ms-ccf-transaction-id"]
                with load.lock:
                    load.acked[txid] = (collection, contents)
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:
                    s = client.request("GET", f"/app/transactions/{txid}/status")
                    if s.status_code != 200:
                        raise RuntimeError(f"status of {txid} answered {s.status_code} {s.text[:200]}")
                    state = s.json()["state"]
                    if state == "Committed":
                        with load.lock:
                            load.committed.add(txid)
                        break
                    if state != "Pending":
                        raise RuntimeError(f"{txid} is {state}")
                    time.sleep(0.002)
            except Exception as exc:  # every failure is recorded: the thread must not raise
                with load.lock:
                    if load.signalled.is_set():
                        load.late_errors += 1
                    else:
                        load.early_errors.append(f"{type(exc).__name__}: {exc}")
                if load.signalled.is_set():
                    return
                time.sleep(0.01)


def test_sigterm_during_writes(tmp_path: Path) -> None:
    directory = new_ledger(tmp_path)
    load = Load()
    with running(directory) as server:
        threads = [threading.Thread(target=writer, args=(server, load, n), daemon=True) for n in range(WRITERS)]
        for t in threads:
            t.start()
        time.sleep(LOAD_SECONDS)
        with load.lock:
            load.signalled.set()
        elapsed = stop_in_time(server)
        load.stop.set()
        for t in threads:
            t.join(TIMEOUT + 5)
        assert not any(t.is_alive() for t in threads), "a writer thread hung after the server stopped"
    assert not load.early_errors, load.early_errors[:10]
    assert len(load.committed) >= 10, f"only {len(load.committed)} writes were seen Committed: no real load"
    audit_clean(directory)

    with running(directory) as server, Client(server) as admin:
        missing, changed, undecided = [], [], []
        for txid, (collection, contents) in sorted(load.acked.items(), key=lambda kv: TxId.parse(kv[0]).seqno):
            r = admin.request("GET", f"/app/transactions/{txid}/status")
            if r.status_code == 404:
                assert r.json()["error"]["code"] == "InvalidTransactionId", r.text
                if txid in load.committed:
                    missing.append(txid)
                continue
            assert r.status_code == 200, r.text
            state = r.json()["state"]
            if state != "Committed":
                undecided.append(f"{txid}: {state}")
                continue
            entry = admin.get(f"/app/transactions/{txid}")["entry"]
            if (entry["collectionId"], entry["contents"]) != (collection, contents):
                changed.append(
                    f"{txid}: wrote {(collection, contents)}, read {(entry['collectionId'], entry['contents'])}"
                )
        assert not missing, f"{len(missing)} writes seen Committed are gone after SIGTERM and restart: {missing[:10]}"
        assert not changed, changed[:10]
        assert not undecided, undecided[:10]
        stop_in_time(server)
    audit_clean(directory)
    assert elapsed < SHUTDOWN_TIMEOUT


# --------------------------------------------------------------------------- the two processes


def children_of(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def gone(pid: int) -> bool:
    """Exited (possibly a zombie nobody reaps yet: its sockets are closed all the same)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def refuses_connections(url: str) -> bool:
    parsed = urlparse(url)
    try:
        socket.create_connection((parsed.hostname, parsed.port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_a_killed_engine_takes_the_front_down(tmp_path: Path) -> None:
    """SIGKILL of `notarium serve` (the engine's process): the HTTP front sees its link close and
    exits, freeing the port; what was committed is there after a restart."""
    directory = new_ledger(tmp_path)
    with running(directory) as server:
        (front,) = children_of(server.process.pid)
        with Client(server) as admin:
            txid = admin.write("before the kill")
            admin.wait_committed(txid)
        server.process.kill()
        server.process.wait(TIMEOUT)
        deadline = time.monotonic() + TIMEOUT
        while not gone(front):
            assert time.monotonic() < deadline, "the front outlived the engine"
            time.sleep(0.02)
        assert refuses_connections(server.url)
    with running(directory) as server, Client(server) as admin:
        assert admin.status(txid) == "Committed"
        assert admin.get(f"/app/transactions/{txid}")["entry"]["contents"] == "before the kill"
        stop_in_time(server)
    audit_clean(directory)


def test_a_killed_front_stops_the_engine_cleanly(tmp_path: Path) -> None:
    """SIGKILL of the HTTP front: `notarium serve` says so and exits 1, after signing and writing
    everything the front had sequenced (the ledger audits with no unsigned tail)."""
    directory = new_ledger(tmp_path)
    with running(directory) as server:
        (front,) = children_of(server.process.pid)
        with Client(server) as admin:
            committed = admin.write("committed")
            admin.wait_committed(committed)
            last = admin.write("maybe pending")
        os.kill(front, signal.SIGKILL)
        assert server.process.wait(TIMEOUT) == 1
        output = "".join(server.output)
        assert "the HTTP front process stopped unexpectedly" in output, output
        assert "Traceback" not in output
    audit_clean(directory)
    with running(directory) as server, Client(server) as admin:
        assert admin.status(committed) == "Committed"
        assert admin.status(last) == "Committed"  # answered before the kill, signed by the engine at exit
        stop_in_time(server)


def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    directory = new_ledger(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "notarium", "serve", str(directory), "--port", str(port)],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
            env=clean_env(),
        )
    assert proc.returncode == 1, proc.stderr
    assert f"cannot listen on 127.0.0.1 port {port}" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "serving" not in proc.stdout
    audit_clean(directory)  # and the ledger was closed properly


def _snapshot(directory: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every path under ``directory``: mode, modification time and contents (nothing may change)."""
    return {
        str(p.relative_to(directory)): (p.stat().st_mode, p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else b"")
        for p in sorted(directory.rglob("*"))
    }


@pytest.mark.parametrize(
    ("lost", "store"),
    [("secrets", None), ("secrets/ledger_secret.sealed", None), ("secrets", "postgresql://nobody@127.0.0.1:1/none")],
)
def test_serve_without_the_ledger_secrets_names_the_situation_and_changes_nothing(
    tmp_path: Path, lost: str, store: str | None
) -> None:
    """The runbook's promise (docs/operations/recovery.md): a directory whose secrets are gone
    refuses to start, says that the ledger secrets are missing, and names `serve --recover` (or,
    for a node of a replicated service, a new node); nothing in the directory is touched."""
    directory = new_ledger(tmp_path)
    gone = directory / lost
    if gone.is_dir():
        for p in gone.iterdir():
            p.unlink()
        gone.rmdir()
    else:
        gone.unlink()
    before = _snapshot(directory)
    command = [sys.executable, "-m", "notarium", "serve", str(directory), "--port", "0"]
    proc = subprocess.run(
        [*command, *(("--store", store) if store else ())],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )
    assert proc.returncode == 1, proc.stderr
    sealed = directory / "secrets" / "ledger_secret.sealed"
    assert f"the ledger secrets of {directory} are missing (there is no {sealed})" in proc.stderr, proc.stderr
    assert "cannot load private key" not in proc.stderr
    if store is None:
        assert f"\n  notarium serve {directory} --recover\n" in proc.stderr, proc.stderr
        assert "docs/operations/recovery.md" in proc.stderr
    else:
        assert f"notarium serve {directory} --recover" not in proc.stderr  # not this directory: a new one
        assert "notarium join NEWDIR" in proc.stderr, proc.stderr
        assert "notarium serve NEWDIR --store DSN --recover --service-cert FILE" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert _snapshot(directory) == before
