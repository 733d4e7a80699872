"""A ledger host (`notarium host`) managed with Microsoft's unmodified management SDK, then used with the
data-plane SDK through the URIs the management API returned.

One real host process (real TLS, ``--list-page-size 1`` so that the SDK follows ``nextLink``,
``--page-size 3`` for the data plane). ``mgmt_scenario.py`` runs in .venv-mgmt
(azure-mgmt-confidentialledger 1.0.1): three ledgers created with certificate-based Administrators,
listed, read, updated, one deleted; refusals (invalid names, conflicts, no Administrator, a wrong
token). ``host_data_scenario.py`` then runs in .venv-acl1 (azure-confidentialledger 1.1.1) with
each ledger's ``ledgerUri`` and ``identityServiceUri``: entries written and read across pages,
receipts verified with ``verify_receipt`` against the identity document, isolation of the two
live ledgers, the host token refused by the data plane, the deleted ledger answering 404. Last,
the host stops and ``notarium audit`` passes on each ledger's directory.
"""

from __future__ import annotations

import datetime
import json
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from integration.oracle import MGMT_SDK_VERSION, SDK_VERSIONS, interpreter
from integration.server import Server, clean_env, new_identity, running

HERE = Path(__file__).parent
SUBSCRIPTION = "00000000-0000-0000-0000-0000000000a1"
GROUP = "rg-one"
API = "api-version=2022-05-13"
INVALID_NAMES = ["ab", "1abc", "-abc", "abc-", "bad_name", "a" * 36]
LEDGERS = [("alpha", "Private"), ("beta", "Public"), ("doomed", "Private")]
MANY = 7  # entries in one collection: 3 pages of at most 3
TIMEOUT = 240.0


def _run(oracle: str, script: str, config: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run(
        [str(interpreter(oracle)), "-I", str(HERE / script)],
        input=json.dumps(config),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=clean_env(),
        check=False,
    )
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{proc.stderr[-6000:]}"
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


def assert_checks(report: dict[str, Any], *names: str) -> None:
    missing = [n for n in names if n not in report["checks"]]
    assert not missing, f"checks that did not run: {missing}"
    failed = {n: report["checks"][n]["error"] for n in names if not report["checks"][n]["ok"]}
    assert not failed, "\n\n".join(f"{n}:\n{e}" for n, e in failed.items())


class Host:
    def __init__(self, server: Server, work: Path) -> None:
        self.server = server
        self.dir = server.directory
        self.work = work
        self.url = server.url
        self.ca = self.dir / "tls" / "ca_cert.pem"
        self.token = (self.dir / "host_token").read_text().strip()
        self.admins = {name: new_identity(work, f"{name}-admin") for name, _ in LEDGERS}
        self.operator_pem = work / "operator_combined.pem"

    def client(self, cert: Path | None = None, token: str | None = None) -> httpx.Client:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        if cert is not None:
            ctx.load_cert_chain(str(cert))
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(verify=ctx, headers=headers, timeout=30)

    def arm(self, name: str = "") -> str:
        path = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}/providers/Microsoft.ConfidentialLedger/ledgers"
        return f"{self.url}{path}{'/' + name if name else ''}?{API}"


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    work = tmp_path_factory.mktemp("host")
    directory = work / "host"
    (directory / "operators").mkdir(parents=True)
    operator, _ = new_identity(work, "operator")
    cert = operator.read_text().split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
    (directory / "operators" / "operator.pem").write_text(cert)
    with running(directory, "--page-size", "3", "--list-page-size", "1", command="host", verbose=1) as server:
        yield Host(server, work)


def _cert_text(combined: Path) -> str:
    return combined.read_text().split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"


