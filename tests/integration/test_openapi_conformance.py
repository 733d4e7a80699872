"""Where a thorough schemathesis run found the server and its OpenAPI document disagreeing, on a
real ``notarium serve`` (mutual TLS, the Administrator's certificate). Each test fails on the code
and document before the fix:

- Another method on a documented path is 405 ``MethodNotAllowed`` with an ``Allow`` header naming
  exactly the path's documented methods (HEAD beside GET). Before: any method on the user-defined
  endpoint and function paths was 501 (TRACE, POST, OPTIONS...); ``{id}:withdraw``, ``{id}:update``
  and ``{id}:ack`` advertised GET (``Allow: GET,HEAD,POST``), and a GET there reached the ``{id}``
  route; CONNECT on any path was 404.
- Transaction ids: the document's pattern accepts exactly the ids the server parses (the view fits
  in 31 bits, the seqno in 63). Before, it accepted up to 10 and 19 digits, which the server refused.
- ``Range`` and ``If-Range``: the server ignores a value it cannot use (RFC 9110 §14.2 and §13.1.5)
  and serves the whole file, as documented; the document's schemas no longer claim to forbid them.
- The ``issuer`` query parameter (a token user's issuer) is as long as an issuer may be, 2048
  characters, as the server takes it (the document said 256).
- ``PUT /app/jwtIssuers``: an issuer's keys come inline (``jwks``) or by URL (``jwksUri``), exactly
  one of them: the document's schema now says so, as the server always did.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec

import notarium.server
from integration.server import Server, running
from notarium.ledger import init_service

SPEC: dict[str, Any] = json.loads(Path(notarium.server.__file__).with_name("openapi.json").read_text())
DOCUMENTED = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# every method to try on every path: RFC 9110's, PATCH, and a WebDAV one the HTTP parser knows too
TRIED = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "PROPFIND")
FINGERPRINT = "5F:23:3D:26:E2:28:88:9C:06:E0:88:21:FA:C7:B2:9A:F8:81:30:6B:F9:15:41:F2:34:05:05:44:4C:AD:5A:B5"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("conformance") / "ledger"
    init_service(directory)
    with running(directory) as srv:
        yield srv
        assert srv.stop() == 0, "".join(srv.output[-50:])


@pytest.fixture(scope="module")
def session(server: Server) -> Iterator[requests.Session]:
    s = requests.Session()
    s.trust_env = False  # REQUESTS_CA_BUNDLE would otherwise override the pinned service certificate
    s.verify = str(server.service_cert)
    s.cert = str(server.admin_pem)
    yield s
    s.close()


def conforms(ref: str, value: Any) -> bool:
    """Whether ``value`` is valid against the document's schema ``ref`` (e.g. ``#/components/schemas/X``)."""
    return bool(jsonschema_rs.Draft202012Validator({"$ref": ref, "components": SPEC["components"]}).is_valid(value))


def assert_error(response: requests.Response, status: int, code: str) -> None:
    assert response.status_code == status, f"{response.request.method} {response.url}: {response.text[:300]}"
    assert response.headers["content-type"].startswith("application/json"), response.headers
    assert "x-ms-ccf-transaction-id" in response.headers
    assert response.json()["error"]["code"] == code, response.text


def sample(path: str) -> str:
    """The path with each ``{parameter}`` filled in (ids of the documented shape; none exists)."""
    return re.sub(r"\{[^}]+\}", lambda m: "f1" if m.group(0) == "{functionId}" else "ab" * 32, path)


# --------------------------------------------------------------------------- methods


def undeclared(path: str) -> list[str]:
    declared = {m.upper() for m in SPEC["paths"][path] if m in DOCUMENTED}
    declared |= {"HEAD"} if "GET" in declared else set()
    # CONNECT's target is an authority (host:port): a path with a colon is not one the HTTP parser
    # can read, and is refused (400, plain text) before routing, as the document's description says
    return [m for m in TRIED if m not in declared and not (m == "CONNECT" and ":" in path)]


@pytest.mark.parametrize("path", list(SPEC["paths"]))
def test_undeclared_methods_are_405_naming_the_documented_ones(
    server: Server, session: requests.Session, path: str
) -> None:
    documented = {m.upper() for m in SPEC["paths"][path] if m in DOCUMENTED}
    allowed = documented | ({"HEAD"} if "GET" in documented else set())
    for method in undeclared(path):
        response = session.request(method, server.url + sample(path), timeout=30)
        assert response.status_code == 405, f"{method} {path}: {response.status_code} {response.text[:200]}"
        assert set(response.headers["Allow"].split(",")) == allowed, f"{method} {path}"
        assert "x-ms-ccf-transaction-id" in response.headers
        if method != "HEAD":
            assert response.json()["error"]["code"] == "MethodNotAllowed"


def test_trace_on_what_is_not_supported_is_405_not_501(server: Server, session: requests.Session) -> None:
    """The documented methods of a feature notarium does not run are 501; any other method is 405,
    as anywhere else (it was 501 for every method)."""
    url = f"{server.url}/app/userDefinedEndpoints"
    assert_error(session.get(url), 501, "NotImplemented")
    for method in ("TRACE", "POST", "DELETE"):
        response = session.request(method, url)
        assert_error(response, 405, "MethodNotAllowed")
        assert response.headers["Allow"] == "GET,HEAD,PUT"
    assert_error(session.post(f"{server.url}/app/userDefinedFunctions/f1:execute", json={}), 501, "NotImplemented")
    response = session.get(f"{server.url}/app/userDefinedFunctions/f1:execute")
    assert_error(response, 405, "MethodNotAllowed")
    assert response.headers["Allow"] == "POST"


