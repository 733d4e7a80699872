"""Request bodies against real servers over real sockets (issue #15, point 2): a body with a
``Content-Encoding`` is refused (415) before anything reads or inflates it, on every listener (TLS,
the plain identity listener, the ledger host); a request refused before its body was read (401, 413,
415) is answered at once, says ``Connection: close`` and the connection closes, its body never read.

What a gzip bomb costs the front, and its clients, is measured in bench/bomb.py.
"""

from __future__ import annotations

import gzip
import json
import re
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from integration.server import Server, new_identity, running
from integration.test_connections import closed_by_server, read_response
from notarium.ledger import init_service

API = "api-version=2024-01-26-preview"
WAIT = 15.0
ENTRY = json.dumps({"contents": "compressed entry"}).encode()
MAX_BODY = 8 << 20  # the server's default body limit (ServerConfig.max_body_bytes)
PART = 256 << 10  # what a client sends of a large body before it reads the answer
CODINGS = ["gzip", "GZIP", "x-gzip", "deflate", "br", "zstd", "compress", "identity, gzip", "gzip, identity"]


# --------------------------------------------------------------------------- clients


def request_bytes(method: str, path: str, headers: dict[str, str], body: bytes, length: int | None = None) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: notarium\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head += f"Content-Length: {len(body) if length is None else length}\r\n\r\n"
    return head.encode() + body


def dial(url: str, cafile: Path, cert: Path | None = None, source: str = "127.0.0.1") -> ssl.SSLSocket:
    host, port = url.removeprefix("https://").rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=str(cafile))
    if cert is not None:
        ctx.load_cert_chain(str(cert))
    raw = socket.create_connection((host, int(port)), timeout=WAIT, source_address=(source, 0))
    try:
        return ctx.wrap_socket(raw, server_hostname=host)
    except BaseException:
        raw.close()
        raise


def error_of(status_headers_body: tuple[int, dict[str, str], bytes]) -> tuple[int, str]:
    status, _, body = status_headers_body
    return status, json.loads(body)["error"]["code"]


def session(server: Server, cert: Path | None = None) -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # REQUESTS_CA_BUNDLE would otherwise replace the pinned service certificate
    s.verify = str(server.service_cert)
    s.cert = str(cert) if cert is not None else None
    return s


def settled(s: requests.Session, url: str) -> str:
    """The committed TxId once the ledger is quiet (the same twice, 200 ms apart)."""
    last = None
    for _ in range(50):
        r = s.get(f"{url}/app/collections?{API}", timeout=WAIT)
        assert r.status_code == 200, r.text
        now = r.headers["x-ms-ccf-transaction-id"]
        if now == last:
            return now
        last = now
        time.sleep(0.2)
    raise AssertionError("the ledger never settled")


def refused_early(sock: ssl.SSLSocket, request: bytes, part: int = PART) -> tuple[int, str]:
    """Send ``request`` (headers declaring a large body) and ``part`` bytes of its body, as a client
    writing before it reads; the answer must say ``Connection: close`` and the server must close."""
    sock.sendall(request + b"x" * part)
    status, headers, body = read_response(sock)
    assert headers.get("connection", "").lower() == "close", headers
    assert closed_by_server(sock), "the connection stayed open after an answer that left the body unread"
    return status, json.loads(body)["error"]["code"]


# --------------------------------------------------------------------------- the server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("bodies") / "ledger"
    init_service(directory)
    with running(directory, "--identity-http-port", "0", verbose=1) as srv:
        yield srv


@pytest.fixture(scope="module")
def admin(server: Server) -> Iterator[requests.Session]:
    with session(server, server.admin_pem) as s:
        yield s


@pytest.mark.parametrize("coding", CODINGS)
def test_an_encoded_body_is_refused_and_its_handler_never_runs(
    server: Server, admin: requests.Session, coding: str
) -> None:
    before = settled(admin, server.url)
    r = admin.post(
        f"{server.url}/app/transactions?collectionId=compressed&{API}",
        data=gzip.compress(ENTRY),
        headers={"Content-Type": "application/json", "Content-Encoding": coding},
    )
    assert r.status_code == 415, r.text
    assert r.json()["error"]["code"] == "UnsupportedMediaType"
    assert "Content-Encoding" in r.json()["error"]["message"]
    assert "x-ms-ccf-transaction-id" in r.headers
    assert settled(admin, server.url) == before, "a refused request changed the ledger"
    listed = admin.get(f"{server.url}/app/transactions?collectionId=compressed&{API}")
    assert listed.status_code == 200, listed.text
    assert listed.json()["entries"] == [], listed.text


