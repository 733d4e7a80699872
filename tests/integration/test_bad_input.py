"""Bad input, for every endpoint, gets a clear 4xx in ACL's error format and changes nothing.

One real ``notarium serve --max-entry-bytes 8192`` (ACL's own limit) holds a few entries in two
collections and four users (Administrator, Contributor, Reader, and a Reader to update). Every
test runs between two snapshots of the ledger, taken by the autouse ``unchanged`` fixture: the
last sequenced seqno (from /metrics: committed + commit lag, so even an uncommitted write
shows), the committed transaction id (``x-ms-ccf-transaction-id``), the current entry, the
entries of both collections, the collections and the users. Only the one test that asks for
``allow_writes`` (the limits' accepted side) may change them.

Error answers are checked for: the status, ``{"error": {"code", "message"}}`` with ACL's code and
a non-empty message, ``application/json``, and the transaction-id header. The last test checks
that the server is still healthy, never answered 500, stops cleanly, and ``notarium audit``
passes on its directory.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.serialization import Encoding
from prometheus_client.parser import text_string_to_metric_families

from integration.server import Server, clean_env, new_identity, running
from notarium.auth.identity import acl_fingerprint
from notarium.ledger import init_service
from notarium.ledger.identity import load_cert
from notarium.server.config import ServerConfig

# every test of this module shares one server, and the last one stops it: keep them on one worker
# (with `--dist loadgroup`; pytest 9 and pytest-xdist 3.8 ignore the mark, hence the fixture's own
# final check)
pytestmark = pytest.mark.xdist_group("bad_input")

MAX_ENTRY = 8192
# `notarium serve` accepts request bodies up to max(8 MiB, 8 x --max-entry-bytes) (cli/serve.py)
MAX_BODY = max(ServerConfig().max_body_bytes, 8 * MAX_ENTRY)
TXID = re.compile(r"^\d+\.\d+$")
OTHER = "other-collection"
NEW_USER = "0F" * 32  # well-formed, never registered
JSON = {"Content-Type": "application/json"}
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}
USERS_WRITE = "Microsoft.ConfidentialLedger/ledger/users/write"


# --------------------------------------------------------------------------- the server


@dataclass
class Ledger:
    server: Server
    admin: requests.Session
    contributor: requests.Session
    reader: requests.Session
    stranger: requests.Session  # a certificate that is not a user
    anonymous: requests.Session  # no certificate
    ids: dict[str, str] = field(default_factory=dict)
    entries: list[str] = field(default_factory=list)  # txids of the entries written at setup
    stopped: bool = False

    @property
    def url(self) -> str:
        return self.server.url


def session(server: Server, cert: Path | None) -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # REQUESTS_CA_BUNDLE would otherwise replace the pinned service certificate
    s.verify = str(server.service_cert)
    s.cert = str(cert) if cert is not None else None
    return s


def wait_committed(s: requests.Session, url: str, txid: str) -> None:
    deadline = time.monotonic() + 30
    while s.get(f"{url}/app/transactions/{txid}/status").json()["state"] != "Committed":
        assert time.monotonic() < deadline, f"{txid} never committed"
        time.sleep(0.01)


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    base = tmp_path_factory.mktemp("bad-input")
    directory = base / "ledger"
    init_service(directory)
    with running(directory, "--max-entry-bytes", str(MAX_ENTRY)) as server:
        admin = session(server, server.admin_pem)
        ids = {"admin": acl_fingerprint(load_cert(directory / "user0_cert.pem").public_bytes(Encoding.DER))}
        users: dict[str, requests.Session] = {}
        for name, role in (("contributor", "Contributor"), ("reader", "Reader"), ("reader2", "Reader")):
            pem, ids[name] = new_identity(base, name)
            r = admin.patch(f"{server.url}/app/users/{ids[name]}", json={"assignedRole": role}, headers=MERGE_PATCH)
            assert r.status_code == 200, r.text
            users[name] = session(server, pem)
        stranger, _ = new_identity(base, "stranger")
        ctx = Ledger(
            server,
            admin,
            users["contributor"],
            users["reader"],
            session(server, stranger),
            session(server, None),
            ids,
        )
        for n, collection in enumerate(["subledger:0", OTHER, "subledger:0", OTHER]):
            r = ctx.contributor.post(
                f"{server.url}/app/transactions",
                params={"collectionId": collection, "tags": "t"},
                json={"contents": f"entry {n}"},
            )
            assert r.status_code == 200, r.text
            ctx.entries.append(r.headers["x-ms-ccf-transaction-id"])
        wait_committed(admin, server.url, ctx.entries[-1])
        try:
            yield ctx
            survived_stop_and_audit(ctx)
        finally:
            for s in (admin, *users.values(), ctx.stranger, ctx.anonymous):
                s.close()


def metric_values(ledger: Ledger) -> dict[str, float]:
    text = ledger.anonymous.get(f"{ledger.url}/metrics").text
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.labels:
                values[sample.name] = sample.value
    return values


def snapshot(ledger: Ledger) -> dict[str, Any]:
    """Everything a write of any kind would change. Waits until no signature is pending."""
    deadline = time.monotonic() + 30
    while True:
        m = metric_values(ledger)
        if m["notarium_commit_lag_transactions"] == 0:
            break
        assert time.monotonic() < deadline, "the ledger never caught up"
        time.sleep(0.01)
    s, url = ledger.admin, ledger.url
    current = s.get(f"{url}/app/transactions/current")
    return {
        "sequenced": m["notarium_committed_seqno"] + m["notarium_commit_lag_transactions"],
        "committed": current.headers["x-ms-ccf-transaction-id"],
        "current": current.json(),
        "entries": s.get(f"{url}/app/transactions").json(),
        "other": s.get(f"{url}/app/transactions", params={"collectionId": OTHER}).json(),
        "collections": s.get(f"{url}/app/collections").json(),
        "users": s.get(f"{url}/app/ledgerUsers").json(),
        "roles": s.get(f"{url}/app/roles").json(),
    }


@pytest.fixture(autouse=True)
def unchanged(request: pytest.FixtureRequest, ledger: Ledger) -> Iterator[None]:
    """Fail any test (but those asking for ``allow_writes``) after which the ledger differs."""
    before = snapshot(ledger)
    yield
    if "allow_writes" not in request.fixturenames:
        after = snapshot(ledger)
        assert after == before, "bad input changed the ledger"


@pytest.fixture
def allow_writes() -> None:
    """Marks a test that writes on purpose."""


def assert_error(response: requests.Response, status: int, code: str) -> None:
    assert response.status_code == status, f"{response.request.method} {response.url}: {response.text[:300]}"
    assert response.headers["content-type"].startswith("application/json"), response.headers
    assert TXID.match(response.headers["x-ms-ccf-transaction-id"])
    assert "Retry-After" not in response.headers  # a 4xx must not invite retries
    body = response.json()
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"].strip(), body


# Every endpoint the server registers, as (method, path, body or None).
UNSUPPORTED = [
    ("GET", "/app/userDefinedEndpoints", None),
    ("PUT", "/app/userDefinedEndpoints", {"metadata": {"endpoints": {}}, "modules": []}),
    ("GET", "/app/userDefinedEndpoints/runtimeOptions", None),
    ("PATCH", "/app/userDefinedEndpoints/runtimeOptions", {"max_heap_bytes": 1024}),
    ("GET", "/app/userDefinedEndpoints/modules?module_name=m", None),
    ("GET", "/app/userDefinedFunctions", None),
    ("GET", "/app/userDefinedFunctions/f1", None),
    ("PUT", "/app/userDefinedFunctions/f1", {"code": "export function main() { return 1; }"}),
    ("DELETE", "/app/userDefinedFunctions/f1", None),
    ("POST", "/app/userDefinedFunctions/f1:execute", {"arguments": ["a"], "exportedFunctionName": "main"}),
]
AUTHENTICATED = [
    ("POST", "/app/transactions", {"contents": "x"}),
    ("GET", "/app/transactions", None),
    ("GET", "/app/transactions/current", None),
    ("GET", "/app/transactions/2.1", None),
    ("GET", "/app/transactions/2.1/status", None),
    ("GET", "/app/transactions/2.1/receipt", None),
    ("GET", "/app/transactions/2.1/receipt/cose", None),
    ("GET", "/app/collections", None),
    ("GET", "/app/users", None),
    ("GET", f"/app/users/{NEW_USER}", None),
    ("PATCH", f"/app/users/{NEW_USER}", {"assignedRole": "Reader"}),
    ("DELETE", f"/app/users/{NEW_USER}", None),
    ("GET", "/app/ledgerUsers", None),
    ("GET", f"/app/ledgerUsers/{NEW_USER}", None),
    ("PATCH", f"/app/ledgerUsers/{NEW_USER}", {"assignedRoles": ["Reader"]}),
    ("DELETE", f"/app/ledgerUsers/{NEW_USER}", None),
    ("GET", "/app/governance/constitution", None),
    ("GET", "/app/governance/members", None),
    ("GET", "/app/enclaveQuotes", None),
    ("GET", "/app/ping", None),
    ("GET", "/app/signedRoot", None),
    ("GET", "/app/consistency?fromTransactionId=2.1", None),
    ("GET", "/app/ledger/chunks", None),
    ("GET", "/app/ledger/chunks/ledger_1-2.committed", None),
    ("GET", "/app/roles?roleName=never-defined", None),
    ("GET", "/app/roles", None),
    ("PUT", "/app/roles", [{"roleName": "r", "roleActions": ["Microsoft.ConfidentialLedger/ledger/users/read"]}]),
    (
        "PATCH",
        "/app/roles",
        {"roles": [{"roleName": "r", "roleActions": ["Microsoft.ConfidentialLedger/ledger/users/read"]}]},
    ),
    ("DELETE", "/app/roles?roleName=r", None),
    *UNSUPPORTED,
]
PUBLIC = [
    ("GET", "/ledgerIdentity/any-ledger", None),
    ("GET", "/healthz", None),
    ("GET", "/readyz", None),
    ("GET", "/metrics", None),
    ("GET", "/openapi.json", None),
]
ENDPOINTS = AUTHENTICATED + PUBLIC


def ident(endpoint: tuple[str, str, Any]) -> str:
    return f"{endpoint[0]} {endpoint[1]}"


def call(s: requests.Session, url: str, method: str, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
    if body is not None:
        kwargs.setdefault("data", json.dumps(body).encode())
        headers = MERGE_PATCH if method == "PATCH" and "sers/" in path else JSON
        kwargs["headers"] = {**headers, **kwargs.get("headers", {})}
    return s.request(method, url + path, timeout=60, **kwargs)


# --------------------------------------------------------------------------- malformed bodies

BODY_ENDPOINTS = [
    ("POST", "/app/transactions"),
    ("PATCH", f"/app/users/{NEW_USER}"),
    ("PATCH", f"/app/ledgerUsers/{NEW_USER}"),
    ("PATCH", "/app/users/{reader2}"),  # an existing user: a bad update must not touch it
    ("PATCH", "/app/ledgerUsers/{reader2}"),
    ("PUT", "/app/roles"),
    ("PATCH", "/app/roles"),
]
MALFORMED = {
    "empty": b"",
    "truncated": b'{"contents": "x"',
    "not json": b"{not json}",
    "trailing garbage": b'{"contents": "x"} x',
    "single quotes": b"{'contents': 'x'}",
    "nul byte": b"\x00",
    "invalid utf-8": b'{"contents": "\xff\xfe"}',
    "deeply nested": b"[" * 100_000 + b"]" * 100_000,
    "array": b'[{"contents": "x"}]',
    "string": b'"Contributor"',
    "number": b"5",
    "null": b"null",
    "true": b"true",
}


@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS, ids=lambda e: f"{e[0]} {e[1]}")
@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_body(ledger: Ledger, endpoint: tuple[str, str], name: str) -> None:
    method, path = endpoint[0], endpoint[1].format(**ledger.ids)
    for headers in (JSON, MERGE_PATCH, {"Content-Type": "text/plain"}, {}):
        r = ledger.admin.request(method, ledger.url + path, data=MALFORMED[name], headers=headers)
        assert_error(r, 400, "InvalidInput")


ENTRY_BODIES = {
    "contents a number": {"contents": 5},
    "contents null": {"contents": None},
    "contents an array": {"contents": ["x"]},
    "contents an object": {"contents": {"text": "x"}},
    "contents a boolean": {"contents": True},
    "contents a float": {"contents": 1.5},
    "contents missing": {},
    "contents misspelt": {"content": "x"},
    "contents capitalised": {"Contents": "x"},
    "only read-only fields": {"collectionId": "subledger:0", "transactionId": "2.1"},
    "contents a lone surrogate": None,  # sent raw below: JSON can say \ud800, UTF-8 cannot
    "hooks with contents missing": {"preHooks": [{"functionId": "f"}]},
}


@pytest.mark.parametrize("name", list(ENTRY_BODIES))
def test_entry_with_wrong_types_or_missing_fields(ledger: Ledger, name: str) -> None:
    body = ENTRY_BODIES[name]
    data = b'{"contents": "\\ud800"}' if body is None else json.dumps(body).encode()
    r = ledger.admin.post(f"{ledger.url}/app/transactions", data=data, headers=JSON)
    assert_error(r, 400, "InvalidInput")


USER_BODIES = {
    "role lower-case": {"assignedRole": "reader"},
    "role unknown": {"assignedRole": "Owner"},
    "role empty": {"assignedRole": ""},
    "role a list": {"assignedRole": ["Reader"]},
    "role a number": {"assignedRole": 1},
    "role null": {"assignedRole": None},
    "role an object": {"assignedRole": {"name": "Reader"}},
}
LEDGER_USER_BODIES = {
    "roles a string": {"assignedRoles": "Reader"},
    "roles empty": {"assignedRoles": []},
    "roles unknown": {"assignedRoles": ["Owner"]},
    "roles one unknown": {"assignedRoles": ["Reader", "Owner"]},
    "roles numbers": {"assignedRoles": [1]},
    "roles nested": {"assignedRoles": [["Reader"]]},
    "roles null": {"assignedRoles": None},
    "roles an object": {"assignedRoles": {"Reader": True}},
}


@pytest.mark.parametrize("user", [NEW_USER, "{reader2}"], ids=["new user", "existing user"])
@pytest.mark.parametrize("name", list(USER_BODIES))
def test_user_with_bad_role(ledger: Ledger, user: str, name: str) -> None:
    url = f"{ledger.url}/app/users/{user.format(**ledger.ids)}"
    for headers in (MERGE_PATCH, JSON):
        assert_error(ledger.admin.patch(url, json=USER_BODIES[name], headers=headers), 400, "InvalidInput")


@pytest.mark.parametrize("user", [NEW_USER, "{reader2}"], ids=["new user", "existing user"])
@pytest.mark.parametrize("name", list(LEDGER_USER_BODIES))
def test_ledger_user_with_bad_roles(ledger: Ledger, user: str, name: str) -> None:
    url = f"{ledger.url}/app/ledgerUsers/{user.format(**ledger.ids)}"
    for headers in (MERGE_PATCH, JSON):
        assert_error(ledger.admin.patch(url, json=LEDGER_USER_BODIES[name], headers=headers), 400, "InvalidInput")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/app/users", {}),
        ("/app/users", {"assignedRoles": ["Reader"]}),  # the other view's field
        ("/app/users", {"userId": NEW_USER}),
        ("/app/ledgerUsers", {}),
        ("/app/ledgerUsers", {"assignedRole": "Reader"}),
    ],
)
def test_creating_a_user_needs_its_role(ledger: Ledger, path: str, body: dict[str, Any]) -> None:
    r = ledger.admin.patch(f"{ledger.url}{path}/{NEW_USER}", json=body, headers=MERGE_PATCH)
    assert_error(r, 400, "InvalidInput")


ROLE_BODIES = {
    "empty array": [],
    "roles empty": {"roles": []},
    "roles missing": {},
    "roles a string": {"roles": "auditor"},
    "role a string": ["auditor"],
    "name missing": [{"roleActions": [USERS_WRITE]}],
    "name empty": [{"roleName": "", "roleActions": [USERS_WRITE]}],
    "name a number": [{"roleName": 5, "roleActions": [USERS_WRITE]}],
    "name too long": [{"roleName": "a" * 65, "roleActions": [USERS_WRITE]}],
    "name with a space": [{"roleName": "an auditor", "roleActions": [USERS_WRITE]}],
    "name non-ascii": [{"roleName": "prüfer", "roleActions": [USERS_WRITE]}],
    "name built-in": [{"roleName": "Reader", "roleActions": [USERS_WRITE]}],
    "name built-in, other case": [{"roleName": "administrator", "roleActions": [USERS_WRITE]}],
    "actions missing": [{"roleName": "auditor"}],
    "actions empty": [{"roleName": "auditor", "roleActions": []}],
    "actions a string": [{"roleName": "auditor", "roleActions": USERS_WRITE}],
    "action unknown": [{"roleName": "auditor", "roleActions": ["Microsoft.ConfidentialLedger/ledger/everything"]}],
    "action other case": [{"roleName": "auditor", "roleActions": [USERS_WRITE.lower()]}],
    "action a number": [{"roleName": "auditor", "roleActions": [1]}],
    "one good, one bad": [
        {"roleName": "good", "roleActions": [USERS_WRITE]},
        {"roleName": "bad", "roleActions": ["nope"]},
    ],
    "a name twice": [
        {"roleName": "twice", "roleActions": [USERS_WRITE]},
        {"roleName": "twice", "roleActions": [USERS_WRITE]},
    ],
}


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
@pytest.mark.parametrize("name", list(ROLE_BODIES))
def test_bad_roles(ledger: Ledger, method: str, name: str) -> None:
    assert_error(call(ledger.admin, ledger.url, method, "/app/roles", ROLE_BODIES[name]), 400, "InvalidInput")


@pytest.mark.parametrize("role_name", ["", "a b", "x" * 65, "prüfer", "reader", "1st"])
def test_bad_role_name_in_query(ledger: Ledger, role_name: str) -> None:
    for method in ("GET", "DELETE"):
        r = ledger.admin.request(method, f"{ledger.url}/app/roles", params={"roleName": role_name})
        assert_error(r, 400, "InvalidQueryParameterValue")


def test_role_changes_that_cannot_apply(ledger: Ledger) -> None:
    """Deleting without a name or a built-in role, deleting or patching a role that does not exist."""
    assert_error(ledger.admin.delete(f"{ledger.url}/app/roles"), 400, "InvalidQueryParameterValue")
    for builtin in ("Administrator", "Contributor", "Reader"):
        assert_error(ledger.admin.delete(f"{ledger.url}/app/roles", params={"roleName": builtin}), 400, "InvalidInput")
    assert_error(ledger.admin.delete(f"{ledger.url}/app/roles", params={"roleName": "nobody"}), 404, "ResourceNotFound")
    assert_error(ledger.admin.get(f"{ledger.url}/app/roles", params={"roleName": "nobody"}), 404, "ResourceNotFound")
    body = [{"roleName": "nobody", "roleActions": [USERS_WRITE]}]
    assert_error(call(ledger.admin, ledger.url, "PATCH", "/app/roles", body), 404, "ResourceNotFound")


# --------------------------------------------------------------------------- limits

OVERSIZED = {
    "ascii, 8193 bytes": "a" * (MAX_ENTRY + 1),
    "2-byte UTF-8, 4097 characters = 8194 bytes": "é" * (MAX_ENTRY // 2 + 1),
    "3-byte UTF-8, 2731 characters = 8193 bytes": "€" * 2731,
    "4-byte UTF-8, 2049 characters = 8196 bytes": "😀" * 2049,
    "escaped in JSON, 8193 bytes": "\n" * (MAX_ENTRY + 1),
}


@pytest.mark.parametrize("name", list(OVERSIZED))
def test_oversized_contents(ledger: Ledger, name: str) -> None:
    contents = OVERSIZED[name]
    size = len(contents.encode())
    assert size > MAX_ENTRY
    assert len(contents) <= MAX_ENTRY + 1  # over the limit in bytes, not (all) in characters
    for collection in ("subledger:0", "a-new-collection"):
        r = ledger.contributor.post(
            f"{ledger.url}/app/transactions", params={"collectionId": collection}, json={"contents": contents}
        )
        assert_error(r, 400, "EntrySizeCapacityExceeded")
        assert f"{size} bytes" in r.json()["error"]["message"]
        assert str(MAX_ENTRY) in r.json()["error"]["message"]


LONG_COLLECTIONS = {"257 ascii bytes": "c" * 257, "129 characters = 258 bytes": "é" * 129}


@pytest.mark.parametrize("name", list(LONG_COLLECTIONS))
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/app/transactions"),
        ("GET", "/app/transactions"),
        ("GET", "/app/transactions/current"),
        ("GET", "/app/transactions/{entry}"),
    ],
)
def test_collection_id_too_long(ledger: Ledger, name: str, method: str, path: str) -> None:
    url = ledger.url + path.format(entry=ledger.entries[0])
    collection = LONG_COLLECTIONS[name]
    body = {"contents": "x"} if method == "POST" else None
    r = ledger.contributor.request(method, url, params={"collectionId": collection}, json=body)
    assert_error(r, 400, "CollectionIdTooLong")
    r = ledger.contributor.request(method, url, params={"collectionId": ""}, json=body)
    assert_error(r, 400, "InvalidInput")


@pytest.mark.parametrize("tags", ["", ",", "a,,b", "a,", "x" * 257])
def test_bad_tags(ledger: Ledger, tags: str) -> None:
    r = ledger.contributor.post(f"{ledger.url}/app/transactions", params={"tags": tags}, json={"contents": "x"})
    assert_error(r, 400, "InvalidInput")


def test_limits_are_inclusive(ledger: Ledger, allow_writes: None) -> None:
    """The accepted side of both limits: 8192 bytes of contents, 256 bytes of collection id (multi-byte)."""
    contents = "é" * (MAX_ENTRY // 2)
    collection = "é" * 128
    r = ledger.contributor.post(
        f"{ledger.url}/app/transactions", params={"collectionId": collection}, json={"contents": contents}
    )
    assert r.status_code == 200, r.text
    wait_committed(ledger.admin, ledger.url, r.headers["x-ms-ccf-transaction-id"])
    r = ledger.reader.get(f"{ledger.url}/app/transactions/current", params={"collectionId": collection})
    assert r.json()["contents"] == contents


def test_oversized_request_body(ledger: Ledger) -> None:
    """Bodies over the server's limit are 413 RequestTooLarge, whatever they hold."""
    padding = b"a" * (MAX_BODY + 1 - len(b'{"contents": ""}'))
    body = b'{"contents": "' + padding + b'"}'
    assert len(body) == MAX_BODY + 1
    assert_error(
        ledger.contributor.post(f"{ledger.url}/app/transactions", data=body, headers=JSON), 413, "RequestTooLarge"
    )
    for path in (f"/app/users/{NEW_USER}", f"/app/ledgerUsers/{NEW_USER}"):
        r = ledger.admin.patch(ledger.url + path, data=b" " * (MAX_BODY + 1), headers=MERGE_PATCH)
        assert_error(r, 413, "RequestTooLarge")