@pytest.fixture(scope="module")
def mgmt(host: Host) -> dict[str, Any]:
    config = {
        "base_url": host.url,
        "ca_cert": str(host.ca),
        "token": host.token,
        "subscription": SUBSCRIPTION,
        "resource_group": GROUP,
        "other_group": "rg-two",
        "ledgers": [
            {"name": name, "type": kind, "admin_cert": _cert_text(host.admins[name][0])} for name, kind in LEDGERS
        ],
        "doomed": "doomed",
        "invalid_names": INVALID_NAMES,
    }
    report = _run("mgmt", "mgmt_scenario.py", config)
    assert report["sdk_version"] == MGMT_SDK_VERSION, "run `make oracles`"
    return report


@pytest.fixture(scope="module")
def data(host: Host, mgmt: dict[str, Any]) -> dict[str, Any]:
    assert_checks(mgmt, "create", "delete")
    props = {name: r["properties"] for name, r in mgmt["data"]["ledgers"].items()}

    def ledger(name: str) -> dict[str, str]:
        return {
            "name": name,
            "ledger_uri": props[name]["ledger_uri"],
            "identity_uri": props[name]["identity_service_uri"],
            "admin_pem": str(host.admins[name][0]),
        }

    config = {
        "workdir": str(host.work),
        "host_ca": str(host.ca),
        "host_token": host.token,
        "many": MANY,
        "ledgers": {"main": ledger("alpha"), "other": ledger("beta"), "deleted": ledger("doomed")},
    }
    report = _run("acl1", "host_data_scenario.py", config)
    assert report["sdk_version"] == SDK_VERSIONS["acl1"], "run `make oracles`"
    return report


# --- the management API through azure-mgmt-confidentialledger ----------------------------------


def test_mgmt_sdk_creates_gets_lists_and_updates(mgmt: dict[str, Any], host: Host) -> None:
    assert_checks(mgmt, "create", "get", "list", "update_tags", "operations")
    for name, kind in LEDGERS:
        props = mgmt["data"]["ledgers"][name]["properties"]
        assert props["ledger_uri"] == f"{host.url}/ledgers/{name}"
        assert props["identity_service_uri"] == f"{host.url}/ledgerIdentity/{name}"
        assert props["ledger_type"] == kind


def test_mgmt_sdk_checks_names(mgmt: dict[str, Any]) -> None:
    assert_checks(mgmt, "check_name_availability")


