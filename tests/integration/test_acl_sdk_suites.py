"""Issue #16: what Microsoft's own SDK test suites expect of ACL, run with the unmodified SDKs.

A real ``notarium serve`` (real TLS) trusts a local OIDC issuer standing in for Entra ID; one of its
users is an Administrator. ``sdk_acl_suite_scenario.py`` runs inside each SDK venv (1.1.1, 2.0.0b2):
the token client registers a certificate user, as the suites' setup does, and both perform what the
suites perform (docs/api.md: users, user-defined roles, attestation):

1. custom roles in ACL's field names (``role_name``/``role_actions``, application actions such as
   ``/content/read``), answered in ACL's names and envelope; camelCase still accepted;
2. ``PATCH /app/ledgerUsers/{id}`` adds roles (merge), answering the roles it assigned;
3. deleting a user that does not exist is 204, on both user endpoints;
4. at api-version 2024-12-09-preview, ``PATCH``/``DELETE /app/users/{id}`` are 400
   ``ApiVersionRedirect`` and change nothing; at 2022-05-13 they work as before;
5. user ids ACL accepts that are neither GUIDs nor fingerprints (``"0" * 36``, ``AB:CD:EF``);
6. one enclave quote per trusted node, with the virtual platform's evidence and measurement (the
   replicated service's three nodes: tests/integration/test_ha.py).

The wire-level details the SDK hides (status codes, bodies, nothing written by a refusal) are
asserted directly with ``requests``, pinned to the service certificate.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from cryptography import x509

from integration.issuer import Issuer
from integration.oracle import SDK_VERSIONS, VENVS, interpreter
from integration.server import Server, clean_env, new_identity, running
from notarium.ledger import init_service
from notarium.verify.keys import key_id

SCENARIO = Path(__file__).with_name("sdk_acl_suite_scenario.py")
SCENARIO_TIMEOUT = 120.0
CA_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}
NEW_API = {"api-version": "2024-12-09-preview"}
OLD_API = {"api-version": "2022-05-13"}
VIRTUAL_MEASUREMENT = "Insecure hard-coded virtual measurement v1"
TIMEOUT = 30

V1_CHECKS = {
    "setup:register_certificate_user",
    "p3:delete_absent_user",
    "p4:users_endpoint_old_version",
    "p5:user_ids",
    "p6:enclave_quotes",
}
V2_CHECKS = V1_CHECKS | {"p1:user_defined_role", "p2:ledger_user_roles_merge", "p4:users_endpoint_redirect"}


@pytest.fixture(scope="module", autouse=True)
def no_system_ca() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        for name in CA_VARIABLES:
            mp.delenv(name, raising=False)
        yield


class Ledger:
    def __init__(self, server: Server, issuer: Issuer, work: Path) -> None:
        self.server = server
        self.issuer = issuer
        self.work = work
        self.http = requests.Session()
        self.http.trust_env = False
        self.http.verify = str(server.service_cert)
        self.http.cert = str(server.admin_pem)

    def admin(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.http.request(method, self.server.url + path, timeout=TIMEOUT, **kwargs)

    def quiet_committed(self) -> str:
        """The committed TxId once nothing is pending (two equal readings 100 ms apart)."""
        last = None
        for _ in range(100):
            now = self.admin("GET", "/readyz").json()["committed"]
            if now == last:
                return str(now)
            last = now
            time.sleep(0.1)
        pytest.fail("the committed TxId never settled")


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    work = tmp_path_factory.mktemp("acl-suites")
    init_service(work / "ledger")
    issuer = Issuer("entra-stand-in")
    try:
        with running(work / "ledger") as server:
            led = Ledger(server, issuer, work)
            r = led.admin("PUT", "/app/jwtIssuers", json=issuer.config())
            assert r.status_code == 200, r.text
            yield led
            led.http.close()
            assert server.stop() == 0, "".join(server.output[-50:])
    finally:
        issuer.close()


def run_scenario(oracle: str, config: dict[str, Any]) -> dict[str, Any]:
    """Run the scenario in ``oracle``'s venv (it must exist: never skipped) and return its report."""
    python = interpreter(oracle)
    proc = subprocess.run(
        [str(python), "-I", str(SCENARIO)],
        input=json.dumps(config),
        capture_output=True,
        text=True,
        timeout=SCENARIO_TIMEOUT,
        env=clean_env(),
        check=False,
    )
    assert proc.returncode == 0, f"{SCENARIO.name} in {VENVS[oracle]} exited {proc.returncode}:\n{proc.stderr[-6000:]}"
    try:
        report: dict[str, Any] = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"{SCENARIO.name} printed no JSON report: {proc.stdout[:2000]!r} {proc.stderr[-4000:]}")
    assert report["sdk_version"] == SDK_VERSIONS[oracle], f"{VENVS[oracle]} is stale: run `make oracles`"
    return report