# --------------------------------------------------------------------------- ids in paths and queries

BAD_TXIDS = [
    "abc",
    "1",
    "1.2.3",
    "-1.5",
    "1.-5",
    "99.999",  # well-formed, never issued
    "0.0",
    "01.5",
    "1.05",
    "1.5x",
    "1,5",
    " 1.5",
    "1.99999999999999999999",  # seqno beyond 63 bits
    "2147483648.1",  # view beyond 31 bits
    "1.5%00",
]


BAD_CHUNK_NAMES = [
    "ledger_1",  # a chunk still being written is never served
    "ledger_1-2",
    "ledger_01-2.committed",
    "ledger_2-1.committed",
    "ledger_999999-1000000.committed",  # well-formed, no such chunk
    ".ledger_1-2.committed.partial",
    "notarium.json",
    "..%2Fnotarium.json",
    "%2e%2e%2fservice_cert.pem",
    "ledger_1-2.committed%00",
    "x" * 300,
]


@pytest.mark.parametrize("name", BAD_CHUNK_NAMES)
def test_bad_chunk_name(ledger: Ledger, name: str) -> None:
    for method in ("GET", "HEAD"):
        r = ledger.admin.request(method, f"{ledger.url}/app/ledger/chunks/{name}")
        assert r.status_code == 404, (method, name, r.status_code)
        if method == "GET":
            assert_error(r, 404, "ResourceNotFound")