@pytest.mark.parametrize(
    "path",
    ["/gov/members/proposals/{proposalId}:withdraw", "/gov/members/state-digests/{memberId}:update"],
)
def test_an_action_path_allows_post_only(server: Server, session: requests.Session, path: str) -> None:
    """``{id}:withdraw`` is not the ``{id}`` resource: a GET there is 405 naming POST (it reached the
    GET route of an id ``…:withdraw``), and no answer there advertises GET."""
    for method in ("GET", "OPTIONS", "PUT"):
        response = session.request(method, server.url + sample(path))
        assert_error(response, 405, "MethodNotAllowed")
        assert response.headers["Allow"] == "POST"
    # the id's own route is unchanged (no such proposal or member here)
    assert session.get(server.url + sample(path).rsplit(":", 1)[0]).status_code == 404


def test_connect_names_the_paths_methods(server: Server, session: requests.Session) -> None:
    response = session.request("CONNECT", f"{server.url}/app/transactions")
    assert_error(response, 405, "MethodNotAllowed")
    assert response.headers["Allow"] == "GET,HEAD,POST"
    assert_error(session.request("CONNECT", f"{server.url}/no/such/path"), 404, "ResourceNotFound")


# --------------------------------------------------------------------------- the document's schemas


@pytest.mark.parametrize(
    ("txid", "exists"),
    [
        ("0.0", True),
        ("2.15", True),
        ("2147483647.9223372036854775807", True),  # the largest view and seqno
        ("2147483648.1", False),  # a view over 31 bits
        ("1.9223372036854775808", False),  # a seqno over 63 bits
        ("9999999999.9999999999999999999", False),
        ("01.1", False),
        ("1.01", False),
    ],
)
def test_transaction_ids_are_the_servers(server: Server, session: requests.Session, txid: str, exists: bool) -> None:
    """The document's transaction-id schema accepts exactly what the server parses."""
    assert conforms("#/components/schemas/TransactionIdText", txid) is exists
    for name in ("FromTransactionId", "ToTransactionId", "TransactionIdPath"):
        assert conforms(SPEC["components"]["parameters"][name]["schema"]["$ref"], txid) is exists
    response = session.get(f"{server.url}/app/transactions", params={"fromTransactionId": txid})
    if exists:
        assert response.status_code == 200, response.text
    else:
        assert_error(response, 400, "InvalidQueryParameterValue")


def test_issuer_query_is_as_long_as_an_issuer(server: Server, session: requests.Session) -> None:
    """Up to the document's maxLength, ``issuer`` names an issuer (no such user here: 404); one
    character more is 400. The same limit as an issuer's own (``JwtIssuerSet``)."""
    longest = SPEC["components"]["parameters"]["IssuerQuery"]["schema"]["maxLength"]
    assert longest == SPEC["components"]["schemas"]["JwtIssuerSet"]["properties"]["issuer"]["maxLength"]
    url = f"{server.url}/app/users/{FINGERPRINT}"
    assert_error(session.get(url, params={"issuer": "i" * longest}), 404, "UserNotFound")
    assert_error(session.get(url, params={"issuer": "i" * (longest + 1)}), 400, "InvalidQueryParameterValue")


@pytest.mark.parametrize("value", ["", "bytes=5-1", "items=0-1", "bytes=0-1,3-4", "bytes=x"])
def test_unusable_ranges_get_the_whole_file(server: Server, session: requests.Session, value: str) -> None:
    """A ``Range`` the server cannot use is ignored (RFC 9110 §14.2), as documented: the document's
    schema allows it, and the answer is the whole file; so is a range under a stale ``If-Range``."""
    name = session.get(f"{server.url}/app/ledger/chunks").json()["chunks"][0]["name"]
    url = f"{server.url}/app/ledger/chunks/{name}"
    whole = session.get(url)
    assert whole.status_code == 200
    for parameter in ("Range", "IfRange"):
        assert conforms(f"#/components/parameters/{parameter}/schema", value), parameter
    answer = session.get(url, headers={"Range": value})
    assert (answer.status_code, answer.content) == (200, whole.content)
    stale = session.get(url, headers={"Range": "bytes=0-9", "If-Range": value or '"0"'})
    assert (stale.status_code, stale.content) == (200, whole.content)
    assert session.get(url, headers={"Range": "bytes=0-9"}).status_code == 206


def test_an_issuers_keys_are_inline_or_by_url(server: Server, session: requests.Session) -> None:
    """``PUT /app/jwtIssuers`` takes exactly one of ``jwks`` and ``jwksUri``: the document's schema
    refuses neither and both, as the server does (400, nothing recorded), and accepts either."""
    key = jwt.algorithms.ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key(), as_dict=True)
    jwks = {"keys": [{**key, "kid": "k1", "use": "sig"}]}
    url = f"{server.url}/app/jwtIssuers"
    refused: list[dict[str, Any]] = [
        {"issuer": "https://issuer.example"},
        {"issuer": "https://issuer.example", "jwks": jwks, "jwksUri": "https://issuer.example/keys"},
    ]
    for body in refused:
        assert not conforms("#/components/schemas/JwtIssuerSet", body), body
        assert_error(session.put(url, json=body), 400, "InvalidInput")
    assert session.get(url).json() == {"issuers": []}
    accepted: dict[str, Any] = {"issuer": "https://issuer.example", "jwks": jwks}
    assert conforms("#/components/schemas/JwtIssuerSet", accepted)
    assert conforms("#/components/schemas/JwtIssuerSet", {"issuer": "x", "jwksUri": "https://issuer.example/keys"})
    answer = session.put(url, json=accepted)
    assert answer.status_code == 200, answer.text
    assert answer.json()["keyIds"] == ["k1"]
    assert session.delete(url, params={"issuer": "https://issuer.example"}).status_code == 204
