"""`notarium host DIR --store`: two real host processes on one real PostgreSQL server are one host.

One PostgreSQL server and two host processes (A and B, B given A's host credentials) for the
module; the tests run in order and share them:

- both answer the management API and every ledger's data plane; each ledger has exactly one
  primary among them (its node's lease), the other forwards writes; ledgers are isolated (their own
  schemas, users and entries);
- two processes racing to create one name: one wins, the other gets 409;
- SIGKILL of A (primary of a ledger under write load, in the middle of a creation): B commits the
  ledger's writes again within 10 s, nothing Committed is lost or turns Invalid, the creation's
  operation URL answers through B (Failed or Succeeded, never 404) and the name is not blocked;
  azure-mgmt-confidentialledger works through B (list, get, create, delete);
- SIGKILL of A during a deletion: the deletion completes through B;
- a deleted ledger's rows are kept for the retention (`notarium audit --store --ledger` passes on
  them), then purged (schema dropped, name free, local files gone);
- PostgreSQL restarted under write load: both processes reconnect, nothing Committed is lost;
- a wrong DSN, a role without permissions, another host's files: exit 1 with a clear message;
- an embedded host (no store): an operation URL answers after a restart.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from integration.host_store_kit import (
    API,
    GROUP,
    SUBSCRIPTION,
    StoreHost,
    admin_of,
    append,
    create,
    ledger_body,
    node_state,
    operation_on,
    status,
    twin_dir,
    until,
)
from integration.oracle import MGMT_SDK_VERSION, interpreter
from integration.server import clean_env, running
from pg import PgCluster

HERE = Path(__file__).parent
FAILOVER_BOUND_S = 10.0
RETENTION_S = 10


@dataclass
class Pair:
    pg: PgCluster
    dsn: str
    work: Path
    a: StoreHost
    b: StoreHost
    notes: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    work = tmp_path_factory.mktemp("hoststore")
    args = ("--retention", str(RETENTION_S), "--purge-interval", "1", "--sync-interval", "0.5")
    with PgCluster.create({"max_connections": 120}) as pg:
        dsn = pg.dsn()
        a = StoreHost(work / "a", dsn, args).start()
        (work / "b").mkdir()
        twin_dir(work / "a", work / "b")
        b = StoreHost(work / "b", dsn, args).start()
        try:
            yield Pair(pg, dsn, work, a, b)
        finally:
            for host in (a, b):
                host.stop()


def _schemas(pair: Pair) -> list[str]:
    return [r[0] for r in pair.pg.psql("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'ledger%' ORDER BY 1")]


def _entry(host: StoreHost, name: str, admin: Path, txid: str) -> str:
    with host.client(admin) as http:
        r = http.get(f"{host.url}/ledgers/{name}/app/transactions/{txid}?api-version=2024-12-09-preview")
        r.raise_for_status()
        return str(r.json()["entry"]["contents"])


def test_two_processes_are_one_host_and_ledgers_are_isolated(pair: Pair) -> None:
    a, b = pair.a, pair.b
    alpha, beta = admin_of(pair.work, "alpha"), admin_of(pair.work, "beta")
    op = create(a, "alpha", alpha)
    assert operation_on(b, op)["status"] == "Succeeded"  # an operation of A, answered by B
    with b.client(token=True) as http:
        got = http.get(b.arm("alpha")).json()
    assert got["properties"]["provisioningState"] == "Succeeded"
    until("B serves alpha", lambda: node_state(b, "alpha")["role"] == "Backup")
    assert node_state(a, "alpha")["role"] == "Primary"
    assert node_state(b, "alpha")["primaryAddress"] == f"{a.url}/ledgers/alpha"

    r = append(b, "alpha", alpha, "written through B")  # forwarded to A
    assert r.status_code == 200, r.text
    txid = r.headers["x-ms-ccf-transaction-id"]
    until("committed", lambda: status(b, "alpha", alpha, txid) == "Committed")
    until("read on A", lambda: _entry(a, "alpha", alpha, txid) == "written through B")

    create(b, "beta", beta)  # made by B: B's node leads it
    until("A serves beta", lambda: node_state(a, "beta")["role"] == "Backup")
    assert node_state(b, "beta")["role"] == "Primary"
    schemas = _schemas(pair)
    assert len(schemas) == 2
    assert schemas[0].startswith("ledger_alpha_")
    assert schemas[1].startswith("ledger_beta_")
    # one ledger's users are unknown to the other, both ways, through either process
    for host in (a, b):
        with host.client(alpha) as http:
            r = http.get(f"{host.url}/ledgers/beta/app/transactions?api-version=2024-12-09-preview")
            assert r.status_code in (401, 403)
            assert set(r.json()["error"]) == {"code", "message"}
        with host.client(beta) as http:
            r = http.get(f"{host.url}/ledgers/alpha/app/transactions/{txid}?api-version=2024-12-09-preview")
            assert r.status_code in (401, 403)
    # beta's log holds nothing of alpha's, and alpha's private entry is not in clear in PostgreSQL
    beta_schema = schemas[1]
    rows = pair.pg.psql(f'SELECT count(*) FROM "{beta_schema}".tx')[0][0]  # noqa: S608  (a name read from pg_namespace)
    assert rows > 0
    found = pair.pg.psql(
        f"SELECT count(*) FROM \"{schemas[0]}\".tx WHERE position('written through B'::bytea in data) > 0"  # noqa: S608
    )[0][0]
    assert found == 0
    assert a.token not in a.log() + b.log()


def test_per_ledger_settings_and_metrics_hold_on_every_process(pair: Pair) -> None:
    """A setting changed through one process (host/limits.py's tags) applies on the other, which leads alpha."""
    a, b = pair.a, pair.b
    alpha = admin_of(pair.work, "alpha")
    with b.client(token=True) as http:
        r = http.patch(b.arm("alpha"), json={"tags": {"notarium.maxEntryBytes": "64"}})
        assert r.status_code == 200, r.text

    def refused() -> bool:
        answer = append(a, "alpha", alpha, "y" * 100)
        return answer.status_code == 400 and answer.json()["error"]["code"] == "EntrySizeCapacityExceeded"

    until("the limit applies on A", refused, timeout=20)
    assert append(b, "alpha", alpha, "y" * 100).status_code == 400  # through B (forwarded) too
    assert append(b, "alpha", alpha, "short").status_code == 200
    with b.client(token=True) as http:
        http.patch(b.arm("alpha"), json={"tags": {}})
        metrics = http.get(f"{b.url}/metrics")
    assert metrics.status_code == 200
    assert 'ledger="alpha"' in metrics.text
    assert 'ledger="beta"' in metrics.text


def test_two_processes_racing_for_a_name(pair: Pair) -> None:
    admin = admin_of(pair.work, "gamma")

    def put(host: StoreHost) -> httpx.Response:
        with host.client(token=True) as http:
            return http.put(host.arm("gamma"), json=ledger_body(admin))

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(put, (pair.a, pair.b)))
    assert sorted(r.status_code for r in answers) == [201, 409], [r.text for r in answers]
    loser = next(r for r in answers if r.status_code == 409)
    assert set(loser.json()["error"]) == {"code", "message"}
    winner = next(r for r in answers if r.status_code == 201)
    op = winner.headers["Azure-AsyncOperation"]
    done = until(
        "gamma created", lambda: operation_on(pair.a, op)["status"] != "InProgress" and operation_on(pair.a, op)
    )
    assert done["status"] == "Succeeded", (done, pair.a.log()[-3000:], pair.b.log()[-3000:])


