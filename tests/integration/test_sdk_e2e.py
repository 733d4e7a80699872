"""Microsoft's unmodified Azure Confidential Ledger SDK, 1.1.1 and 2.0.0b2, against `notarium serve`.

One real server (real TLS, client certificates, ``--page-size 5``) serves both SDK versions in
turn. For each version, ``sdk_scenario.py`` runs once inside that version's venv (``-I``, CA
environment variables cleared: the SDK pins the service certificate) and reports every check; the
tests below assert on that report, grouped by concern (acl-rest-api.md §9 and more):

- entries in several collections, with and without tags (2.x), read back through every read
  operation, listed over a range spanning several pages with nothing lost or repeated;
- receipts verified with the SDK's own ``verify_receipt`` and their application claims, the same
  transactions' COSE receipts fetched directly and verified by notarium's verifier;
- user management for each built-in role (and ``ledgerUsers`` with several roles in 2.x);
- governance reads, the identity client, a missing transaction failing at once;
- refusals through the SDK: a Reader's write is a 403, an unregistered certificate a 401.
- user-defined roles (2.x): created, read, updated, assigned to a user who acts with exactly their
  actions, deleted; user-defined endpoints answer 501.

A missing SDK venv fails these tests (``make oracles`` creates them), it never skips them.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from integration.oracle import SDK_VERSIONS, VENVS, interpreter
from integration.server import Server, clean_env, running
from integration.server import new_identity as make_identity
from notarium.auth.identity import acl_fingerprint
from notarium.ledger import init_service
from notarium.verify import compute_claims_digest, verify_cose_receipt, verify_json_receipt

SCENARIO = Path(__file__).with_name("sdk_scenario.py")
PAGE_SIZE = 5
MANY = 17  # entries in one collection: 4 pages of at most 5
SCENARIO_TIMEOUT = 120.0
ROLES = ("Administrator", "Contributor", "Reader")
CA_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")

COMMON_CHECKS = {
    "identity:get_ledger_identity",
    "users:register_contributor",
    "users:register_reader",
    "entries:create_in_collections",
    "entries:create_many",
    "entries:get_ledger_entry",
    "entries:get_current_ledger_entry",
    "entries:get_transaction_status",
    "entries:list_paged_range",
    "entries:list_collections_entries",
    "collections:list",
    "receipts:verify_receipt",
    "receipts:tampered_claims_rejected",
    "users:lifecycle_Administrator",
    "users:lifecycle_Contributor",
    "users:lifecycle_Reader",
    "governance:constitution",
    "governance:consortium_members",
    "governance:enclave_quotes",
    "errors:missing_entry_fails_at_once",
    "errors:missing_receipt_fails_at_once",
    "roles:reader_cannot_write",
    "roles:contributor_cannot_manage_users",
    "roles:unregistered_refused",
}
V2_ONLY_CHECKS = {
    "entries:list_by_tag",
    "users:ledger_users_several_roles",
    "user_defined_roles:lifecycle",
    "unsupported:user_defined_endpoints_501",
}


@pytest.fixture(scope="module", autouse=True)
def no_system_ca() -> Iterator[None]:
    """The service certificate is the only trust anchor: requests would prefer REQUESTS_CA_BUNDLE."""
    with pytest.MonkeyPatch.context() as mp:
        for name in CA_VARIABLES:
            mp.delenv(name, raising=False)
        yield


def new_identity(directory: Path, name: str) -> dict[str, str]:
    """A self-signed client identity, as the scenario script takes it."""
    path, user_id = make_identity(directory, name)
    return {"pem": str(path), "id": user_id}


def identity_of(cert_file: Path, combined: Path) -> dict[str, str]:
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    return {"pem": str(combined), "id": acl_fingerprint(cert.public_bytes(Encoding.DER))}


class Ledger:
    def __init__(self, server: Server, ledger_id: str, work: Path) -> None:
        self.server = server
        self.ledger_id = ledger_id
        self.work = work
        self.admin = identity_of(server.directory / "user0_cert.pem", server.admin_pem)


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    base = tmp_path_factory.mktemp("sdk-e2e")
    config = init_service(base / "ledger")
    with running(base / "ledger", "--page-size", str(PAGE_SIZE)) as server:
        yield Ledger(server, config.ledger_id, base)
        assert server.stop() == 0, "".join(server.output[-50:])


@pytest.fixture(scope="module", params=sorted(SDK_VERSIONS))
def report(request: pytest.FixtureRequest, ledger: Ledger) -> dict[str, Any]:
    """Run the scenario once per SDK version (its venv must exist) and return its report."""
    oracle: str = request.param
    python = interpreter(oracle)  # fails (never skips) with "run `make oracles`" when missing
    work = ledger.work / oracle
    work.mkdir()
    config = {
        "endpoint": ledger.server.url,
        "service_cert": str(ledger.server.service_cert),
        "ledger_id": ledger.ledger_id,
        "workdir": str(work),
        "prefix": oracle,
        "page_size": PAGE_SIZE,
        "many": MANY,
        "admin": ledger.admin,
        "contributor": new_identity(work, "contributor"),
        "reader": new_identity(work, "reader"),
        "stranger": new_identity(work, "stranger"),
        "fresh": {role: new_identity(work, f"new-{role}") for role in ROLES},
        "multi": new_identity(work, "multi"),
        "custom": new_identity(work, "custom"),
    }
    proc = subprocess.run(
        [str(python), "-I", str(SCENARIO)],
        input=json.dumps(config),
        capture_output=True,
        text=True,
        timeout=SCENARIO_TIMEOUT,
        env=clean_env(),
        check=False,
    )
    assert proc.returncode == 0, f"sdk_scenario.py in {VENVS[oracle]} exited {proc.returncode}:\n{proc.stderr[-6000:]}"
    try:
        result: dict[str, Any] = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"sdk_scenario.py printed no JSON report: {proc.stdout[:2000]!r} {proc.stderr[-4000:]}")
    assert result["sdk_version"] == SDK_VERSIONS[oracle], f"{VENVS[oracle]} is stale: run `make oracles`"
    result["oracle"] = oracle
    result["config"] = config
    return result


def assert_checks(report: dict[str, Any], prefix: str) -> None:
    """Every check whose name starts with ``prefix`` ran and passed (all failures shown at once)."""
    checks = {name: c for name, c in report["checks"].items() if name.startswith(prefix)}
    assert checks, f"no {prefix}* check in the report"
    failed = {name: c["error"] for name, c in checks.items() if not c["ok"]}
    assert not failed, f"SDK {report['sdk_version']}: " + "\n\n".join(f"{n}:\n{e}" for n, e in failed.items())


def test_every_check_ran(report: dict[str, Any]) -> None:
    expected = COMMON_CHECKS | (V2_ONLY_CHECKS if report["oracle"] == "acl2" else set())
    assert set(report["checks"]) == expected


def test_setup_registers_contributor_and_reader(report: dict[str, Any]) -> None:
    assert_checks(report, "users:register_")


def test_entries_written_and_read_back(report: dict[str, Any]) -> None:
    """begin_create_ledger_entry(...).result() returns Committed entries; every read agrees."""
    assert_checks(report, "entries:create_")
    assert_checks(report, "entries:get_")
    assert_checks(report, "entries:list_collections_entries")
    assert_checks(report, "collections:list")
    written = report["data"]["written"]
    collections = {w[1] for w in written}
    prefix = report["oracle"]
    assert {f"{prefix}-alpha", f"{prefix}-beta", f"{prefix}-gamma", f"{prefix}-big", "subledger:0"} <= collections
    if report["oracle"] == "acl2":
        assert any(w[3] for w in written), "2.x wrote no tagged entry"
        assert_checks(report, "entries:list_by_tag")
    txids = [w[0] for w in written]
    assert len(set(txids)) == len(txids)


def test_listing_spans_pages_in_order(report: dict[str, Any]) -> None:
    assert_checks(report, "entries:list_paged_range")
    sizes = report["data"]["page_sizes"]
    assert len(sizes) >= 3
    assert sum(sizes) == MANY
    assert max(sizes) <= PAGE_SIZE


def test_receipts_verify_with_the_sdk(report: dict[str, Any]) -> None:
    assert_checks(report, "receipts:")


def test_receipts_verify_with_notarium_json_and_cose(report: dict[str, Any], ledger: Ledger) -> None:
    """The same transactions: JSON receipts by notarium's verifier; COSE receipts fetched directly."""
    receipts: dict[str, Any] = report["data"].get("receipts") or {}
    assert receipts, "the scenario fetched no receipt"
    service_cert = x509.load_pem_x509_certificate(ledger.server.service_cert.read_bytes())
    pinned = str(ledger.server.service_cert)
    with requests.Session() as http:
        http.cert = str(ledger.server.admin_pem)
        for txid, body in receipts.items():
            claims = body["applicationClaims"]
            digest = compute_claims_digest(claims)
            verify_json_receipt(body["receipt"], service_cert, application_claims=claims)
            r = http.get(f"{ledger.server.url}/app/transactions/{txid}/receipt/cose", verify=pinned, timeout=10)
            assert r.status_code == 200, r.text
            assert r.headers["Content-Type"] == "application/cose"
            result = verify_cose_receipt(r.content, service_cert.public_key(), claims_digest=digest)
            assert result.leaves, txid
            assert result.leaves[0].claims_digest == digest