def test_invalid_names_and_conflicts_are_refused_arm_style(mgmt: dict[str, Any], host: Host) -> None:
    assert_checks(mgmt, "refuse_invalid_names", "refuse_conflicts", "refuse_no_administrator", "bad_token")
    with host.client(token=host.token) as http:
        r = http.put(host.arm("9lives"), json={"location": "x", "properties": {}})
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "InvalidResourceName"
        r = http.put(host.arm("alpha"), content=b"not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 400
        assert set(r.json()["error"]) == {"code", "message"}
        r = http.get(host.arm("alpha").replace(API, "api-version=1999-01-01"))
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "InvalidApiVersionParameter"


def test_deletion_is_explicit_recorded_and_keeps_the_files(mgmt: dict[str, Any], host: Host) -> None:
    assert_checks(mgmt, "delete")
    registry = json.loads((host.dir / "registry.json").read_text())
    doomed = next(r for r in registry["ledgers"] if r["name"] == "doomed")
    assert doomed["state"] == "Deleted"
    assert doomed["deleted_by"] == "host-token"
    deleted_at = datetime.datetime.fromisoformat(doomed["deleted_at"])
    purge_after = datetime.datetime.fromisoformat(doomed["purge_after"])
    assert purge_after - deleted_at == datetime.timedelta(days=7)  # the default retention
    assert (host.dir / "ledgers" / "doomed" / "notarium.json").exists(), "files removed before the retention"
    events = [json.loads(line) for line in (host.dir / "events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events if e["ledger"] == "doomed"] == ["create", "created", "delete", "deleted"]
    assert next(e for e in events if e["event"] == "delete")["by"] == "host-token"
    assert host.token not in (host.dir / "events.jsonl").read_text()
    assert host.token not in (host.dir / "registry.json").read_text()
    assert host.token not in "".join(host.server.output), "the token was logged"


def test_management_needs_the_host_credential(mgmt: dict[str, Any], host: Host) -> None:
    """The operator certificate is accepted; a ledger Administrator's certificate is not."""
    with host.client(cert=host.work / "operator_combined.pem") as http:
        r = http.get(host.arm("alpha"))
        assert r.status_code == 200, r.text
        assert r.json()["properties"]["provisioningState"] == "Succeeded"
    with host.client(cert=host.admins["alpha"][0]) as http:
        r = http.get(host.arm("alpha"))
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "AuthenticationFailed"


# --- the data plane through azure-confidentialledger, at the URIs the management API returned --


def test_identity_document_is_the_service_cert_then_the_host_ca(data: dict[str, Any], host: Host) -> None:
    assert_checks(data, "identity")
    for which, name in (("main", "alpha"), ("other", "beta")):
        bundle = data["data"]["identity"][which].encode()
        certs = x509.load_pem_x509_certificates(bundle)
        service_cert = (host.dir / "ledgers" / name / "service_cert.pem").read_bytes()
        assert certs[0].public_bytes(Encoding.PEM) == service_cert
        assert certs[1].public_bytes(Encoding.PEM) == host.ca.read_bytes()


def test_data_plane_sdk_writes_and_reads_through_the_prefix(data: dict[str, Any]) -> None:
    """Including a listing over three pages: the SDK follows nextLink under /ledgers/alpha."""
    assert_checks(data, "entries:write_and_read", "entries:other_ledger")
    assert len(data["data"]["written"]["main"]) == MANY


def test_receipts_verify_with_the_identity_document(data: dict[str, Any]) -> None:
    assert_checks(data, "receipts:verify_receipt")


def test_ledgers_are_isolated(data: dict[str, Any]) -> None:
    assert_checks(data, "isolation:users")


def test_host_operator_cannot_read_entries(data: dict[str, Any], host: Host) -> None:
    """Neither the host token (through the SDK and directly) nor the operator certificate reads entries."""
    assert_checks(data, "isolation:operator_cannot_read")
    paths = ("/ledgers/alpha/app/transactions", "/ledgers/alpha/app/transactions/current", "/ledgers/beta/app/users")
    for http in (host.client(token=host.token), host.client(cert=host.work / "operator_combined.pem")):
        with http:
            for path in paths:
                r = http.get(f"{host.url}{path}?{API}")
                assert r.status_code == 401, (path, r.text)
                assert r.json()["error"]["code"] == "InvalidAuthenticationInfo"


def test_deleted_ledger_answers_not_found(data: dict[str, Any], host: Host) -> None:
    assert_checks(data, "deleted:not_found")
    with host.client(cert=host.admins["doomed"][0]) as http:
        r = http.get(f"{host.url}/ledgers/doomed/app/transactions?{API}")
        assert r.status_code == 404
        assert r.json() == {
            "error": {"code": "LedgerNotFound", "message": "No ledger named 'doomed' is served by this host."}
        }


def test_every_ledger_audits_on_its_own_after_the_host_stops(data: dict[str, Any], host: Host) -> None:
    assert host.server.stop() == 0, "".join(host.server.output[-40:])
    for name in ("alpha", "beta", "doomed"):
        directory = host.dir / "ledgers" / name
        assert not list(directory.glob("user0_*")), "the host kept a ledger user's key"
        proc = subprocess.run(
            [sys.executable, "-m", "notarium", "audit", str(directory), "--json"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, f"{name}: {proc.stdout}\n{proc.stderr}"
    last = data["data"]["written"]["main"][-1]
    proc = subprocess.run(
        [sys.executable, "-m", "notarium", "audit", str(host.dir / "ledgers" / "alpha"), "--expect", last],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