def test_an_invalid_gzip_body_is_415_not_500(server: Server, admin: requests.Session) -> None:
    before = settled(admin, server.url)
    for body in (b"this is not gzip", gzip.compress(ENTRY)[:-9], b"\x1f\x8b\x08\x00" + b"\xff" * 64):
        r = admin.post(
            f"{server.url}/app/transactions?{API}",
            data=body,
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )
        assert r.status_code == 415, r.text
        assert r.json()["error"]["code"] == "UnsupportedMediaType"
    assert settled(admin, server.url) == before


@pytest.mark.parametrize("coding", [None, "identity", "Identity", ""])
def test_an_identity_body_is_taken(server: Server, admin: requests.Session, coding: str | None) -> None:
    headers = {"Content-Type": "application/json"}
    if coding is not None:
        headers["Content-Encoding"] = coding
    r = admin.post(f"{server.url}/app/transactions?collectionId=plain&{API}", data=ENTRY, headers=headers)
    assert r.status_code == 200, r.text


def test_a_refusal_of_a_whole_body_keeps_the_connection(server: Server) -> None:
    """A body that has arrived whole is no reason to close: the next request is served on the same connection."""
    with dial(server.url, server.service_cert, server.admin_pem) as sock:
        headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
        sock.sendall(request_bytes("POST", f"/app/transactions?{API}", headers, gzip.compress(ENTRY)))
        status, response_headers, body = read_response(sock)
        assert error_of((status, response_headers, body)) == (415, "UnsupportedMediaType")
        assert response_headers.get("connection", "").lower() != "close", response_headers
        sock.sendall(request_bytes("GET", f"/app/collections?{API}", {}, b""))
        assert read_response(sock)[0] == 200


def test_unauthenticated_routes_refuse_encoded_bodies(server: Server) -> None:
    """No credential is asked on /node/join or the governance routes: the body is refused all the same."""
    anonymous = session(server)
    for path in ("/node/join", "/gov/members/proposals:create"):
        r = anonymous.post(
            f"{server.url}{path}?api-version=2024-07-01",
            data=gzip.compress(b"{}"),
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )
        assert r.status_code == 415, (path, r.text)
        assert r.json()["error"]["code"] == "UnsupportedMediaType"


def test_the_plain_identity_listener_refuses_encoded_bodies(server: Server) -> None:
    found = re.search(r"identity over plain HTTP: http://([\d.]+):(\d+)", "".join(server.output))
    assert found, "".join(server.output)
    host, port = found.group(1), int(found.group(2))
    path = "/ledgerIdentity/ledger"
    with socket.create_connection((host, port), timeout=WAIT) as sock:
        sock.sendall(request_bytes("GET", path, {"Content-Encoding": "gzip"}, gzip.compress(b"{}")))
        assert error_of(read_response(sock)) == (415, "UnsupportedMediaType")
        sock.sendall(request_bytes("GET", path, {}, b""))
        assert read_response(sock)[0] == 200


# --------------------------------------------------------------------------- early refusals close


def test_an_unauthenticated_request_is_answered_without_its_body(server: Server, admin: requests.Session) -> None:
    before = settled(admin, server.url)
    with dial(server.url, server.service_cert) as sock:  # no client certificate
        headers = {"Content-Type": "application/json"}
        request = request_bytes("POST", f"/app/transactions?{API}", headers, b"", length=MAX_BODY)
        assert refused_early(sock, request) == (401, "InvalidAuthenticationInfo")
    stranger, _ = new_identity(server.directory.parent, "stranger")
    with dial(server.url, server.service_cert, stranger) as sock:  # a certificate that is not a user's
        request = request_bytes("POST", f"/app/transactions?{API}", headers, b"", length=MAX_BODY)
        assert refused_early(sock, request) == (401, "InvalidAuthenticationInfo")
    assert settled(admin, server.url) == before


def test_a_body_declared_over_the_limit_is_refused_before_it_is_read(server: Server, admin: requests.Session) -> None:
    before = settled(admin, server.url)
    with dial(server.url, server.service_cert, server.admin_pem) as sock:
        headers = {"Content-Type": "application/json"}
        request = request_bytes("POST", f"/app/transactions?{API}", headers, b"", length=50 << 20)
        assert refused_early(sock, request) == (413, "RequestTooLarge")
    assert settled(admin, server.url) == before