def assert_checks(report: dict[str, Any], prefix: str) -> None:
    """Every check whose name starts with ``prefix`` ran and passed (all failures shown at once)."""
    checks = {name: c for name, c in report["checks"].items() if name.startswith(prefix)}
    assert checks, f"no {prefix}* check in the report"
    failed = {name: c["error"] for name, c in checks.items() if not c["ok"]}
    assert not failed, f"SDK {report['sdk_version']}: " + "\n\n".join(f"{n}:\n{e}" for n, e in failed.items())


@pytest.fixture(scope="module", params=sorted(SDK_VERSIONS))
def report(request: pytest.FixtureRequest, ledger: Ledger) -> dict[str, Any]:
    oracle: str = request.param
    work = ledger.work / oracle
    work.mkdir()
    aad_admin = str(uuid.uuid4())  # the suites' AAD principal: an Administrator before they start
    r = ledger.admin(
        "PATCH", f"/app/ledgerUsers/{aad_admin}", json={"assignedRoles": ["Administrator"]}, headers=MERGE_PATCH
    )
    assert r.status_code == 200, r.text
    pem, cert_id = new_identity(work, "cert-user")
    _, managed = new_identity(work, "managed")
    config = {
        "endpoint": ledger.server.url,
        "service_cert": str(ledger.server.service_cert),
        "admin_pem": str(ledger.server.admin_pem),
        "aad_token": ledger.issuer.token(aad_admin),
        "cert_user": {"pem": str(pem), "id": cert_id},
        "managed_cert_id": managed,
        "quotes": 1,
        "only": None,
    }
    result = run_scenario(oracle, config)
    result["oracle"] = oracle
    return result


def test_every_check_ran(report: dict[str, Any]) -> None:
    assert set(report["checks"]) == (V2_CHECKS if report["oracle"] == "acl2" else V1_CHECKS)
    assert_checks(report, "setup:")


# --- 1. custom roles in ACL's field names -----------------------------------------------------


def test_p1_user_defined_roles_in_acls_names(report: dict[str, Any]) -> None:
    if report["oracle"] == "acl2":
        assert_checks(report, "p1:")
    else:
        assert not [name for name in report["checks"] if name.startswith("p1:")]  # 1.1.1 has no roles API