def test_user_management(report: dict[str, Any]) -> None:
    """create_or_update_user for each role, get_user, the role acts, delete_user (204), then 404."""
    assert_checks(report, "users:lifecycle_")
    if report["oracle"] == "acl2":
        assert_checks(report, "users:ledger_users_several_roles")


def test_governance_reads(report: dict[str, Any]) -> None:
    assert_checks(report, "governance:")


def test_identity_client(report: dict[str, Any]) -> None:
    assert_checks(report, "identity:")


def test_missing_transaction_fails_at_once(report: dict[str, Any]) -> None:
    assert_checks(report, "errors:")
    assert report["data"]["missing_entry_seconds"] < 2.0


def test_user_defined_roles(report: dict[str, Any]) -> None:
    """2.0.0b2: create_user_defined_role (the SDK's Roles model), get_user_defined_role,
    update_user_defined_role (adds actions), a ledger user acting with exactly the role's actions,
    delete_user_defined_role refused while assigned, then 200 and 404. 1.1.1 has no such operation."""
    if report["oracle"] == "acl2":
        assert_checks(report, "user_defined_roles:")
    else:
        assert not [name for name in report["checks"] if name.startswith("user_defined_roles:")]


def test_refusals_through_the_sdk(report: dict[str, Any]) -> None:
    """A Reader's begin_create_ledger_entry raises HttpResponseError 403; unregistered callers 401."""
    assert_checks(report, "roles:")
    if report["oracle"] == "acl2":
        assert_checks(report, "unsupported:")