def test_unsatisfiable_chunk_range(ledger: Ledger) -> None:
    chunk = ledger.admin.get(f"{ledger.url}/app/ledger/chunks").json()["chunks"][0]
    for bad in (f"bytes={chunk['size']}-", "bytes=-0", f"bytes={10**18}-{10**18 + 1}"):
        r = ledger.admin.get(f"{ledger.url}/app/ledger/chunks/{chunk['name']}", headers={"Range": bad})
        assert_error(r, 416, "InvalidRange")
        assert r.headers["Content-Range"] == f"bytes */{chunk['size']}"


@pytest.mark.parametrize("suffix", ["", "/status", "/receipt", "/receipt/cose"])
@pytest.mark.parametrize("txid", BAD_TXIDS)
def test_bad_transaction_id_in_path(ledger: Ledger, txid: str, suffix: str) -> None:
    r = ledger.reader.get(f"{ledger.url}/app/transactions/{txid}{suffix}")
    assert_error(r, 404, "InvalidTransactionId")


@pytest.mark.parametrize("txid", ["abc", "1", "1.2.3", "-1.5", "", "1.5.", "x.1", "1.99999999999999999999"])
@pytest.mark.parametrize("name", ["fromTransactionId", "toTransactionId"])
def test_bad_transaction_id_in_query(ledger: Ledger, name: str, txid: str) -> None:
    for collection in ("subledger:0", OTHER):
        r = ledger.reader.get(f"{ledger.url}/app/transactions", params={name: txid, "collectionId": collection})
        assert_error(r, 400, "InvalidQueryParameterValue")


