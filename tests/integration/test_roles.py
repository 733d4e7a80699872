"""Action enforcement on every endpoint, over real TLS with real client certificates.

The endpoint table is read from the code itself: every ``register(router)`` in
``notarium.server.routes`` and the ``required_action`` and ``required_role`` that ``@requires``
puts on each handler (a handler without them fails the test). Every endpoint needs one action of
the documented catalogue (``ACTIONS`` below, written out independently of ``notarium.auth.rbac``);
``required_role`` is the least built-in role holding it. Seven callers (an Administrator, a
Contributor, a Reader, two users holding only a user-defined role each, an unregistered certificate
and no certificate at all) call every (method, path) of a running ``notarium serve``:

- a caller one of whose roles holds the endpoint's action → the endpoint's normal answer (built-in
  roles: Reader < Contributor < Administrator; user-defined roles: exactly their actions);
- a user whose roles do not hold it → 403 ``{"error": {"code": "NotAllowed"}}``;
- unregistered certificate or none → 401 ``{"error": {"code": "InvalidAuthenticationInfo"}}``;
- an action whose least role an operator can configure (``chunks/read``: ``--export-role``) is
  checked with its default here, and lowered in ``test_a_configured_role_replaces_the_default``;
- endpoints declared unauthenticated (exactly /healthz, /readyz, /metrics, /openapi.json and
  /ledgerIdentity/{ledgerId}, governance's public reads under /gov/, and the list of nodes
  /node/network/nodes, /node/state) answer anyone;
- governance requests (``authentication = "member-signature"``: exactly the POSTs under /gov/)
  are authenticated by a member's COSE signature in the body, whoever the TLS caller is: the
  probe's JSON body is no such signature, so every caller gets 400 and nothing is written;
- a join request (``authentication = "node-signature"``: exactly POST /node/join) is authenticated
  by the node key it presents; the probe's ``{}`` is no join request: 400 for anyone, nothing written.

Refused writes change nothing: a Reader's POST /app/transactions leaves the committed state as it
was, a Contributor cannot create, promote or delete users, callers without ``roles/write`` cannot
create or delete roles, an unregistered caller cannot write.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from integration.server import new_identity, running
from notarium.auth.identity import acl_fingerprint
from notarium.governance.request import sign_request
from notarium.ledger import init_service
from notarium.ledger.identity import load_cert, load_private_ec
from notarium.server import routes
from notarium.server.app import create_app
from notarium.server.config import ServerConfig
from notarium.verify.keys import cert_fingerprint

CA_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
RANK = {"Reader": 1, "Contributor": 2, "Administrator": 3}  # independent of notarium.auth.rbac
A = "Microsoft.ConfidentialLedger/ledger/"
# the action catalogue as docs/api.md documents it: action -> the least built-in role holding it
ACTIONS = {
    A + "transactions/read": "Reader",
    A + "transactions/write": "Contributor",
    A + "governance/read": "Reader",
    A + "users/read": "Administrator",
    A + "users/write": "Administrator",
    A + "roles/read": "Administrator",
    A + "roles/write": "Administrator",
    A + "chunks/read": "Administrator",  # the default of --export-role
    A + "jwtIssuers/read": "Administrator",
    A + "jwtIssuers/write": "Administrator",
    A + "endpoints/write": "Administrator",
}
# two user-defined roles, each held (alone) by the caller of the same name
CUSTOM = {
    "auditor": frozenset({A + "transactions/read", A + "chunks/read"}),
    "appender": frozenset({A + "transactions/write"}),
}
CALLERS = ("Administrator", "Contributor", "Reader", *CUSTOM, "unregistered", "anonymous")
PROBE_ROLE = "matrix-probe"  # PUT /app/roles creates it (then the test removes it)
VICTIM_ROLE = "matrix-victim"  # DELETE /app/roles removes it (then the test puts it back)
ANY_METHOD = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
# /verify: the standalone receipt verifier page (it runs in the browser and asks the ledger nothing)
UNAUTHENTICATED = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/ledgerIdentity/{ledgerId}", "/verify"}
GOV_PUBLIC = {  # public reads: governance is on the record
    "/gov/members/proposals",
    "/gov/members/proposals/{proposalId}",
    "/gov/members/proposals/{proposalId}/actions",
    "/gov/members/state-digests/{memberId}",
    "/gov/service/members",
    "/gov/service/constitution",
}
NODE_PUBLIC = {"/node/network/nodes", "/node/state"}  # public, as in CCF
NODE_SIGNED = {"/node/join"}  # signed by the joining node's own key
MEMBER_SIGNED = {  # COSE_Sign1 bodies signed by a member
    "/gov/members/proposals:create",
    "/gov/members/proposals/{proposalId}/ballots/{memberId}:submit",
    "/gov/members/proposals/{proposalId}:withdraw",
    "/gov/members/state-digests/{memberId}:update",
    "/gov/members/state-digests/{memberId}:ack",
}
PROBE_COLLECTION = "roles-probe"
TIMEOUT = 10
_UNSET = object()


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # aiohttp's canonical form, e.g. /app/transactions/{transactionId}
    handler: str
    required: str | None  # a role name, or None for unauthenticated endpoints
    action: str | None  # the action a caller must hold, or None for unauthenticated endpoints
    setting: str | None = None  # the ServerConfig field that can change the required role, if any
    authentication: str | None = None  # "member-signature" / "node-signature": the body's signature authenticates


def _routes(router: web.UrlDispatcher) -> list[tuple[str, str, Any]]:
    return [(r.method, r.resource.canonical, r.handler) for r in router.routes() if r.resource is not None]


def endpoint_table() -> list[Endpoint]:
    """Every (method, path) that the route modules register, with its handler's ``required_role``
    and ``required_action``."""
    router = web.UrlDispatcher()
    for info in pkgutil.iter_modules(routes.__path__):
        module = importlib.import_module(f"{routes.__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(router)
    table = []
    for method, path, handler in _routes(router):
        role = getattr(handler, "required_role", _UNSET)
        if role is _UNSET:
            pytest.fail(f"{method} {path} ({handler.__name__}) has no required_role: is it missing @requires?")
        action = getattr(handler, "required_action", _UNSET)
        if action is _UNSET:
            pytest.fail(f"{method} {path} ({handler.__name__}) has no required_action: is it missing @requires?")
        required = None if role is None else str(role)
        setting = getattr(handler, "role_setting", None)
        authentication = getattr(handler, "authentication", _UNSET)
        if authentication is _UNSET:
            pytest.fail(f"{method} {path} ({handler.__name__}) has no authentication: is it missing @requires?")
        for m in ANY_METHOD if method == "*" else (method,):
            action_name = None if action is None else str(action)
            table.append(Endpoint(m, path, handler.__name__, required, action_name, setting, authentication))
    return table


TABLE = endpoint_table()


class Ledger:
    """A running server, one HTTP session per caller, and the fixtures the calls point at."""

    def __init__(self, url: str, directory: Path, work: Path) -> None:
        self.url = url
        self.verify = str(directory / "service_cert.pem")
        admin_cert = x509.load_pem_x509_certificate((directory / "user0_cert.pem").read_bytes())
        self.ids: dict[str, str] = {"Administrator": acl_fingerprint(admin_cert.public_bytes(Encoding.DER))}
        pems: dict[str, Path | None] = {"Administrator": directory / "user0_combined.pem", "anonymous": None}
        for name in ("Contributor", "Reader", *CUSTOM, "unregistered", "target", "newcomer"):
            pems[name], self.ids[name] = new_identity(work, name)
        self.sessions: dict[str, requests.Session] = {}
        for name in (*CALLERS, "target"):
            s = requests.Session()
            pem = pems[name]
            if pem is not None:
                s.cert = str(pem)
            self.sessions[name] = s
        self.txid = ""
        self.chunk = ""  # a completed ledger chunk file (the {name} of /app/ledger/chunks/{name})
        self.signature = ""  # a committed signature transaction (the query of /app/consistency)
        self.proposal = ""  # an open governance proposal (by member0)
        self.member = ""  # member0's id

    def call(self, caller: str, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One request; ``verify=`` is pinned on every call (no CA bundle from the environment)."""
        return self.sessions[caller].request(method, self.url + path, verify=self.verify, timeout=TIMEOUT, **kwargs)

    def admin(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.call("Administrator", method, path, **kwargs)

    def set_user(self, user_id: str, role: str) -> None:
        r = self.admin(
            "PATCH",
            f"/app/users/{user_id}",
            data=f'{{"assignedRole": "{role}"}}',
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert r.status_code == 200, r.text
        assert r.json() == {"assignedRole": role, "userId": user_id}

    def set_roles(self, roles: dict[str, frozenset[str]]) -> None:
        """Create or replace user-defined roles (PUT /app/roles)."""
        body = [{"roleName": name, "roleActions": sorted(actions)} for name, actions in roles.items()]
        r = self.admin("PUT", "/app/roles", json=body)
        assert r.status_code == 200, r.text

    def setup_users(self) -> None:
        """The callers' roles: built-in ones, and a user-defined role each for the custom callers."""
        self.set_user(self.ids["Contributor"], "Contributor")
        self.set_user(self.ids["Reader"], "Reader")
        self.set_roles({**CUSTOM, VICTIM_ROLE: frozenset({A + "governance/read"})})
        for name in CUSTOM:
            r = self.admin(
                "PATCH",
                f"/app/ledgerUsers/{self.ids[name]}",
                json={"assignedRoles": [name]},
                headers={"Content-Type": "application/merge-patch+json"},
            )
            assert r.status_code == 200, r.text
            assert r.json() == {"assignedRoles": [name], "userId": self.ids[name]}

    def role_names(self) -> set[str]:
        r = self.admin("GET", "/app/roles")
        assert r.status_code == 200, r.text
        return {role["role_name"] for role in r.json()["roles"]}

    def wait_committed(self, txid: str) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r = self.admin("GET", f"/app/transactions/{txid}/status")
            assert r.status_code == 200, r.text
            if r.json()["state"] == "Committed":
                return
            time.sleep(0.01)
        pytest.fail(f"{txid} was not committed within 10 s")

    def quiet_committed(self) -> str:
        """The committed txid once nothing is pending any more (two equal readings 100 ms apart)."""
        last = None
        for _ in range(100):
            now = self.call("anonymous", "GET", "/readyz").json()["committed"]
            if now == last:
                return now
            last = now
            time.sleep(0.1)
        pytest.fail("the committed txid never settled")

    def entries(self, collection: str) -> list[dict[str, Any]]:
        r = self.admin("GET", "/app/transactions", params={"collectionId": collection})
        assert r.status_code == 200, r.text
        assert "nextLink" not in r.json(), "more entries than one page in a probe collection"
        return list(r.json()["entries"])

    def close(self) -> None:
        for s in self.sessions.values():
            s.close()


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    work = tmp_path_factory.mktemp("roles")
    directory = work / "ledger"
    init_service(directory)
    with pytest.MonkeyPatch.context() as mp:
        for name in CA_VARIABLES:
            mp.delenv(name, raising=False)
        with running(directory) as server:
            led = Ledger(server.url, directory, work)
            try:
                led.setup_users()
                led.set_user(led.ids["target"], "Reader")
                r = led.admin("POST", "/app/transactions", json={"contents": "in the default collection"})
                assert r.status_code == 200, r.text
                led.txid = r.headers["x-ms-ccf-transaction-id"]
                led.wait_committed(led.txid)
                r = led.admin("GET", "/app/signedRoot")
                assert r.status_code == 200, r.text
                led.signature = r.json()["transactionId"]
                r = led.admin("GET", "/app/ledger/chunks")
                assert r.status_code == 200, r.text
                led.chunk = r.json()["chunks"][0]["name"]  # init_service completes the genesis chunk
                led.proposal, led.member = open_proposal(led, directory)
                yield led
            finally:
                led.close()
            assert server.stop() == 0, "".join(server.output[-50:])


def open_proposal(led: Ledger, directory: Path) -> tuple[str, str]:
    """An Open proposal by member0, and member0's state digest recorded: what the /gov/ reads show."""
    cert = load_cert(directory / "member0_cert.pem")
    key = load_private_ec(directory / "member0_privk.pem")
    member = cert_fingerprint(cert)
    action = {"name": "set_recovery_threshold", "args": {"recovery_threshold": 1}}
    body = sign_request(key, cert, "proposal", json.dumps({"actions": [action]}).encode())
    headers = {"Content-Type": "application/cose"}
    r = led.call("anonymous", "POST", "/gov/members/proposals:create", data=body, headers=headers)
    assert r.status_code == 200, r.text
    proposal = r.json()["proposalId"]
    body = sign_request(key, cert, "state_digest", b"")
    r = led.call("anonymous", "POST", f"/gov/members/state-digests/{member}:update", data=body, headers=headers)
    assert r.status_code == 200, r.text
    return str(proposal), member


# --- the table ---------------------------------------------------------------------------------


def test_every_handler_declares_its_role() -> None:
    assert TABLE
    assert all(e.required in (None, *RANK) for e in TABLE), [e for e in TABLE if e.required not in (None, *RANK)]


def test_every_handler_needs_one_catalogued_action() -> None:
    """Each endpoint's action is in the documented catalogue, and its ``required_role`` is the least
    built-in role holding that action; unauthenticated endpoints need neither."""
    for e in TABLE:
        assert (e.action is None) == (e.required is None), e
        if e.action is not None:
            assert e.action in ACTIONS, e
            assert e.required == ACTIONS[e.action], e


def test_the_catalogue_is_what_the_server_knows(ledger: Ledger) -> None:
    """GET /app/roles lists each built-in role's actions: exactly the documented catalogue, each
    role holding the actions whose least role it is or ranks above; Administrator holds them all."""
    r = ledger.admin("GET", "/app/roles")
    assert r.status_code == 200, r.text
    listed = {role["role_name"]: role["role_actions"] for role in r.json()["roles"]}
    for role, rank in RANK.items():
        assert listed[role] == sorted(a for a, least in ACTIONS.items() if rank >= RANK[least]), role
    assert listed["Administrator"] == sorted(ACTIONS)
    for name, actions in CUSTOM.items():
        assert listed[name] == sorted(actions), name


def test_table_is_what_the_server_serves() -> None:
    """create_app registers exactly the routes of the modules the table was built from."""
    app = create_app(SimpleNamespace(config=ServerConfig(), forwarder=None))  # type: ignore[arg-type]  (routing only)
    served = {(m, p, h.__name__) for m, p, h in _routes(app.router)}
    router = web.UrlDispatcher()
    for info in pkgutil.iter_modules(routes.__path__):
        module = importlib.import_module(f"{routes.__name__}.{info.name}")
        if hasattr(module, "register"):
            module.register(router)
    assert served == {(m, p, h.__name__) for m, p, h in _routes(router)}


def test_exactly_the_operational_endpoints_are_unauthenticated() -> None:
    public = {e.path for e in TABLE if e.required is None and e.authentication is None}
    assert public == UNAUTHENTICATED | GOV_PUBLIC | NODE_PUBLIC
    assert all(e.method in ("GET", "HEAD") for e in TABLE if e.path in GOV_PUBLIC)


def test_exactly_the_governance_requests_are_member_signed() -> None:
    signed = [e for e in TABLE if e.authentication == "member-signature"]
    assert {e.path for e in signed} == MEMBER_SIGNED
    assert {(e.method, e.authentication, e.action, e.required) for e in signed} == {
        ("POST", "member-signature", None, None)
    }


def test_exactly_the_join_request_is_node_signed() -> None:
    signed = [e for e in TABLE if e.authentication is not None and e.authentication != "member-signature"]
    assert {e.path for e in signed} == NODE_SIGNED
    assert {(e.method, e.authentication, e.action, e.required) for e in signed} == {
        ("POST", "node-signature", None, None)
    }


def test_configurable_roles_default_to_the_declared_role() -> None:
    """The matrix below runs with the default settings: a configurable role's default is the one
    its handler declares (and the OpenAPI document shows)."""
    configurable = {(e.method, e.path): e.setting for e in TABLE if e.setting is not None}
    assert configurable == {
        ("GET", "/app/ledger/chunks"): "export_role",
        ("HEAD", "/app/ledger/chunks"): "export_role",
        ("GET", "/app/ledger/chunks/{name}"): "export_role",
        ("HEAD", "/app/ledger/chunks/{name}"): "export_role",
    }
    defaults = ServerConfig()
    for e in TABLE:
        if e.setting is not None:
            assert str(getattr(defaults, e.setting)) == e.required, e


def test_a_configured_role_replaces_the_default(tmp_path: Path) -> None:
    """``--export-role Reader``: every user may export, and callers who are not users still may not."""
    directory = tmp_path / "ledger"
    init_service(directory)
    exported = [e for e in TABLE if e.setting == "export_role"]
    with pytest.MonkeyPatch.context() as mp:
        for name in CA_VARIABLES:
            mp.delenv(name, raising=False)
        with running(directory, "--export-role", "Reader") as server:
            led = Ledger(server.url, directory, tmp_path)
            try:
                led.setup_users()
                led.chunk = led.admin("GET", "/app/ledger/chunks").json()["chunks"][0]["name"]
                for caller in CALLERS:
                    for e in exported:
                        r = _request(led, caller, e)
                        # user-defined roles keep exactly their actions: "appender" still may not
                        want = 200 if caller in RANK or caller == "auditor" else 403 if caller in CUSTOM else 401
                        assert r.status_code == want, (caller, e, r.text[:200])
                # the built-in roles' actions say so
                for role in RANK:
                    r = led.admin("GET", "/app/roles", params={"roleName": role})
                    assert r.status_code == 200, r.text
                    assert A + "chunks/read" in r.json()["roles"][0]["role_actions"], role
            finally:
                led.close()
            assert server.stop() == 0


def test_documented_minimum_roles() -> None:
    """acl-rest-api.md §3.0 / §4.4: writes need Contributor, user management Administrator."""
    required = {(e.method, e.path): e.required for e in TABLE}
    expected = {
        ("POST", "/app/transactions"): "Contributor",
        ("GET", "/app/transactions"): "Reader",
        ("GET", "/app/transactions/current"): "Reader",
        ("GET", "/app/transactions/{transactionId}"): "Reader",
        ("GET", "/app/transactions/{transactionId}/status"): "Reader",
        ("GET", "/app/transactions/{transactionId}/receipt"): "Reader",
        ("GET", "/app/collections"): "Reader",
        ("GET", "/app/governance/constitution"): "Reader",
        ("GET", "/app/governance/members"): "Reader",
        ("GET", "/app/enclaveQuotes"): "Reader",
        ("GET", "/app/users"): "Administrator",
        ("GET", "/app/users/{userId}"): "Administrator",
        ("PATCH", "/app/users/{userId}"): "Administrator",
        ("DELETE", "/app/users/{userId}"): "Administrator",
        ("GET", "/app/ledgerUsers"): "Administrator",
        ("GET", "/app/ledgerUsers/{userId}"): "Administrator",
        ("PATCH", "/app/ledgerUsers/{userId}"): "Administrator",
        ("DELETE", "/app/ledgerUsers/{userId}"): "Administrator",
        ("GET", "/ledgerIdentity/{ledgerId}"): None,
        ("GET", "/app/roles"): "Administrator",
        ("PUT", "/app/roles"): "Administrator",
        ("PATCH", "/app/roles"): "Administrator",
        ("DELETE", "/app/roles"): "Administrator",
        ("GET", "/app/signedRoot"): "Reader",
        ("GET", "/app/consistency"): "Reader",
        ("PUT", "/app/userDefinedEndpoints"): "Administrator",
        ("GET", "/app/userDefinedFunctions/{functionId}"): "Administrator",
        ("GET", "/app/ledger/chunks"): "Administrator",  # the default of --export-role
        ("GET", "/app/ledger/chunks/{name}"): "Administrator",
        ("HEAD", "/app/ledger/chunks/{name}"): "Administrator",
    }
    assert {k: required.get(k, "missing") for k in expected} == expected


# --- every role × every endpoint ---------------------------------------------------------------


def test_documented_actions() -> None:
    """A sample of the catalogue's use, as docs/api.md lists it."""
    action = {(e.method, e.path): e.action for e in TABLE}
    expected = {
        ("POST", "/app/transactions"): A + "transactions/write",
        ("GET", "/app/transactions/{transactionId}/receipt"): A + "transactions/read",
        ("GET", "/app/signedRoot"): A + "transactions/read",
        ("GET", "/app/ping"): A + "transactions/read",
        ("GET", "/app/governance/members"): A + "governance/read",
        ("GET", "/app/enclaveQuotes"): A + "governance/read",
        ("GET", "/app/ledgerUsers"): A + "users/read",
        ("PATCH", "/app/users/{userId}"): A + "users/write",
        ("GET", "/app/roles"): A + "roles/read",
        ("DELETE", "/app/roles"): A + "roles/write",
        ("GET", "/app/ledger/chunks/{name}"): A + "chunks/read",
        ("POST", "/app/userDefinedFunctions/{functionId}:execute"): A + "endpoints/write",
        ("GET", "/healthz"): None,
    }
    assert {k: action.get(k, "missing") for k in expected} == expected


def _holds(caller: str, action: str) -> bool:
    """Whether ``caller``'s role holds ``action`` (independently of the server's code)."""
    if caller in RANK:
        return RANK[caller] >= RANK[ACTIONS[action]]
    return action in CUSTOM.get(caller, frozenset())


def _allowed(caller: str, e: Endpoint) -> bool:
    return e.action is None or _holds(caller, e.action)


def _expected_success(e: Endpoint) -> int:
    if e.authentication == "member-signature":
        return 400  # the probe's body is not a member's COSE_Sign1: refused, whoever calls over TLS
    if e.authentication == "node-signature":
        return 400  # the probe's {} is not a join request: refused, whoever calls over TLS
    if e.handler == "not_implemented":
        return 501  # user-defined endpoints and functions are not supported
    if e.path == "/app/jwtIssuers" and e.method in ("PUT", "DELETE"):
        return 400  # the probe names no issuer: past authorization, refused as input (test_tokens.py covers these)
    if e.method == "DELETE" and e.path != "/app/roles":
        return 204  # roles: 200, what the SDKs accept
    return 200


def _request(led: Ledger, caller: str, e: Endpoint) -> requests.Response:
    values = {"transactionId": led.txid, "userId": led.ids["target"], "ledgerId": "any", "functionId": "f1"}
    values["name"] = led.chunk
    values.update(proposalId=led.proposal, memberId=led.member)
    unknown = set(re.findall(r"{(\w+)}", e.path)) - set(values)
    assert not unknown, f"no test value for {unknown} in {e.path}: extend this test"
    path = re.sub(r"{(\w+)}", lambda m: values[m.group(1)], e.path)
    kwargs: dict[str, Any] = {}
    if e.path == "/app/consistency":
        kwargs["params"] = {"fromTransactionId": led.signature}
    if (e.method, e.path) == ("DELETE", "/app/roles"):
        kwargs["params"] = {"roleName": VICTIM_ROLE}
    if e.method in ("POST", "PUT", "PATCH"):
        body = "{}"
        if (e.method, e.path) == ("POST", "/app/transactions"):
            kwargs["params"] = {"collectionId": PROBE_COLLECTION}
            body = f'{{"contents": "written by {caller}"}}'
        elif e.path == "/app/users/{userId}":
            body = '{"assignedRole": "Reader"}'
        elif e.path == "/app/ledgerUsers/{userId}":
            body = '{"assignedRoles": ["Reader"]}'
        elif (e.method, e.path) == ("PUT", "/app/roles"):
            body = f'[{{"roleName": "{PROBE_ROLE}", "roleActions": ["{A}governance/read"]}}]'
        elif (e.method, e.path) == ("PATCH", "/app/roles"):  # an action the role holds already: no change
            body = f'{{"roles": [{{"roleName": "appender", "roleActions": ["{A}transactions/write"]}}]}}'
        content_type = "application/merge-patch+json" if e.method == "PATCH" else "application/json"
        kwargs.update(data=body, headers={"Content-Type": content_type})
    return led.call(caller, e.method, path, **kwargs)


@pytest.mark.parametrize("caller", CALLERS)
def test_role_matrix(ledger: Ledger, caller: str) -> None:
    problems = []
    writes = any(_holds(caller, a) for a in ACTIONS if a.endswith("/write"))
    before = None if writes else ledger.quiet_committed()
    for e in TABLE:
        r = _request(ledger, caller, e)
        what = f"{caller}: {e.method} {e.path} (requires {e.action}, {e.required})"
        if _allowed(caller, e):
            want = _expected_success(e)
            if r.status_code != want:
                problems.append(f"{what} → {r.status_code} {r.text[:200]}, expected {want}")
            if e.method == "DELETE" and r.status_code == 204:
                ledger.set_user(ledger.ids["target"], "Reader")  # put the deleted user back
            if (e.method, e.path, r.status_code) == ("DELETE", "/app/roles", 200):
                ledger.set_roles({VICTIM_ROLE: frozenset({A + "governance/read"})})  # put the deleted role back
            continue
        registered = caller in RANK or caller in CUSTOM
        want_status, want_code = (403, "NotAllowed") if registered else (401, "InvalidAuthenticationInfo")
        if r.status_code != want_status:
            problems.append(f"{what} → {r.status_code} {r.text[:200]}, expected {want_status} {want_code}")
        elif e.method != "HEAD":
            try:
                error = r.json()["error"]
            except (ValueError, KeyError, TypeError):
                error = None
            if not isinstance(error, dict) or error.get("code") != want_code or not error.get("message"):
                problems.append(f"{what} → body {r.text[:200]}, expected error code {want_code}")
            if r.headers.get("Content-Type", "").split(";")[0] != "application/json":
                problems.append(f"{what} → Content-Type {r.headers.get('Content-Type')}")
    # refused writes wrote nothing; refused deletes deleted nothing
    target = ledger.admin("GET", f"/app/users/{ledger.ids['target']}")
    if target.status_code != 200 or target.json().get("assignedRole") != "Reader":
        problems.append(f"after {caller}'s calls the target user is {target.status_code} {target.text[:200]}")
    wrote = [x for x in ledger.entries(PROBE_COLLECTION) if x["contents"] == f"written by {caller}"]
    may_write = _holds(caller, A + "transactions/write")
    if len(wrote) != (1 if may_write else 0):
        problems.append(f"{caller} wrote {len(wrote)} entries with POST /app/transactions")
    roles = ledger.role_names()
    if (PROBE_ROLE in roles) != _holds(caller, A + "roles/write"):
        problems.append(f"after {caller}'s PUT /app/roles the role {PROBE_ROLE} exists: {PROBE_ROLE in roles}")
    if VICTIM_ROLE not in roles:
        problems.append(f"{caller}'s DELETE /app/roles removed {VICTIM_ROLE}")
    if PROBE_ROLE in roles:  # the next caller starts without it
        assert ledger.admin("DELETE", "/app/roles", params={"roleName": PROBE_ROLE}).status_code == 200
    if before is not None and ledger.quiet_committed() != before:
        problems.append(f"{caller} may write nothing, yet the ledger moved from {before}")
    assert not problems, "\n".join(problems)


# --- the cases spelled out ---------------------------------------------------------------------


def test_reader_cannot_write(ledger: Ledger) -> None:
    collection = "reader-forbidden"
    before = ledger.quiet_committed()
    r = ledger.call("Reader", "POST", "/app/transactions", params={"collectionId": collection}, json={"contents": "no"})
    assert r.status_code == 403, r.text
    assert r.json()["error"]["code"] == "NotAllowed"
    assert "x-ms-ccf-transaction-id" not in r.headers or r.headers["x-ms-ccf-transaction-id"] == before
    time.sleep(0.2)  # far longer than the signature interval: anything written would be committed by now
    assert ledger.quiet_committed() == before, "the committed state moved after a refused write"
    assert ledger.entries(collection) == []
    listed = ledger.admin("GET", "/app/collections").json()["collections"]
    assert {"collectionId": collection} not in listed
    assert ledger.admin("GET", "/app/transactions/current", params={"collectionId": collection}).status_code == 404


def test_contributor_cannot_manage_users(ledger: Ledger) -> None:
    promote = {"data": '{"assignedRole": "Administrator"}', "headers": {"Content-Type": "application/merge-patch+json"}}
    for user_id in (ledger.ids["newcomer"], ledger.ids["target"], ledger.ids["Contributor"]):  # create, promote, self
        r = ledger.call("Contributor", "PATCH", f"/app/users/{user_id}", **promote)
        assert r.status_code == 403, r.text
        assert r.json()["error"]["code"] == "NotAllowed"
        r = ledger.call(
            "Contributor",
            "PATCH",
            f"/app/ledgerUsers/{user_id}",
            data='{"assignedRoles": ["Administrator"]}',
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert r.status_code == 403, r.text
    assert ledger.call("Contributor", "DELETE", f"/app/users/{ledger.ids['target']}").status_code == 403
    assert ledger.admin("GET", f"/app/users/{ledger.ids['newcomer']}").status_code == 404
    assert ledger.admin("GET", f"/app/users/{ledger.ids['target']}").json()["assignedRole"] == "Reader"
    assert ledger.admin("GET", f"/app/users/{ledger.ids['Contributor']}").json()["assignedRole"] == "Contributor"
    # still only a Contributor
    assert ledger.call("Contributor", "GET", "/app/users").status_code == 403


@pytest.mark.parametrize("caller", ["unregistered", "anonymous"])
def test_unregistered_certificate_is_refused(ledger: Ledger, caller: str) -> None:
    before = ledger.quiet_committed()
    calls = [
        ("POST", "/app/transactions", {"params": {"collectionId": "stranger"}, "json": {"contents": "no"}}),
        ("GET", "/app/transactions", {}),
        ("GET", f"/app/transactions/{ledger.txid}", {}),
        ("GET", "/app/governance/constitution", {}),
        (
            "PATCH",
            f"/app/users/{ledger.ids['unregistered']}",  # registering oneself
            {"data": '{"assignedRole": "Administrator"}', "headers": {"Content-Type": "application/merge-patch+json"}},
        ),
    ]
    for method, path, kwargs in calls:
        r = ledger.call(caller, method, path, **kwargs)
        assert r.status_code == 401, f"{method} {path}: {r.status_code} {r.text}"
        assert r.json()["error"]["code"] == "InvalidAuthenticationInfo"
    assert ledger.admin("GET", f"/app/users/{ledger.ids['unregistered']}").status_code == 404
    assert ledger.entries("stranger") == []
    assert ledger.quiet_committed() == before
    # the unauthenticated endpoints answer anyone
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/ledgerIdentity/any"):
        assert ledger.call(caller, "GET", path).status_code == 200, path