def test_p1_roles_wire_format(ledger: Ledger) -> None:
    """Both spellings in both envelopes; answers in ACL's names; a refused body writes nothing."""
    bodies = [
        [{"role_name": "wire-a", "role_actions": ["/content/read"]}],
        {"roles": [{"role_name": "wire-b", "role_actions": ["/content/read"]}]},
        [{"roleName": "wire-c", "roleActions": ["/content/read"]}],
        {"roles": [{"roleName": "wire-d", "roleActions": ["Microsoft.ConfidentialLedger/ledger/transactions/read"]}]},
    ]
    for body in bodies:
        r = ledger.admin("PUT", "/app/roles", json=body, params=NEW_API)
        assert r.status_code == 200, r.text
        (item,) = body if isinstance(body, list) else body["roles"]
        name = item.get("role_name", item.get("roleName"))
        actions = item.get("role_actions", item.get("roleActions"))
        assert r.json() == {"roles": [{"role_name": name, "role_actions": actions}]}
        got = ledger.admin("GET", "/app/roles", params={"roleName": name})
        assert got.status_code == 200
        assert got.json() == r.json()
    everything = ledger.admin("GET", "/app/roles").json()
    assert [x["role_name"] for x in everything["roles"][:3]] == ["Administrator", "Contributor", "Reader"]
    assert all(set(x) == {"role_name", "role_actions"} for x in everything["roles"])
    before = ledger.quiet_committed()
    for bad, field in [
        ([{"role_name": "wire-x", "roleName": "wire-x", "role_actions": ["/a"]}], "#/0"),
        ([{"role_name": "wire-x", "role_actions": ["content/read"]}], "#/0/role_actions"),
        ([{"role_name": "wire-x", "role_actions": ["/has space"]}], "#/0/role_actions"),
        ([{"role_name": "wire-x", "role_actions": ["/" + "x" * 256]}], "#/0/role_actions"),
        ({"roles": [{"role_name": 5, "role_actions": ["/a"]}]}, "#/roles/0/role_name"),
        ([{"roleName": "wire-x", "roleActions": ["/a"], "role_actions": ["/b"]}], "#/0"),
    ]:
        r = ledger.admin("PUT", "/app/roles", json=bad)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "InvalidInput"
        assert r.json()["error"]["message"].startswith(f"At {field}:"), r.text
    assert ledger.quiet_committed() == before
    assert ledger.admin("GET", "/app/roles", params={"roleName": "wire-x"}).status_code == 404
    for name in ("wire-a", "wire-b", "wire-c", "wire-d"):
        assert ledger.admin("DELETE", "/app/roles", params={"roleName": name}).status_code == 200


def test_p1_application_actions_allow_nothing_here(ledger: Ledger, tmp_path: Path) -> None:
    """A role of application actions only (for user-defined endpoints, which notarium has not)
    lets its user call none of notarium's operations; catalogue actions next to them still do."""
    r = ledger.admin(
        "PUT", "/app/roles", json={"roles": [{"role_name": "app-only", "role_actions": ["/content/read"]}]}
    )
    assert r.status_code == 200, r.text
    pem, user_id = new_identity(tmp_path, "app-user")
    r = ledger.admin("PATCH", f"/app/ledgerUsers/{user_id}", json={"assignedRoles": ["app-only"]}, headers=MERGE_PATCH)
    assert r.status_code == 200, r.text
    with requests.Session() as user:
        user.trust_env = False
        user.verify, user.cert = str(ledger.server.service_cert), str(pem)
        r = user.get(f"{ledger.server.url}/app/transactions/current", timeout=TIMEOUT)
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "NotAllowed"
        tx_read = "Microsoft.ConfidentialLedger/ledger/transactions/read"
        r = ledger.admin("PATCH", "/app/roles", json=[{"role_name": "app-only", "role_actions": [tx_read]}])
        assert r.json() == {"roles": [{"role_name": "app-only", "role_actions": ["/content/read", tx_read]}]}
        assert user.get(f"{ledger.server.url}/app/collections", timeout=TIMEOUT).status_code == 200
    assert ledger.admin("DELETE", f"/app/ledgerUsers/{user_id}").status_code == 204
    assert ledger.admin("DELETE", "/app/roles", params={"roleName": "app-only"}).status_code == 200


# --- 2. ledgerUsers PATCH merges -------------------------------------------------------------


def test_p2_ledger_users_patch_adds_roles(report: dict[str, Any]) -> None:
    if report["oracle"] == "acl2":
        assert_checks(report, "p2:")
    else:
        assert not [name for name in report["checks"] if name.startswith("p2:")]  # 1.1.1 has no ledgerUsers


