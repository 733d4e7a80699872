"""Operations: health, readiness, Prometheus metrics, structured access logs, and no secrets in logs.

Two real ``notarium serve`` processes (tests/integration/server.py):

- one at the default log level: /healthz, /readyz, /metrics parsed with prometheus_client's own
  parser, and its whole output scanned for secrets;
- one at DEBUG (``-vv``), whose output holds both of its processes' logs (engine and HTTP front):
  each request's access-log line is one JSON object with method, path, route, status, ms and
  user, and nothing logged at any level contains a private key or the ledger secret.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from prometheus_client.parser import text_string_to_metric_families

from integration.server import Server, running
from integration.server import new_identity as new_user
from notarium.auth.identity import acl_fingerprint
from notarium.ledger import init_service
from notarium.recovery.chain import LedgerSecrets

T = TypeVar("T")
TXID = re.compile(r"^\d+\.\d+$")


# --------------------------------------------------------------------------- helpers


@dataclass
class Client:
    url: str
    service_cert: Path
    admin_pem: Path

    def session(self, cert: Path | None = None) -> requests.Session:
        s = requests.Session()
        s.trust_env = False  # the service certificate is the only trust anchor
        s.verify = str(self.service_cert)
        s.cert = str(cert or self.admin_pem)
        return s

    def anonymous(self) -> requests.Session:
        s = self.session()
        s.cert = None
        return s


def wait_committed(s: requests.Session, url: str, txid: str) -> None:
    for _ in range(500):
        r = s.get(f"{url}/app/transactions/{txid}/status")
        if r.json()["state"] == "Committed":
            return
        time.sleep(0.01)
    raise AssertionError(f"{txid} never committed")


def secrets_of(directory: Path, extra_keys: list[Path]) -> dict[str, str]:
    """What must never be logged: private key PEM bodies (each line and whole) and the ledger secret."""
    found: dict[str, str] = {}
    keys = [
        directory / "secrets" / "service_privk.pem",
        directory / "node" / "node_privk.pem",
        directory / "user0_privk.pem",
        directory / "member0_privk.pem",
        directory / "member0_enc_privk.pem",
        *extra_keys,
    ]
    for path in keys:
        text = path.read_text()
        body = text.split("-----BEGIN PRIVATE KEY-----", 1)[1].split("-----END PRIVATE KEY-----", 1)[0]
        lines = [line for line in body.split() if line]
        assert lines, path
        for n, line in enumerate(lines):
            found[f"{path.name} line {n}"] = line
        found[f"{path.name} body"] = "".join(lines)
    sealed = LedgerSecrets.from_sealed((directory / "secrets" / "ledger_secret.sealed").read_bytes())
    for n, (_start, secret) in enumerate(sealed):  # every ledger secret, after rekeys too
        assert len(secret) == 32
        found[f"ledger secret {n} hex"] = secret.hex()
        found[f"ledger secret {n} HEX"] = secret.hex().upper()
        found[f"ledger secret {n} base64"] = base64.b64encode(secret).decode()
        found[f"ledger secret {n} base64url"] = base64.urlsafe_b64encode(secret).decode().rstrip("=")
        found[f"ledger secret {n} base64 (unpadded)"] = base64.b64encode(secret).decode().rstrip("=")
    return found


def assert_no_secrets(output: str, secrets: dict[str, str]) -> None:
    leaked = [name for name, value in secrets.items() if value in output]
    assert not leaked, f"secrets in the server's output: {leaked}"


def exercise(client: Client, work: Path) -> list[Path]:
    """Successes and failures of many kinds, by several callers; returns the new users' combined PEM files."""
    key_files: list[Path] = []
    with client.session() as admin:
        pem, user_id = new_user(work, "contributor")
        key_files.append(pem)
        r = admin.patch(
            f"{client.url}/app/users/{user_id}",
            json={"assignedRole": "Contributor"},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert r.status_code == 200, r.text
        with client.session(pem) as contributor:
            r = contributor.post(f"{client.url}/app/transactions?collectionId=ops", json={"contents": "hello"})
            assert r.status_code == 200, r.text
            wait_committed(contributor, client.url, r.headers["x-ms-ccf-transaction-id"])
            assert contributor.get(f"{client.url}/app/users").status_code == 403
        assert admin.post(f"{client.url}/app/transactions", data=b"{not json").status_code == 400
        assert admin.get(f"{client.url}/app/transactions/abc").status_code == 404
        assert admin.get(f"{client.url}/app/nope").status_code == 404
        assert admin.put(f"{client.url}/app/collections").status_code == 405
        assert admin.get(f"{client.url}/app/userDefinedEndpoints").status_code == 501
        assert admin.get(f"{client.url}/app/ping", headers={"X-Big": "a" * 9000}).status_code == 400
    stranger, _ = new_user(work, "stranger")
    key_files.append(stranger)
    with client.session(stranger) as s:
        assert s.get(f"{client.url}/app/ping").status_code == 401
    with client.anonymous() as s:
        assert s.get(f"{client.url}/app/ping").status_code == 401
    return key_files


# --------------------------------------------------------------------------- the real process


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Client, Path]]:
    base = tmp_path_factory.mktemp("ops")
    init_service(base / "ledger")
    with running(base / "ledger") as srv:
        yield srv, Client(srv.url, srv.service_cert, srv.admin_pem), base
        assert srv.stop() == 0, "".join(srv.output[-50:])