@pytest.mark.parametrize("txid", ["abc", "1", "1.2.3", "-1.5", "", "1.5.", "x.1", "1.99999999999999999999"])
@pytest.mark.parametrize("name", ["fromTransactionId", "toTransactionId"])
def test_bad_transaction_id_for_consistency(ledger: Ledger, name: str, txid: str) -> None:
    signature = ledger.reader.get(f"{ledger.url}/app/signedRoot").json()["transactionId"]
    r = ledger.reader.get(f"{ledger.url}/app/consistency", params={"fromTransactionId": signature, name: txid})
    assert_error(r, 400, "InvalidQueryParameterValue")


def test_consistency_needs_committed_signature_transactions(ledger: Ledger) -> None:
    url, s = ledger.url, ledger.reader
    signature = s.get(f"{url}/app/signedRoot").json()["transactionId"]
    view, seqno = (int(x) for x in signature.split("."))
    assert_error(s.get(f"{url}/app/consistency"), 400, "InvalidQueryParameterValue")
    r = s.get(f"{url}/app/consistency", params={"toTransactionId": signature})  # no fromTransactionId
    assert_error(r, 400, "InvalidQueryParameterValue")
    entry = ledger.entries[0]  # committed, but not a signature transaction
    for params in ({"fromTransactionId": entry}, {"fromTransactionId": signature, "toTransactionId": entry}):
        r = s.get(f"{url}/app/consistency", params=params)
        assert_error(r, 400, "InvalidQueryParameterValue")
        assert "not a signature transaction" in r.json()["error"]["message"]
    for never in (f"{view}.{seqno + 10**6}", f"{view + 1}.{seqno}", f"{view}.0"):
        for params in ({"fromTransactionId": never}, {"fromTransactionId": signature, "toTransactionId": never}):
            assert_error(s.get(f"{url}/app/consistency", params=params), 404, "InvalidTransactionId")


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=ident)
def test_unknown_api_version(ledger: Ledger, endpoint: tuple[str, str, Any]) -> None:
    method, path, body = endpoint
    sep = "&" if "?" in path else "?"
    for version in ("1999-01-01", "", "2022-05-13x", "latest"):
        r = call(ledger.admin, ledger.url, method, f"{path}{sep}api-version={version}", body)
        assert_error(r, 400, "InvalidQueryParameterValue")
        if version:
            assert version in r.json()["error"]["message"]