class Writer:
    """Appends to a ledger through one process, one at a time, recording every TxId and how it ended."""

    def __init__(self, host: StoreHost, name: str, admin: Path) -> None:
        self.host, self.name, self.admin = host, name, admin
        self.committed: list[tuple[float, str, str]] = []  # (time, txid, contents)
        self.accepted: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        with self.host.client(self.admin, timeout=5) as http:
            while not self._stop.is_set():
                n += 1
                contents = f"w{n}"
                try:
                    r = http.post(
                        f"{self.host.url}/ledgers/{self.name}/app/transactions?api-version=2024-12-09-preview",
                        json={"contents": contents},
                    )
                    if r.status_code != 200:
                        time.sleep(0.05)
                        continue
                    txid = r.headers["x-ms-ccf-transaction-id"]
                    self.accepted.append(txid)
                    s = "Pending"
                    for _ in range(100):
                        answer = http.get(
                            f"{self.host.url}/ledgers/{self.name}/app/transactions/{txid}/status"
                            "?api-version=2024-12-09-preview"
                        )
                        s = answer.json()["state"] if answer.status_code == 200 else "Invalid"
                        if s != "Pending":
                            break
                        time.sleep(0.02)
                    if s == "Committed":
                        self.committed.append((time.monotonic(), txid, contents))
                except (httpx.HTTPError, KeyError, ValueError):
                    time.sleep(0.05)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def _statuses_agree(host: StoreHost, name: str, admin: Path, writer: Writer) -> None:
    """Every TxId seen Committed is still Committed with its contents; none is both."""
    for _, txid, contents in writer.committed:
        assert status(host, name, admin, txid) == "Committed", txid
        assert _entry(host, name, admin, txid) == contents
    for txid in writer.accepted:
        assert status(host, name, admin, txid) in ("Committed", "Invalid"), txid