def test_healthz_and_readyz(served: tuple[Server, Client, Path]) -> None:
    _, client, _ = served
    with client.anonymous() as s:  # no client certificate needed
        r = s.get(f"{client.url}/healthz")
        assert r.status_code == 200
        assert r.json() == {"status": "alive"}
        r = s.get(f"{client.url}/readyz")
        assert r.status_code == 200
        body = r.json()
        assert body["status"] == "ready"
        assert TXID.match(body["committed"])
        assert r.headers["x-ms-ccf-transaction-id"] == body["committed"]
        assert s.head(f"{client.url}/healthz").status_code == 200


def scrape(client: Client) -> dict[str, Any]:
    with client.anonymous() as s:
        r = s.get(f"{client.url}/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {family.name: family for family in text_string_to_metric_families(r.text)} | {"_text": r.text}


def request_count(families: dict[str, Any], method: str, route: str, status: str) -> float:
    family = families.get("notarium_http_requests")
    if family is None:
        return 0.0
    return sum(
        s.value
        for s in family.samples
        if s.name == "notarium_http_requests_total" and s.labels == {"method": method, "route": route, "status": status}
    )


def test_metrics(served: tuple[Server, Client, Path]) -> None:
    _, client, _ = served
    before = scrape(client)
    with client.session() as s:
        for _ in range(3):
            assert s.get(f"{client.url}/app/ping").status_code == 200
        assert s.get(f"{client.url}/app/transactions/abc").status_code == 404
        assert s.get(f"{client.url}/app/no/such/route").status_code == 404
        r = s.post(f"{client.url}/app/transactions", json={"contents": "metered"})
        assert r.status_code == 200
        wait_committed(s, client.url, r.headers["x-ms-ccf-transaction-id"])
        committed = s.get(f"{client.url}/readyz").json()["committed"]
    after = scrape(client)

    def delta(method: str, route: str, status: str) -> float:
        return request_count(after, method, route, status) - request_count(before, method, route, status)

    assert after["notarium_http_requests"].type == "counter"
    assert delta("GET", "/app/ping", "200") == 3
    assert delta("GET", "/app/transactions/{transactionId}", "404") == 1  # the route template, not the path
    assert delta("GET", "unmatched", "404") == 1  # unknown paths share one label: bounded cardinality
    assert delta("POST", "/app/transactions", "200") == 1
    assert "/app/no/such/route" not in after["_text"]

    latency = after["notarium_http_request_seconds"]
    assert latency.type == "histogram"
    buckets = [s for s in latency.samples if s.name.endswith("_bucket") and s.labels["route"] == "/app/ping"]
    assert len(buckets) >= 2
    assert buckets[-1].labels["le"] == "+Inf"
    counts = [b.value for b in buckets]
    assert counts == sorted(counts)  # cumulative
    (count,) = [s.value for s in latency.samples if s.name.endswith("_count") and s.labels["route"] == "/app/ping"]
    assert counts[-1] == count >= 3

    def gauge(name: str) -> float:
        family = after[name]
        assert family.type == "gauge", name
        (sample,) = family.samples
        return float(sample.value)

    assert gauge("notarium_commit_lag_transactions") >= 0
    # signatures may commit between the two reads, never uncommit
    assert gauge("notarium_committed_seqno") >= int(committed.split(".")[1]) > 0
    assert gauge("notarium_ledger_bytes") > 0
    assert gauge("notarium_ledger_bytes") >= float(before["notarium_ledger_bytes"].samples[0].value)


def test_no_secrets_in_process_output(served: tuple[Server, Client, Path]) -> None:
    server, client, base = served
    extra = exercise(client, base)
    with client.anonymous() as s:
        assert s.get(f"{client.url}/healthz").status_code == 200
    secrets = secrets_of(server.directory, extra)
    assert_no_secrets("".join(server.output), secrets)
    # what the default level shows: the announcement, and no access log (that needs -v)
    assert any("serving https://" in line for line in server.output)


# --------------------------------------------------------------------------- at DEBUG


_LOG_LINE = re.compile(r"^\S+ \S+ (?P<level>[A-Z]+) (?P<name>[\w.]+): (?P<message>.*)$")


@dataclass
class Logged:
    level: str
    name: str
    message: str


@pytest.fixture(scope="module")
def debug_served(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Logged], str, Path, list[Path], str]:
    """A server at DEBUG, exercised and stopped: its log records, whole output, directory, the user keys."""
    base = tmp_path_factory.mktemp("ops-debug")
    directory = base / "ledger"
    init_service(directory)
    with running(directory, verbose=2) as srv:
        keys = exercise(Client(srv.url, srv.service_cert, srv.admin_pem), base)
        assert srv.stop() == 0, "".join(srv.output[-50:])
    records = [Logged(**m.groupdict()) for line in srv.output if (m := _LOG_LINE.match(line.rstrip("\n")))]
    admin = x509.load_pem_x509_certificate((directory / "user0_cert.pem").read_bytes())
    return records, "".join(srv.output), directory, keys, acl_fingerprint(admin.public_bytes(Encoding.DER))


