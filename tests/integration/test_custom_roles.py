"""User-defined roles (``/app/roles``) on a real ``notarium serve``, over real TLS.

- The roles API in both body forms (a bare array as SDK 1.2.0b1 sends, ``{"roles": [...]}`` as
  2.0.0b* do), with fields named as notarium's earlier clients name them (``roleName``,
  ``roleActions``; ACL's own names are tests/integration/test_acl_sdk_suites.py's): create, read
  (one role, all roles), replace (PUT), add actions (PATCH), delete; PUT, PATCH and DELETE answer
  200; answers are ACL's ``{"roles": [{"role_name", "role_actions"}]}``.
- Invalid requests are 4xx in ACL's error format and write nothing: the roles (``GET /app/roles``)
  and the committed transaction id are the same before and after.
- A change is in force for the role's users as soon as it is answered; a user's actions are the
  union over its roles; ``/app/users`` shows one role (the highest built-in one, else the first
  user-defined one by name).
- A role still assigned cannot be deleted (the answer names the users), also when the assignment
  and the deletion race; a role holding every action does not count as an Administrator.
- Roles and their assignments survive a restart.

Every request pins the service certificate with ``verify=``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from integration.server import new_identity, running
from notarium.auth.identity import acl_fingerprint
from notarium.ledger import init_service

A = "Microsoft.ConfidentialLedger/ledger/"
TX_READ, TX_WRITE, GOV_READ = A + "transactions/read", A + "transactions/write", A + "governance/read"
USERS_READ, USERS_WRITE, CHUNKS_READ = A + "users/read", A + "users/write", A + "chunks/read"
EVERY_ACTION = sorted(
    A + a
    for a in (
        "transactions/read",
        "transactions/write",
        "governance/read",
        "users/read",
        "users/write",
        "roles/read",
        "roles/write",
        "chunks/read",
        "jwtIssuers/read",
        "jwtIssuers/write",
        "endpoints/write",
    )
)
BUILTIN = ("Administrator", "Contributor", "Reader")
CA_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}
TIMEOUT = 30


class Caller:
    """One identity's HTTPS session; every request pins the service certificate."""

    def __init__(self, url: str, service_cert: Path, pem: Path | None) -> None:
        self.url = url
        self.verify = str(service_cert)
        self.session = requests.Session()
        self.session.trust_env = False
        if pem is not None:
            self.session.cert = str(pem)

    def __call__(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.session.request(method, self.url + path, verify=self.verify, timeout=TIMEOUT, **kwargs)

    def close(self) -> None:
        self.session.close()


class Ledger:
    def __init__(self, url: str, directory: Path, work: Path) -> None:
        self.url = url
        self.directory = directory
        self.work = work
        self.service_cert = directory / "service_cert.pem"
        self.admin = Caller(url, self.service_cert, directory / "user0_combined.pem")
        cert = x509.load_pem_x509_certificate((directory / "user0_cert.pem").read_bytes())
        self.admin_id = acl_fingerprint(cert.public_bytes(Encoding.DER))
        self.callers: list[Caller] = [self.admin]
        self.identities: dict[str, tuple[Path, str]] = {}

    def identity(self, name: str) -> tuple[Path, str]:
        if name not in self.identities:
            self.identities[name] = new_identity(self.work, name)
        return self.identities[name]

    def session_of(self, identity: tuple[Path, str]) -> Caller:
        caller = Caller(self.url, self.service_cert, identity[0])
        self.callers.append(caller)
        return caller

    def user(self, name: str, roles: list[str]) -> tuple[Caller, str]:
        """A ledger user with exactly these roles (``/app/ledgerUsers``) and its session. PATCH
        adds roles (ACL's merge), so a user that exists is deleted first, then created again."""
        pem, user_id = self.identity(name)
        assert self.admin("DELETE", f"/app/ledgerUsers/{user_id}").status_code == 204
        r = self.admin("PATCH", f"/app/ledgerUsers/{user_id}", json={"assignedRoles": roles}, headers=MERGE_PATCH)
        assert r.status_code == 200, r.text
        assert r.json() == {"assignedRoles": sorted(roles), "userId": user_id}
        return self.session_of((pem, user_id)), user_id

    def custom_roles(self) -> dict[str, list[str]]:
        """The user-defined roles as ``GET /app/roles`` lists them (after the built-in ones)."""
        r = self.admin("GET", "/app/roles")
        assert r.status_code == 200, r.text
        listed = r.json()["roles"]
        assert [x["role_name"] for x in listed[: len(BUILTIN)]] == list(BUILTIN)
        return {x["role_name"]: x["role_actions"] for x in listed[len(BUILTIN) :]}

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

    def close(self) -> None:
        for c in self.callers:
            c.close()


@pytest.fixture(scope="module", autouse=True)
def no_system_ca() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        for name in CA_VARIABLES:
            mp.delenv(name, raising=False)
        yield


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    work = tmp_path_factory.mktemp("custom-roles")
    directory = work / "ledger"
    init_service(directory)
    with running(directory) as server:
        led = Ledger(server.url, directory, work)
        try:
            yield led
        finally:
            led.close()
        assert server.stop() == 0, "".join(server.output[-50:])


def assert_error(r: requests.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, f"{r.request.method} {r.url}: {r.status_code} {r.text[:300]}"
    assert r.headers["Content-Type"].startswith("application/json")
    error = r.json()["error"]
    assert error["code"] == code, error
    assert error["message"].strip(), error
    return dict(error)


def role(name: str, *actions: str) -> dict[str, Any]:
    """A role as notarium's earlier clients (and the SDK 2.x models) send it: camelCase."""
    return {"roleName": name, "roleActions": list(actions)}


def answer(*roles: tuple[str, list[str]]) -> dict[str, Any]:
    """An answer of /app/roles: ACL's envelope and field names."""
    return {"roles": [{"role_name": name, "role_actions": actions} for name, actions in roles]}


# --- the API ---------------------------------------------------------------------------------------


def test_create_read_update_delete_with_bare_arrays(ledger: Ledger) -> None:
    """SDK 1.2.0b1's form: bare arrays in; answers in ACL's envelope."""
    r = ledger.admin("PUT", "/app/roles", json=[role("bare-auditor", TX_READ, CHUNKS_READ)])
    assert r.status_code == 200, r.text
    assert r.json() == answer(("bare-auditor", [CHUNKS_READ, TX_READ]))  # actions sorted
    r = ledger.admin("GET", "/app/roles", params={"roleName": "bare-auditor"})
    assert r.status_code == 200, r.text
    assert r.json() == answer(("bare-auditor", [CHUNKS_READ, TX_READ]))
    r = ledger.admin("PATCH", "/app/roles", json=[role("bare-auditor", GOV_READ, TX_READ)])
    assert r.status_code == 200, r.text
    assert r.json() == answer(("bare-auditor", [CHUNKS_READ, GOV_READ, TX_READ]))
    assert ledger.custom_roles()["bare-auditor"] == [CHUNKS_READ, GOV_READ, TX_READ]
    r = ledger.admin("DELETE", "/app/roles", params={"roleName": "bare-auditor"})
    assert r.status_code == 200, r.text
    assert r.content == b""
    assert_error(ledger.admin("GET", "/app/roles", params={"roleName": "bare-auditor"}), 404, "ResourceNotFound")
    assert "bare-auditor" not in ledger.custom_roles()
    assert_error(ledger.admin("DELETE", "/app/roles", params={"roleName": "bare-auditor"}), 404, "ResourceNotFound")


def test_create_read_update_delete_with_roles_objects(ledger: Ledger) -> None:
    """SDK 2.0.0b*'s form: ``{"roles": [...]}``; several roles in one request, one transaction."""
    before = ledger.quiet_committed()
    body = {"roles": [role("obj-writer", TX_WRITE), role("obj-reader", TX_READ, GOV_READ)]}
    r = ledger.admin("PUT", "/app/roles", json=body, params={"api-version": "2024-12-09-preview"})
    assert r.status_code == 200, r.text
    after = ledger.quiet_committed()
    assert int(after.split(".")[1]) - int(before.split(".")[1]) <= 2, (before, after)  # one write + its signature
    roles = ledger.custom_roles()
    assert roles["obj-writer"] == [TX_WRITE]
    assert roles["obj-reader"] == [GOV_READ, TX_READ]
    r = ledger.admin("PATCH", "/app/roles", json={"roles": [role("obj-writer", TX_READ)]})
    assert r.status_code == 200, r.text
    assert ledger.custom_roles()["obj-writer"] == [TX_READ, TX_WRITE]
    for name in ("obj-writer", "obj-reader"):
        assert ledger.admin("DELETE", "/app/roles", params={"roleName": name}).status_code == 200
    assert not {"obj-writer", "obj-reader"} & set(ledger.custom_roles())


def test_put_replaces_and_patch_adds(ledger: Ledger) -> None:
    assert ledger.admin("PUT", "/app/roles", json=[role("shifting", TX_READ, GOV_READ)]).status_code == 200
    assert ledger.admin("PUT", "/app/roles", json=[role("shifting", USERS_READ)]).status_code == 200
    assert ledger.custom_roles()["shifting"] == [USERS_READ]  # replaced, not merged
    assert ledger.admin("PATCH", "/app/roles", json=[role("shifting", TX_READ, TX_READ)]).status_code == 200
    assert ledger.custom_roles()["shifting"] == [TX_READ, USERS_READ]  # added; duplicates collapse
    # an unchanged role is answered without a write
    before = ledger.quiet_committed()
    r = ledger.admin("PATCH", "/app/roles", json=[role("shifting", TX_READ)])
    assert r.status_code == 200, r.text
    assert r.json() == answer(("shifting", [TX_READ, USERS_READ]))
    assert ledger.quiet_committed() == before
    assert ledger.admin("DELETE", "/app/roles", params={"roleName": "shifting"}).status_code == 200


def test_every_role_is_listed_built_in_first(ledger: Ledger) -> None:
    for name in ("zeta", "alpha"):
        assert ledger.admin("PUT", "/app/roles", json=[role(name, GOV_READ)]).status_code == 200
    r = ledger.admin("GET", "/app/roles")
    assert r.status_code == 200, r.text
    names = [x["role_name"] for x in r.json()["roles"]]
    assert names[:3] == list(BUILTIN)
    assert names[3:] == sorted(names[3:])
    assert {"alpha", "zeta"} <= set(names[3:])
    r = ledger.admin("GET", "/app/roles", params={"roleName": "Administrator"})
    assert r.json() == answer(("Administrator", EVERY_ACTION))
    r = ledger.admin("GET", "/app/roles", params={"roleName": "Reader"})
    assert r.json() == answer(("Reader", [GOV_READ, TX_READ]))
    for name in ("zeta", "alpha"):
        assert ledger.admin("DELETE", "/app/roles", params={"roleName": name}).status_code == 200


# --- refusals write nothing ----------------------------------------------------------------------

INVALID = {
    "an empty array": ([], 400, "InvalidInput"),
    "roles empty": ({"roles": []}, 400, "InvalidInput"),
    "an object without roles": ({"role": [role("x", TX_READ)]}, 400, "InvalidInput"),
    "a role that is a string": (["x"], 400, "InvalidInput"),
    "no roleName": ([{"roleActions": [TX_READ]}], 400, "InvalidInput"),
    "a bad name": ([role("no spaces", TX_READ)], 400, "InvalidInput"),
    "a name too long": ([role("n" * 65, TX_READ)], 400, "InvalidInput"),
    "a built-in name": ([role("Contributor", TX_READ)], 400, "InvalidInput"),
    "a built-in name in lower case": ([role("contributor", TX_READ)], 400, "InvalidInput"),
    "no actions": ([role("x")], 400, "InvalidInput"),
    "an unknown action": ([role("x", A + "transactions/delete")], 400, "InvalidInput"),
    "an unknown action among known ones": ([role("x", TX_READ, "Microsoft.Storage/read")], 400, "InvalidInput"),
    "a good role and a bad one": ([role("good-one", TX_READ), role("bad-one", "nope")], 400, "InvalidInput"),
    "a name twice": ([role("twice", TX_READ), role("twice", GOV_READ)], 400, "InvalidInput"),
}


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_requests_write_nothing(ledger: Ledger, method: str, case: str) -> None:
    assert ledger.admin("PUT", "/app/roles", json=[role("existing", GOV_READ)]).status_code == 200
    body, status, code = INVALID[case]
    roles, committed = ledger.custom_roles(), ledger.quiet_committed()
    error = assert_error(ledger.admin(method, "/app/roles", json=body), status, code)
    if case.endswith("unknown action"):
        assert "transactions/delete" in error["message"]
    assert ledger.custom_roles() == roles
    assert ledger.quiet_committed() == committed


def test_patching_a_role_that_does_not_exist_writes_nothing(ledger: Ledger) -> None:
    assert ledger.admin("PUT", "/app/roles", json=[role("existing", GOV_READ)]).status_code == 200
    roles, committed = ledger.custom_roles(), ledger.quiet_committed()
    body = [role("existing", TX_READ), role("never-created", TX_READ)]
    error = assert_error(ledger.admin("PATCH", "/app/roles", json=body), 404, "ResourceNotFound")
    assert "never-created" in error["message"]
    assert ledger.custom_roles() == roles  # "existing" did not get TX_READ either
    assert ledger.quiet_committed() == committed


def test_built_in_roles_cannot_be_changed_or_deleted(ledger: Ledger) -> None:
    roles, committed = ledger.custom_roles(), ledger.quiet_committed()
    for name in BUILTIN:
        assert_error(ledger.admin("PATCH", "/app/roles", json=[role(name, USERS_WRITE)]), 400, "InvalidInput")
        error = assert_error(ledger.admin("DELETE", "/app/roles", params={"roleName": name}), 400, "InvalidInput")
        assert "built-in" in error["message"]
    r = ledger.admin("GET", "/app/roles", params={"roleName": "Reader"})
    assert r.json() == answer(("Reader", [GOV_READ, TX_READ]))
    assert ledger.custom_roles() == roles
    assert ledger.quiet_committed() == committed


def test_only_holders_of_roles_write_manage_roles(ledger: Ledger) -> None:
    """A Contributor, and a user-defined role that may read roles but not write them, are refused."""
    contributor, _ = ledger.user("roles-contributor", ["Contributor"])
    assert ledger.admin("PUT", "/app/roles", json=[role("role-reader", A + "roles/read")]).status_code == 200
    viewer, _ = ledger.user("roles-viewer", ["role-reader"])
    assert viewer("GET", "/app/roles").status_code == 200
    roles, committed = ledger.custom_roles(), ledger.quiet_committed()
    for who in (contributor, viewer):
        assert_error(who("PUT", "/app/roles", json=[role("mine", USERS_WRITE)]), 403, "NotAllowed")
        assert_error(who("PATCH", "/app/roles", json=[role("role-reader", USERS_WRITE)]), 403, "NotAllowed")
        assert_error(who("DELETE", "/app/roles", params={"roleName": "role-reader"}), 403, "NotAllowed")
    assert_error(contributor("GET", "/app/roles"), 403, "NotAllowed")
    assert ledger.custom_roles() == roles
    assert ledger.quiet_committed() == committed


# --- roles in force --------------------------------------------------------------------------------


def test_a_change_applies_to_the_next_request(ledger: Ledger) -> None:
    assert ledger.admin("PUT", "/app/roles", json=[role("live", TX_READ)]).status_code == 200
    user, _ = ledger.user("live-user", ["live"])
    assert user("GET", "/app/transactions").status_code == 200
    assert_error(user("POST", "/app/transactions", json={"contents": "not yet"}), 403, "NotAllowed")
    assert ledger.admin("PATCH", "/app/roles", json={"roles": [role("live", TX_WRITE)]}).status_code == 200
    r = user("POST", "/app/transactions", json={"contents": "now allowed"})  # right after the 200
    assert r.status_code == 200, r.text
    assert ledger.admin("PUT", "/app/roles", json=[role("live", GOV_READ)]).status_code == 200
    assert_error(user("GET", "/app/transactions"), 403, "NotAllowed")
    assert_error(user("POST", "/app/transactions", json={"contents": "no more"}), 403, "NotAllowed")
    assert user("GET", "/app/governance/constitution").status_code == 200


def test_a_users_actions_are_the_union_of_its_roles(ledger: Ledger) -> None:
    roles = [role("union-write", TX_WRITE), role("union-users", USERS_READ)]
    assert ledger.admin("PUT", "/app/roles", json=roles).status_code == 200
    user, user_id = ledger.user("union-user", ["union-write", "Reader"])
    assert user("POST", "/app/transactions", json={"contents": "by a Reader with union-write"}).status_code == 200
    assert user("GET", "/app/governance/members").status_code == 200  # Reader's
    assert_error(user("GET", "/app/users"), 403, "NotAllowed")
    r = ledger.admin("GET", f"/app/users/{user_id}")
    assert r.json() == {"assignedRole": "Reader", "userId": user_id}  # the highest built-in role
    ledger.user("union-user", ["union-write", "union-users"])
    assert user("GET", "/app/users").status_code == 200
    assert_error(user("GET", "/app/governance/members"), 403, "NotAllowed")
    r = ledger.admin("GET", f"/app/users/{user_id}")
    assert r.json() == {"assignedRole": "union-users", "userId": user_id}  # no built-in role: the first by name
    r = ledger.admin("GET", f"/app/ledgerUsers/{user_id}")
    assert r.json() == {"assignedRoles": ["union-users", "union-write"], "userId": user_id}


def test_users_get_user_defined_roles_through_both_views(ledger: Ledger) -> None:
    assert ledger.admin("PUT", "/app/roles", json=[role("one-role", TX_READ)]).status_code == 200
    _, user_id = ledger.identity("one-role-user")
    r = ledger.admin("PATCH", f"/app/users/{user_id}", json={"assignedRole": "one-role"}, headers=MERGE_PATCH)
    assert r.status_code == 200, r.text
    assert r.json() == {"assignedRole": "one-role", "userId": user_id}
    r = ledger.admin("GET", f"/app/ledgerUsers/{user_id}")
    assert r.json() == {"assignedRoles": ["one-role"], "userId": user_id}
    listed = ledger.admin("GET", "/app/users").json()["ledgerUsers"]
    assert {"assignedRole": "one-role", "userId": user_id} in listed


@pytest.mark.parametrize(
    ("view", "body"),
    [
        ("users", {"assignedRole": "no-such-role"}),
        ("users", {"assignedRole": "reader"}),
        ("ledgerUsers", {"assignedRoles": ["Reader", "no-such-role"]}),
        ("ledgerUsers", {"assignedRoles": ["no-such-role"]}),
    ],
)
def test_unknown_role_names_are_refused(ledger: Ledger, view: str, body: dict[str, Any]) -> None:
    _, user_id = ledger.identity("never-a-user")
    committed = ledger.quiet_committed()
    error = assert_error(
        ledger.admin("PATCH", f"/app/{view}/{user_id}", json=body, headers=MERGE_PATCH), 400, "InvalidInput"
    )
    assert "unknown role" in error["message"]
    assert_error(ledger.admin("GET", f"/app/users/{user_id}"), 404, "UserNotFound")
    assert ledger.quiet_committed() == committed


def test_an_assigned_role_cannot_be_deleted(ledger: Ledger) -> None:
    assert ledger.admin("PUT", "/app/roles", json=[role("held", TX_READ)]).status_code == 200
    holder, holder_id = ledger.user("holder", ["held", "Reader"])
    committed = ledger.quiet_committed()
    error = assert_error(ledger.admin("DELETE", "/app/roles", params={"roleName": "held"}), 400, "InvalidInput")
    assert holder_id in error["message"]
    assert ledger.custom_roles()["held"] == [TX_READ]
    assert ledger.quiet_committed() == committed
    ledger.user("holder", ["Reader"])
    assert ledger.admin("DELETE", "/app/roles", params={"roleName": "held"}).status_code == 200
    assert "held" not in ledger.custom_roles()
    assert holder("GET", "/app/transactions").status_code == 200  # as a Reader


def test_assigning_and_deleting_a_role_at_once(ledger: Ledger) -> None:
    """Whichever comes first wins; never both: no user is left holding a role that is gone."""
    _, user_id = ledger.user("racer", ["Reader"])
    other_admin = ledger.session_of((ledger.directory / "user0_combined.pem", ledger.admin_id))
    with ThreadPoolExecutor(2) as pool:
        for n in range(8):
            name = f"race-{n}"
            assert ledger.admin("PUT", "/app/roles", json=[role(name, TX_READ)]).status_code == 200
            assign = pool.submit(
                ledger.admin,
                "PATCH",
                f"/app/ledgerUsers/{user_id}",
                json={"assignedRoles": ["Reader", name]},
                headers=MERGE_PATCH,
            )
            delete = pool.submit(other_admin, "DELETE", "/app/roles", params={"roleName": name})
            statuses = (assign.result().status_code, delete.result().status_code)
            assert statuses in ((200, 400), (400, 200)), statuses
            held = ledger.admin("GET", f"/app/ledgerUsers/{user_id}").json()["assignedRoles"]
            exists = name in ledger.custom_roles()
            assert (name in held) == exists == (statuses == (200, 400)), (statuses, held, exists)
            ledger.user("racer", ["Reader"])
            if exists:
                assert ledger.admin("DELETE", "/app/roles", params={"roleName": name}).status_code == 200


def test_a_role_with_every_action_is_not_an_administrator(ledger: Ledger) -> None:
    """The ledger keeps a built-in Administrator: a user-defined role holding every action does not count."""
    assert ledger.admin("PUT", "/app/roles", json=[role("almighty", *EVERY_ACTION)]).status_code == 200
    almighty, _ = ledger.user("almighty-user", ["almighty"])
    assert almighty("GET", "/app/ledger/chunks").status_code == 200
    assert almighty("GET", "/app/users").status_code == 200
    committed = ledger.quiet_committed()
    for who in (ledger.admin, almighty):
        for method, view, body in (
            ("PATCH", "users", {"assignedRole": "almighty"}),
            ("DELETE", "users", None),
            ("DELETE", "ledgerUsers", None),
        ):
            kwargs: dict[str, Any] = {} if body is None else {"json": body, "headers": MERGE_PATCH}
            error = assert_error(who(method, f"/app/{view}/{ledger.admin_id}", **kwargs), 400, "InvalidInput")
            assert "Administrator" in error["message"]
    r = ledger.admin("GET", f"/app/ledgerUsers/{ledger.admin_id}")
    assert r.json()["assignedRoles"] == ["Administrator"]
    assert ledger.quiet_committed() == committed
    ledger.user("almighty-user", ["Reader"])
    assert_error(almighty("GET", "/app/users"), 403, "NotAllowed")


# --- restart -----------------------------------------------------------------------------------------


def test_roles_survive_a_restart(tmp_path: Path) -> None:
    directory = tmp_path / "ledger"
    init_service(directory)
    with running(directory) as server:
        led = Ledger(server.url, directory, tmp_path)
        try:
            body = [role("kept", TX_READ, CHUNKS_READ), role("dropped", GOV_READ), role("grown", TX_READ)]
            assert led.admin("PUT", "/app/roles", json=body).status_code == 200
            assert led.admin("PATCH", "/app/roles", json=[role("grown", TX_WRITE)]).status_code == 200
            assert led.admin("DELETE", "/app/roles", params={"roleName": "dropped"}).status_code == 200
            led.user("keeper", ["kept"])
            led.user("grower", ["grown"])
            roles = led.custom_roles()
            assert roles == {"grown": [TX_READ, TX_WRITE], "kept": [CHUNKS_READ, TX_READ]}
        finally:
            led.close()
        assert server.stop() == 0, "".join(server.output[-50:])
    with running(directory) as server:
        again = Ledger(server.url, directory, tmp_path)
        try:
            assert again.custom_roles() == roles
            keeper, grower = (again.session_of(led.identities[name]) for name in ("keeper", "grower"))
            for name, user_roles in (("keeper", ["kept"]), ("grower", ["grown"])):
                user_id = led.identities[name][1]
                r = again.admin("GET", f"/app/ledgerUsers/{user_id}")
                assert r.json() == {"assignedRoles": user_roles, "userId": user_id}
            assert keeper("GET", "/app/ledger/chunks").status_code == 200
            assert_error(keeper("GET", "/app/governance/constitution"), 403, "NotAllowed")
            assert grower("POST", "/app/transactions", json={"contents": "after the restart"}).status_code == 200
            assert_error(again.admin("DELETE", "/app/roles", params={"roleName": "kept"}), 400, "InvalidInput")
        finally:
            again.close()
        assert server.stop() == 0, "".join(server.output[-50:])