# Any other id is a token user's (notarium.auth.identity, docs/design/trust-model.md "User ids"):
# "abc", 62 hex digits, a GUID without dashes, ACL's "0" * 36, hex and colons that are not a
# fingerprint ("AB:CD") are accepted (tests/integration/test_tokens.py, test_acl_sdk_suites.py).
BAD_USER_IDS = [
    "x" * 257,  # longer than a user id may be
    "%00",  # control characters
    "a%0Ab",
    "a%7Fb",
    "%C2%85",
    "%FF",  # not UTF-8
    "%ED%A0%80",  # a surrogate, encoded
]


@pytest.mark.parametrize("user_id", BAD_USER_IDS)
@pytest.mark.parametrize(
    ("method", "view", "body"),
    [
        ("GET", "users", None),
        ("PATCH", "users", {"assignedRole": "Reader"}),
        ("DELETE", "users", None),
        ("GET", "ledgerUsers", None),
        ("PATCH", "ledgerUsers", {"assignedRoles": ["Reader"]}),
        ("DELETE", "ledgerUsers", None),
    ],
)
def test_bad_user_id(ledger: Ledger, user_id: str, method: str, view: str, body: Any) -> None:
    r = call(ledger.admin, ledger.url, method, f"/app/{view}/{user_id}", body)
    assert_error(r, 400, "InvalidInput")