def test_an_encoded_large_body_is_refused_before_it_is_read(server: Server) -> None:
    with dial(server.url, server.service_cert) as sock:
        headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
        request = request_bytes("POST", f"/app/transactions?{API}", headers, b"", length=MAX_BODY)
        assert refused_early(sock, request) == (415, "UnsupportedMediaType")


def test_a_connection_closing_after_a_refusal_is_shed_before_an_idle_one(tmp_path: Path) -> None:
    """At the per-address limit (2 here) a newcomer sheds the connection still dropping a refused body,
    not a client's idle keep-alive connection (which would be the one shed before)."""
    directory = tmp_path / "ledger"
    init_service(directory)
    with running(directory, "--max-connections-per-address", "2") as small:
        here = "127.0.0.41"
        with dial(small.url, small.service_cert, source=here) as refused:
            request = request_bytes("POST", f"/app/transactions?{API}", {}, b"", length=MAX_BODY)
            refused.sendall(request + b"x" * PART)
            assert read_response(refused)[0] == 401
            with dial(small.url, small.service_cert, small.admin_pem, source=here) as idle:
                sock_request = request_bytes("GET", f"/app/collections?{API}", {}, b"")
                idle.sendall(sock_request)
                assert read_response(idle)[0] == 200  # now idle, and the newest connection
                with dial(small.url, small.service_cert, small.admin_pem, source=here) as newcomer:
                    newcomer.sendall(sock_request)
                    assert read_response(newcomer)[0] == 200
                    idle.sendall(sock_request)
                    assert read_response(idle)[0] == 200, "the idle connection was shed"


def test_the_server_serves_on_after_early_refusals(server: Server, admin: requests.Session) -> None:
    r = admin.post(f"{server.url}/app/transactions?{API}", json={"contents": "after the refusals"})
    assert r.status_code == 200, r.text


# --------------------------------------------------------------------------- the ledger host


SUBSCRIPTION = "00000000-0000-0000-0000-0000000000b2"
ARM = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg/providers/Microsoft.ConfidentialLedger/ledgers"
ARM_API = "api-version=2022-05-13"


def test_the_ledger_host_refuses_encoded_bodies_and_closes_after_early_refusals(tmp_path: Path) -> None:
    directory = tmp_path / "host"
    admin, _ = new_identity(tmp_path, "admin")
    cert = admin.read_text().split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
    with running(directory, command="host") as host:
        ca = directory / "tls" / "ca_cert.pem"
        token = (directory / "host_token").read_text().strip()
        s = requests.Session()
        s.trust_env = False
        s.verify = str(ca)
        s.headers["Authorization"] = f"Bearer {token}"
        create = {
            "location": "local",
            "properties": {
                "ledgerType": "Public",
                "certBasedSecurityPrincipals": [{"cert": cert, "ledgerRoleName": "Administrator"}],
            },
        }
        body = gzip.compress(json.dumps(create).encode())
        headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
        r = s.put(f"{host.url}{ARM}/squeezed?{ARM_API}", data=body, headers=headers)
        assert r.status_code == 415, r.text
        assert r.json()["error"]["code"] == "UnsupportedMediaType"
        r = s.get(f"{host.url}{ARM}/squeezed?{ARM_API}")
        assert r.status_code == 404, r.text  # nothing was created
        r = s.post(f"{host.url}/ledgers/squeezed/app/transactions?{API}", data=gzip.compress(ENTRY), headers=headers)
        assert r.status_code == 415, r.text
        assert r.json()["error"]["code"] == "UnsupportedMediaType"

        with dial(host.url, ca) as sock:  # no credential, a large body on its way
            request = request_bytes(
                "PUT", f"{ARM}/squeezed?{ARM_API}", {"Content-Type": "application/json"}, b"", MAX_BODY
            )
            assert refused_early(sock, request) == (401, "AuthenticationFailed")
        with dial(host.url, ca) as sock:
            request = request_bytes(
                "PUT", f"{ARM}/squeezed?{ARM_API}", {"Content-Type": "application/json"}, b"", 50 << 20
            )
            assert refused_early(sock, request) == (413, "RequestTooLarge")