def test_sigkill_of_a_primary_during_a_creation(pair: Pair) -> None:
    a, b = pair.a, pair.b
    alpha = admin_of(pair.work, "alpha")
    assert node_state(a, "alpha")["role"] == "Primary"
    with Writer(b, "alpha", alpha) as writer:
        until("writes commit", lambda: len(writer.committed) >= 3, timeout=20)
        with a.client(token=True) as http:
            r = http.put(a.arm("delta"), json=ledger_body(admin_of(pair.work, "delta")))
        assert r.status_code == 201, r.text
        op = r.headers["Azure-AsyncOperation"]
        a.kill()
        killed = time.monotonic()
        until("a write commits through B", lambda: any(t > killed for t, _, _ in writer.committed), timeout=30)
        first = next(t for t, _, _ in writer.committed if t > killed)
        until("more writes", lambda: sum(1 for t, _, _ in writer.committed if t > killed) >= 3, timeout=20)
    pair.notes["failover_s"] = first - killed
    assert first - killed <= FAILOVER_BOUND_S, f"writes came back after {first - killed:.1f} s"
    assert node_state(b, "alpha")["role"] == "Primary"
    _statuses_agree(b, "alpha", alpha, writer)

    # the creation cut short: its operation answers through B, and the name is not blocked
    ended = until("the operation ends", lambda: operation_on(b, op)["status"] != "InProgress" and operation_on(b, op))
    if ended["status"] == "Failed":
        create(b, "delta", admin_of(pair.work, "delta"))
    assert append(b, "delta", admin_of(pair.work, "delta"), "delta lives").status_code == 200

    # Microsoft's management SDK through the survivor
    config = {
        "base_url": b.url,
        "ca_cert": str(b.ca),
        "token": b.token,
        "subscription": SUBSCRIPTION,
        "resource_group": GROUP,
        "existing": "alpha",
        "new": "epsilon",
        "admin_cert": admin_of(pair.work, "alpha").read_text().split("-----END CERTIFICATE-----")[0]
        + "-----END CERTIFICATE-----\n",
    }
    proc = subprocess.run(
        [str(interpreter("mgmt")), "-I", str(HERE / "host_store_mgmt_scenario.py")],
        input=json.dumps(config),
        capture_output=True,
        text=True,
        timeout=240,
        env=clean_env(),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout)
    assert report["sdk_version"] == MGMT_SDK_VERSION
    failed = {k: v["error"] for k, v in report["checks"].items() if not v["ok"]}
    assert not failed, (failed, _quiet(b))
    assert set(report["checks"]) == {"list", "get", "create_and_delete"}

    a.start()  # A again: it follows the ledgers B now leads
    until("A follows alpha", lambda: node_state(a, "alpha")["role"] == "Backup")


def test_sigkill_during_a_deletion(pair: Pair) -> None:
    a, b = pair.a, pair.b
    with a.client(token=True) as http:
        r = http.delete(a.arm("gamma"))
    assert r.status_code == 202
    op = r.headers["Azure-AsyncOperation"]
    a.kill()
    ended = until("the deletion ends", lambda: operation_on(b, op)["status"] != "InProgress" and operation_on(b, op))
    assert ended["status"] == "Succeeded"
    with b.client(token=True) as http:
        assert http.get(b.arm("gamma")).status_code == 404
        check = http.post(
            f"{b.url}/subscriptions/{SUBSCRIPTION}/providers/Microsoft.ConfidentialLedger/checkNameAvailability?{API}",
            json={"name": "gamma", "type": "Microsoft.ConfidentialLedger/ledgers"},
        ).json()
    assert check["nameAvailable"] is False  # kept for the retention
    with b.client(admin_of(pair.work, "gamma")) as http:  # B stops serving it at its next sync
        url = f"{b.url}/ledgers/gamma/app/transactions?api-version=2024-12-09-preview"
        until("gamma no longer served by B", lambda: http.get(url).status_code == 404, timeout=10)
    a.start()


def _audit(pair: Pair, name: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "notarium", "audit", "--store", pair.dsn, "--ledger", name, "--json", *extra],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(),
        check=False,
    )