def access_lines(records: list[Logged]) -> list[dict[str, Any]]:
    return [json.loads(r.message) for r in records if r.name == "notarium.access"]


def test_access_log_is_json_lines(debug_served: tuple[list[Logged], str, Path, list[Path], str]) -> None:
    records, _, _, _, admin_id = debug_served
    lines = access_lines(records)
    assert len(lines) >= 12
    for line in lines:
        assert {"method", "path", "route", "status", "ms", "user"} <= set(line)
        assert isinstance(line["status"], int)
        assert isinstance(line["ms"], int | float)
        assert line["ms"] >= 0
        assert line["user"] is None or re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", line["user"])
        assert "?" not in line["path"]  # the query string is not logged

    def find(method: str, path: str, status: int) -> dict[str, Any]:
        matching = [x for x in lines if (x["method"], x["path"], x["status"]) == (method, path, status)]
        assert matching, f"no access log line for {method} {path} {status}: {lines}"
        return matching[0]

    assert find("GET", "/app/transactions/abc", 404)["user"] == admin_id
    assert find("GET", "/app/transactions/abc", 404)["route"] == "/app/transactions/{transactionId}"
    assert find("GET", "/app/nope", 404)["route"] == "unmatched"
    assert find("PUT", "/app/collections", 405)["user"] is None  # refused before any handler authenticates
    assert find("GET", "/app/userDefinedEndpoints", 501)["user"] == admin_id
    assert find("POST", "/app/transactions", 200)["user"] not in (None, admin_id)  # the contributor
    assert find("GET", "/app/users", 403)["user"] not in (None, admin_id)
    unauthenticated = [x for x in lines if x["path"] == "/app/ping" and x["status"] == 401]
    assert len(unauthenticated) == 2
    assert {x["user"] is None for x in unauthenticated} == {True, False}  # anonymous, and an unknown certificate


def test_nothing_logged_at_any_level_contains_secrets(
    debug_served: tuple[list[Logged], str, Path, list[Path], str],
) -> None:
    records, output, directory, keys, _ = debug_served
    assert any(r.level == "DEBUG" for r in records)  # DEBUG really was logged
    assert any(r.level == "DEBUG" and r.name.startswith("notarium.server") for r in records)  # by the front too
    assert_no_secrets(output, secrets_of(directory, keys))