def test_p2_merge_on_the_wire(ledger: Ledger, tmp_path: Path) -> None:
    """The answer shows the roles assigned; the user holds the union; /app/users still replaces."""
    _, user_id = new_identity(tmp_path, "merged")
    path = f"/app/ledgerUsers/{user_id}"
    r = ledger.admin("PATCH", path, json={"assignedRoles": ["Contributor"]}, headers=MERGE_PATCH)
    assert r.json() == {"assignedRoles": ["Contributor"], "userId": user_id}
    r = ledger.admin("PATCH", path, json={"assignedRoles": ["Reader", "Reader"]}, headers=MERGE_PATCH)
    assert r.json() == {"assignedRoles": ["Reader"], "userId": user_id}
    assert ledger.admin("GET", path).json() == {"assignedRoles": ["Contributor", "Reader"], "userId": user_id}
    # roles already held: answered, nothing written
    before = ledger.quiet_committed()
    r = ledger.admin("PATCH", path, json={"assignedRoles": ["Contributor"]}, headers=MERGE_PATCH)
    assert r.json() == {"assignedRoles": ["Contributor"], "userId": user_id}
    assert ledger.quiet_committed() == before
    # a body without assignedRoles changes nothing and shows everything held
    assert ledger.admin("PATCH", path, json={}, headers=MERGE_PATCH).json()["assignedRoles"] == [
        "Contributor",
        "Reader",
    ]
    # the one-role view (at an api-version that serves it) replaces all roles with one
    r = ledger.admin(
        "PATCH", f"/app/users/{user_id}", params=OLD_API, json={"assignedRole": "Reader"}, headers=MERGE_PATCH
    )
    assert r.json() == {"assignedRole": "Reader", "userId": user_id}
    assert ledger.admin("GET", path).json()["assignedRoles"] == ["Reader"]
    assert ledger.admin("DELETE", path).status_code == 204


# --- 3. deleting nobody is idempotent --------------------------------------------------------


def test_p3_delete_absent_user(report: dict[str, Any]) -> None:
    assert_checks(report, "p3:")


@pytest.mark.parametrize("view", ["users", "ledgerUsers"])
def test_p3_delete_absent_user_writes_nothing(ledger: Ledger, view: str) -> None:
    before = ledger.quiet_committed()
    for user_id in ("0" * 36, "A1:" * 31 + "B2", quote("nobody|x", safe="")):
        r = ledger.admin("DELETE", f"/app/{view}/{user_id}", params=OLD_API)
        assert r.status_code == 204, r.text
        assert r.content == b""
    assert ledger.quiet_committed() == before


# --- 4. /app/users changes at the newest api-version -----------------------------------------


def test_p4_users_endpoint(report: dict[str, Any]) -> None:
    assert_checks(report, "p4:")
    if report["oracle"] == "acl2":
        assert "p4:users_endpoint_redirect" in report["checks"]


def test_p4_redirect_on_the_wire(ledger: Ledger, tmp_path: Path) -> None:
    """400 ApiVersionRedirect at the versions with /app/ledgerUsers, nothing written; earlier
    versions and requests without one are served; reads are served at every version."""
    _, user_id = new_identity(tmp_path, "redirected")
    before = ledger.quiet_committed()
    for version in ("2024-08-22-preview", "2024-12-09-preview"):
        params = {"api-version": version}
        r = ledger.admin(
            "PATCH", f"/app/users/{user_id}", params=params, json={"assignedRole": "Reader"}, headers=MERGE_PATCH
        )
        assert (r.status_code, r.json()["error"]["code"]) == (400, "ApiVersionRedirect"), r.text
        assert "/app/ledgerUsers" in r.json()["error"]["message"]
        r = ledger.admin("DELETE", f"/app/users/{user_id}", params=params)
        assert (r.status_code, r.json()["error"]["code"]) == (400, "ApiVersionRedirect"), r.text
        assert ledger.admin("GET", f"/app/users/{user_id}", params=params).status_code == 404
        assert ledger.admin("GET", "/app/users", params=params).status_code == 200
    assert ledger.quiet_committed() == before
    for version in ("2022-05-13", "2024-07-26-preview", None):
        params = {"api-version": version} if version else {}
        r = ledger.admin(
            "PATCH", f"/app/users/{user_id}", params=params, json={"assignedRole": "Reader"}, headers=MERGE_PATCH
        )
        assert r.status_code == 200, r.text
        assert ledger.admin("DELETE", f"/app/users/{user_id}", params=params).status_code == 204