@pytest.mark.parametrize("view", ["users", "ledgerUsers"])
def test_unknown_user(ledger: Ledger, view: str) -> None:
    """Reading nobody is 404; deleting nobody is done already (ACL: 204), and writes nothing."""
    assert_error(ledger.admin.request("GET", f"{ledger.url}/app/{view}/{NEW_USER}"), 404, "UserNotFound")
    r = ledger.admin.request("DELETE", f"{ledger.url}/app/{view}/{NEW_USER}")
    assert r.status_code == 204, r.text
    assert r.content == b""


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("DELETE", "/app/users/{admin}", None),
        ("DELETE", "/app/ledgerUsers/{admin}", None),
        ("PATCH", "/app/users/{admin}", {"assignedRole": "Contributor"}),
        # (PATCH /app/ledgerUsers/{admin} adds roles: it cannot demote anyone)
    ],
)
def test_the_last_administrator_stays(ledger: Ledger, method: str, path: str, body: Any) -> None:
    r = call(ledger.admin, ledger.url, method, path.format(**ledger.ids), body)
    assert_error(r, 400, "InvalidInput")


# --------------------------------------------------------------------------- routes and methods

UNKNOWN_ROUTES = [
    ("GET", "/app/nope"),
    ("GET", "/app"),
    ("GET", "/"),
    ("GET", "/APP/transactions"),
    ("GET", "/app/transactions/"),
    ("GET", "/app/transactions/2.1/nope"),
    ("GET", "/app/transactions/2.1/receipt/cose/x"),
    ("GET", "/app/users/x/y"),
    ("POST", "/app/nope"),
    ("DELETE", "/app/collections/x"),
    ("GET", "/app/subLedgerIds"),  # 0.1-preview only: not served
    ("GET", "/ledgerIdentity"),
    ("GET", "/ledgerIdentity/"),
]