def test_deleted_ledger_is_audited_in_its_retention_then_purged(pair: Pair) -> None:
    assert any(s.startswith("ledger_gamma_") for s in _schemas(pair)), "purged before the retention"
    kept = _audit(pair, "gamma", "--service-cert", str(pair.b.directory / "ledgers" / "gamma" / "service_cert.pem"))
    assert kept.returncode == 0, kept.stderr + kept.stdout
    assert json.loads(kept.stdout)["ok"] is True
    live = _audit(pair, "alpha", str(pair.b.directory))  # a host process's directory: its copy pins the cert
    assert live.returncode == 0, live.stderr + live.stdout
    assert json.loads(live.stdout)["ok"]
    assert json.loads(live.stdout)["serviceCertPinned"]

    until("gamma purged", lambda: not any(s.startswith("ledger_gamma_") for s in _schemas(pair)), timeout=60)
    until(
        "local files removed", lambda: not any((h.directory / "ledgers" / "gamma").exists() for h in (pair.a, pair.b))
    )
    with pair.b.client(token=True) as http:
        r = http.post(
            f"{pair.b.url}/subscriptions/{SUBSCRIPTION}/providers/Microsoft.ConfidentialLedger/checkNameAvailability?{API}",
            json={"name": "gamma", "type": "Microsoft.ConfidentialLedger/ledgers"},
        )
        assert r.json()["nameAvailable"] is True
    gone = _audit(pair, "gamma", "--service-cert", str(pair.a.ca))
    assert gone.returncode == 1
    assert "no ledger named 'gamma'" in gone.stderr
    rows = pair.pg.psql("SELECT body FROM notarium_host.events WHERE body->>'ledger' = 'gamma' ORDER BY id")
    events = [r[0] for r in rows]
    assert [e["event"] for e in events][-3:] == ["delete", "deleted", "purged"], events
    at = {e["event"]: datetime.datetime.fromisoformat(e["time"].replace("Z", "+00:00")) for e in events}
    assert (at["purged"] - at["delete"]).total_seconds() >= RETENTION_S, "purged before the retention ended"


def test_postgresql_restarted_under_load(pair: Pair) -> None:
    a, b = pair.a, pair.b
    alpha, beta = admin_of(pair.work, "alpha"), admin_of(pair.work, "beta")
    with Writer(a, "alpha", alpha) as wa, Writer(b, "beta", beta) as wb:
        until("writes commit", lambda: len(wa.committed) >= 3 and len(wb.committed) >= 3, timeout=30)
        pair.pg.stop("fast")
        time.sleep(2)
        pair.pg.start()
        back = time.monotonic()
        until(
            "writes commit again through both",
            lambda: any(t > back for t, _, _ in wa.committed) and any(t > back for t, _, _ in wb.committed),
            timeout=60,
            diagnose=lambda: _quiet(a) + "\n-----\n" + _quiet(b),
        )
    assert a.alive, "a host process exited"
    assert b.alive, "a host process exited"
    _statuses_agree(a, "alpha", alpha, wa)
    _statuses_agree(b, "beta", beta, wb)
    _statuses_agree(a, "beta", beta, wb)
    with a.client(token=True) as http:  # the management API is back too
        assert http.get(a.arm("beta")).status_code == 200


def _quiet(host: StoreHost) -> str:
    """The host's log without the access log and repeated refusals: what to read when a test fails."""
    lines = [line for line in host.output if "access:" not in line and "could not answer" not in line]
    return "".join(lines)[-8000:]


def test_bad_stores_are_refused_at_start(pair: Pair, tmp_path: Path) -> None:
    def start(directory: Path, dsn: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "notarium", "host", str(directory), "--port", "0", "--store", dsn],
            capture_output=True,
            text=True,
            timeout=60,
            env=clean_env(),
            check=False,
        )

    wrong = start(tmp_path / "wrong", f"postgresql://postgres:s3cret-pw@127.0.0.1:{_closed_port()}/postgres")
    assert wrong.returncode == 1, wrong.stdout + wrong.stderr
    assert "cannot connect to PostgreSQL" in wrong.stderr
    assert "s3cret-pw" not in wrong.stderr + wrong.stdout
    pair.pg.psql("CREATE ROLE weakling LOGIN")
    weak = start(tmp_path / "weak", pair.dsn.replace("postgres@", "weakling@"))
    assert weak.returncode == 1, weak.stdout + weak.stderr
    assert "permission denied" in weak.stderr
    other = start(tmp_path / "other", pair.dsn)  # a directory with credentials of its own
    assert other.returncode == 1
    assert "host_token" in other.stderr
    assert "store_key" in other.stderr
    assert "Traceback" not in wrong.stderr + weak.stderr + other.stderr


def _closed_port() -> int:
    from pg import free_port

    return free_port()


def test_embedded_host_operations_survive_a_restart(tmp_path: Path) -> None:
    directory = tmp_path / "embedded"
    admin = admin_of(tmp_path, "solo")
    with running(directory, command="host") as server:
        host = StoreHost(directory, "", url=server.url)
        with host.client(token=True) as http:
            r = http.put(host.arm("solo"), json=ledger_body(admin))
        assert r.status_code == 201
        op = r.headers["Azure-AsyncOperation"]
        until("created", lambda: operation_on(host, op)["status"] == "Succeeded")
    with running(directory, command="host") as server:
        host = StoreHost(directory, "", url=server.url)
        answer = operation_on(host, op)
        assert answer["status"] == "Succeeded"
        assert answer["endTime"]