# --- 5. user ids as ACL accepts them ---------------------------------------------------------


def test_p5_user_ids(report: dict[str, Any]) -> None:
    assert_checks(report, "p5:")


@pytest.mark.parametrize("user_id", ["0" * 36, "AB:CD", ":".join(["AB"] * 31) + ":A", "AB:" * 32, "a:b|c d"])
def test_p5_ids_that_are_not_fingerprints_are_token_users(ledger: Ledger, user_id: str) -> None:
    path = f"/app/ledgerUsers/{quote(user_id, safe='')}"
    r = ledger.admin("PATCH", path, json={"assignedRoles": ["Reader"]}, headers=MERGE_PATCH)
    assert r.status_code == 200, r.text
    assert r.json() == {"assignedRoles": ["Reader"], "userId": user_id}
    listed = {u["userId"] for u in ledger.admin("GET", "/app/ledgerUsers").json()["ledgerUsers"]}
    assert user_id in listed
    assert ledger.admin("DELETE", path).status_code == 204


def test_p5_a_fingerprint_shaped_id_is_still_a_certificate_user(ledger: Ledger, tmp_path: Path) -> None:
    """The same certificate user, however the fingerprint is written; a token with that claim is not it."""
    pem, user_id = new_identity(tmp_path, "fingerprint")
    plain = user_id.replace(":", "").lower()
    r = ledger.admin("PATCH", f"/app/ledgerUsers/{plain}", json={"assignedRoles": ["Reader"]}, headers=MERGE_PATCH)
    assert r.status_code == 200, r.text
    assert ledger.admin("GET", f"/app/ledgerUsers/{user_id}").json()["assignedRoles"] == ["Reader"]
    with requests.Session() as user:
        user.trust_env = False
        user.verify, user.cert = str(ledger.server.service_cert), str(pem)
        assert user.get(f"{ledger.server.url}/app/collections", timeout=TIMEOUT).status_code == 200
    token = ledger.issuer.token(user_id)
    r = requests.get(
        f"{ledger.server.url}/app/collections",
        headers={"Authorization": f"Bearer {token}"},
        verify=str(ledger.server.service_cert),
        timeout=TIMEOUT,
    )
    assert r.status_code == 401
    assert ledger.admin("DELETE", f"/app/ledgerUsers/{user_id}").status_code == 204


# --- 6. enclave quotes ------------------------------------------------------------------------


def test_p6_enclave_quotes(report: dict[str, Any]) -> None:
    assert_checks(report, "p6:")
    assert len(report["data"]["quotes"]["nodes"]) == 1


def test_p6_quote_is_the_virtual_platforms_evidence_of_the_node(ledger: Ledger) -> None:
    body = ledger.admin("GET", "/app/enclaveQuotes").json()
    node_id = body["currentNodeId"]
    assert list(body["enclaveQuotes"]) == [node_id]
    quote_ = body["enclaveQuotes"][node_id]
    assert quote_["quoteVersion"] == "Insecure_Virtual"
    assert quote_["virtual"] is True
    assert quote_["platform"] == "Virtual"
    evidence = bytes.fromhex(quote_["raw"])
    assert json.loads(evidence) == {
        "measurement": VIRTUAL_MEASUREMENT,
        "report_data": base64.b64encode(bytes.fromhex(node_id)).decode(),
    }
    assert bytes.fromhex(quote_["mrenclave"]).decode() == VIRTUAL_MEASUREMENT
    nodes = ledger.admin("GET", "/node/network/nodes").json()
    assert [n["nodeId"] for n in nodes["nodes"] if n["status"] == "Trusted"] == [node_id]
    # the node id is SHA-256 of the node's public key: the evidence names the key serving TLS
    assert key_id(served_certificate(ledger.server).public_key()) == node_id


def served_certificate(server: Server) -> x509.Certificate:
    """The certificate the server presents over TLS (verified against the service certificate)."""
    context = ssl.create_default_context(cafile=str(server.service_cert))
    host, port = server.url.removeprefix("https://").rsplit(":", 1)
    with (
        socket.create_connection((host, int(port)), timeout=TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)