@pytest.mark.parametrize(("method", "path"), UNKNOWN_ROUTES)
def test_unknown_route(ledger: Ledger, method: str, path: str) -> None:
    assert_error(ledger.admin.request(method, ledger.url + path), 404, "ResourceNotFound")


WRONG_METHODS = [
    ("PUT", "/app/transactions"),
    ("DELETE", "/app/transactions"),
    ("PATCH", "/app/transactions"),
    ("POST", "/app/transactions/current"),
    ("DELETE", "/app/transactions/2.1"),
    ("PUT", "/app/transactions/2.1/status"),
    ("POST", "/app/transactions/2.1/receipt"),
    ("DELETE", "/app/transactions/2.1/receipt/cose"),
    ("POST", "/app/collections"),
    ("PUT", "/app/users"),
    ("POST", f"/app/users/{NEW_USER}"),
    ("PUT", f"/app/users/{NEW_USER}"),
    ("POST", "/app/ledgerUsers"),
    ("PUT", f"/app/ledgerUsers/{NEW_USER}"),
    ("POST", "/app/governance/constitution"),
    ("PUT", "/app/governance/members"),
    ("DELETE", "/app/enclaveQuotes"),
    ("POST", "/ledgerIdentity/any"),
    ("POST", "/healthz"),
    ("DELETE", "/readyz"),
    ("POST", "/metrics"),
    ("PUT", "/openapi.json"),
    ("POST", "/app/ping"),
    ("POST", "/app/signedRoot"),
    ("DELETE", "/app/consistency"),
    ("POST", "/app/ledger/chunks"),
    ("DELETE", "/app/ledger/chunks/ledger_1-2.committed"),
    ("PUT", "/app/ledger/chunks/ledger_1-2.committed"),
]


@pytest.mark.parametrize(("method", "path"), WRONG_METHODS)
def test_wrong_method(ledger: Ledger, method: str, path: str) -> None:
    r = ledger.admin.request(method, ledger.url + path, json={"contents": "x"})
    assert_error(r, 405, "MethodNotAllowed")


def test_405_names_the_allowed_methods(ledger: Ledger) -> None:
    """RFC 9110 §15.5.6: a 405 response MUST carry an Allow header listing the supported methods."""
    r = ledger.admin.put(f"{ledger.url}/app/transactions")
    assert r.status_code == 405
    assert {m.strip() for m in r.headers.get("Allow", "").split(",")} >= {"GET", "POST"}


# --------------------------------------------------------------------------- not supported: 501


@pytest.mark.parametrize("field_name", ["preHooks", "postHooks"])
def test_hooks_are_not_implemented(ledger: Ledger, field_name: str) -> None:
    hooks = [{"functionId": "f1", "properties": {"arguments": ["a"], "exportedFunctionName": "main"}}]
    r = ledger.contributor.post(f"{ledger.url}/app/transactions", json={"contents": "x", field_name: hooks})
    assert_error(r, 501, "NotImplemented")


@pytest.mark.parametrize("endpoint", UNSUPPORTED, ids=ident)
def test_user_defined_endpoints_functions_are_not_implemented(ledger: Ledger, endpoint: tuple[str, str, Any]) -> None:
    """An Administrator learns they are not supported; other users are refused as by ACL (Administrator only)."""
    method, path, body = endpoint
    assert_error(call(ledger.admin, ledger.url, method, path, body), 501, "NotImplemented")
    for s in (ledger.contributor, ledger.reader):
        assert_error(call(s, ledger.url, method, path, body), 403, "NotAllowed")
    assert_error(call(ledger.anonymous, ledger.url, method, path, body), 401, "InvalidAuthenticationInfo")


# --------------------------------------------------------------------------- who is calling


@pytest.mark.parametrize("endpoint", AUTHENTICATED, ids=ident)
def test_unauthenticated(ledger: Ledger, endpoint: tuple[str, str, Any]) -> None:
    method, path, body = endpoint
    for s in (ledger.anonymous, ledger.stranger):
        assert_error(call(s, ledger.url, method, path, body), 401, "InvalidAuthenticationInfo")


@pytest.mark.parametrize(
    ("who", "method", "path", "body"),
    [
        ("reader", "POST", "/app/transactions", {"contents": "x"}),
        ("reader", "GET", "/app/users", None),
        ("reader", "PATCH", f"/app/users/{NEW_USER}", {"assignedRole": "Reader"}),
        ("contributor", "GET", "/app/users", None),
        ("contributor", "GET", "/app/ledgerUsers", None),
        ("contributor", "GET", "/app/users/{admin}", None),
        ("contributor", "PATCH", "/app/users/{contributor}", {"assignedRole": "Administrator"}),
        ("contributor", "PATCH", "/app/ledgerUsers/{contributor}", {"assignedRoles": ["Administrator"]}),
        ("contributor", "DELETE", "/app/users/{admin}", None),
        ("contributor", "DELETE", "/app/ledgerUsers/{reader}", None),
        ("reader", "GET", "/app/ledger/chunks", None),  # the export needs --export-role (Administrator)
        ("contributor", "GET", "/app/ledger/chunks/ledger_1-2.committed", None),
        ("reader", "GET", "/app/roles", None),
        ("contributor", "GET", "/app/roles?roleName=Contributor", None),
        ("contributor", "PUT", "/app/roles", [{"roleName": "mine", "roleActions": [USERS_WRITE]}]),
        ("contributor", "PATCH", "/app/roles", [{"roleName": "mine", "roleActions": [USERS_WRITE]}]),
        ("reader", "DELETE", "/app/roles?roleName=mine", None),
    ],
)
def test_not_allowed(ledger: Ledger, who: str, method: str, path: str, body: Any) -> None:
    s = getattr(ledger, who)
    assert_error(call(s, ledger.url, method, path.format(**ledger.ids), body), 403, "NotAllowed")


# --------------------------------------------------------------------------- the HTTP layer


def tls_exchange(ledger: Ledger, request: bytes) -> bytes:
    """Send raw bytes over mutual TLS; return whatever comes back before the server closes or 5 s pass."""
    context = ssl.create_default_context(cafile=str(ledger.server.service_cert))
    context.load_cert_chain(str(ledger.server.admin_pem))
    host, port = ledger.url.removeprefix("https://").rsplit(":", 1)
    received = b""
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        try:
            tls.sendall(request)
            while chunk := tls.recv(65536):
                received += chunk
        except (TimeoutError, ConnectionError, ssl.SSLError):
            pass
    return received


def status_of(response: bytes) -> int:
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", response)
    assert match, response[:200]
    return int(match.group(1))


def test_oversized_header_line(ledger: Ledger) -> None:
    """Header and request lines over 8190 bytes are refused with a 4xx; the server lives on."""
    r = ledger.admin.get(f"{ledger.url}/app/ping", headers={"X-Big": "a" * 9000})
    assert 400 <= r.status_code < 500
    r = ledger.admin.get(f"{ledger.url}/app/ping?pad={'a' * 9000}")
    assert 400 <= r.status_code < 500
    # Much larger ones, raw: the server answers 400 and closes while bytes are still arriving, so the
    # client may see the 400 or only a reset (TCP discards the answer when unread data is pending)
    huge = b"GET /app/ping HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n"
    many = b"GET /app/ping HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % n for n in range(10_000)) + b"\r\n"
    for request in (huge, many):
        response = tls_exchange(ledger, request)
        assert not response or 400 <= status_of(response) < 500
        assert ledger.admin.get(f"{ledger.url}/app/ping").status_code == 200
    assert ledger.admin.get(f"{ledger.url}/healthz").status_code == 200


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET /app/ping HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET /app/ping HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"POST /app/transactions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET /app/ping HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"\x00\x01\x02\x03" * 100,
    ],
    ids=["garbage", "bad version", "negative length", "length and chunked", "header without colon", "binary"],
)
def test_malformed_http(ledger: Ledger, request_bytes: bytes) -> None:
    response = tls_exchange(ledger, request_bytes)
    if response:  # the server may also just close the connection
        assert 400 <= status_of(response) < 500
    assert ledger.admin.get(f"{ledger.url}/healthz").status_code == 200


def test_plain_http_and_abandoned_connections(ledger: Ledger) -> None:
    """No TLS, or a TLS handshake cut short: the connection is dropped and nothing else happens."""
    host, port = ledger.url.removeprefix("https://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        with contextlib.suppress(TimeoutError, ConnectionError):
            assert not raw.recv(65536).startswith(b"HTTP/1.1 200")
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        raw.sendall(b"\x16\x03\x01\x00\x05hello")  # a truncated ClientHello
    assert ledger.admin.get(f"{ledger.url}/healthz").status_code == 200


# --------------------------------------------------------------------------- afterwards


def survived_stop_and_audit(ledger: Ledger) -> None:
    """The server survived what it was sent without a 500, stops cleanly, and its ledger audits."""
    if ledger.stopped:
        return
    ledger.stopped = True
    assert ledger.anonymous.get(f"{ledger.url}/healthz").json() == {"status": "alive"}
    assert ledger.anonymous.get(f"{ledger.url}/readyz").json()["status"] == "ready"
    text = ledger.anonymous.get(f"{ledger.url}/metrics").text
    statuses = {
        sample.labels["status"]
        for family in text_string_to_metric_families(text)
        if family.name == "notarium_http_requests"
        for sample in family.samples
    }
    assert not {s for s in statuses if s.startswith("5") and s != "501"}, text
    output = "".join(ledger.server.output)
    # no exception went through notarium's code (aiohttp itself logs each malformed HTTP message
    # with a traceback at ERROR, made of its own frames only)
    assert "unexpected error serving" not in output, output[-5000:]
    assert not re.search(r'File "[^"]*/notarium/', output), output[-5000:]
    assert ledger.server.stop() == 0, output[-5000:]
    audit = subprocess.run(
        [sys.executable, "-m", "notarium", "audit", str(ledger.server.directory), "--json"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=120,
        check=False,
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr
    report = json.loads(audit.stdout)
    assert report["ok"] is True
    assert report["serviceCertPinned"] is True


def test_still_healthy_then_stops_cleanly_and_audits(ledger: Ledger, allow_writes: None) -> None:
    """Last in the module. (Should the tests be spread over several workers, each worker's server is
    checked the same way when its fixture is torn down.)"""
    survived_stop_and_audit(ledger)
