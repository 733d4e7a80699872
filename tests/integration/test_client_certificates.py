"""Client certificates against a real `notarium serve` over real TLS (the service cert pinned):

- a registered user's certificate outside its validity period (expired, not yet valid) is refused
  with 401 InvalidAuthenticationInfo saying so, as CCF refuses it; a valid one of the same user
  set works (issue 15, point 5);
- the server keeps nothing of certificates that belong to nobody: 4,200 distinct unregistered
  60 KB certificates grew the front process by 298 MB (164 MB in the issue's measurement); now by
  less than 32 MB (issue 15, point 7).
"""

from __future__ import annotations

import datetime
import json
import socket
import ssl
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from integration.server import Server, running
from notarium.auth.identity import acl_fingerprint
from notarium.ledger import init_service
from notarium.ledger.identity import cert_pem, private_pem

TIMEOUT = 30
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}
CA_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


@pytest.fixture(autouse=True)
def no_system_ca(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CA_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("certs") / "ledger"
    init_service(directory)
    with running(directory) as srv:
        yield srv


def identity(
    directory: Path,
    name: str,
    start: datetime.datetime,
    end: datetime.datetime,
    key: ec.EllipticCurvePrivateKey | None = None,
    padding: int = 0,
) -> tuple[Path, str]:
    """A self-signed client certificate valid from ``start`` to ``end``: (combined PEM, user id)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )
    if padding:  # an extension nobody understands, to make the certificate large
        oid = x509.ObjectIdentifier("1.3.6.1.4.1.55555.1")
        builder = builder.add_extension(x509.UnrecognizedExtension(oid, b"p" * padding), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    path = directory / f"{name}_combined.pem"
    path.write_bytes(cert_pem(cert) + private_pem(key))
    return path, acl_fingerprint(cert.public_bytes(Encoding.DER))


def admin(server: Server, method: str, path: str, **kwargs: object) -> requests.Response:
    return requests.request(
        method,
        server.url + path,
        verify=str(server.service_cert),
        cert=str(server.admin_pem),
        timeout=TIMEOUT,
        **kwargs,  # type: ignore[arg-type]
    )


def as_user(server: Server, pem: Path, path: str = "/app/transactions") -> requests.Response:
    return requests.get(
        server.url + path, params={"collectionId": "x"}, verify=str(server.service_cert), cert=str(pem), timeout=TIMEOUT
    )


def test_certificates_outside_their_validity_are_refused(server: Server, tmp_path: Path) -> None:
    now = datetime.datetime.now(datetime.UTC)
    day = datetime.timedelta(days=1)
    cases = {
        "expired": (now - 30 * day, now - day, "expired on"),
        "future": (now + day, now + 30 * day, "not valid yet"),
    }
    for name, (start, end, reason) in cases.items():
        pem, user_id = identity(tmp_path, name, start, end)
        r = admin(
            server, "PATCH", f"/app/users/{user_id}", data=json.dumps({"assignedRole": "Reader"}), headers=MERGE_PATCH
        )
        assert r.status_code == 200, r.text  # registering is fine: using it outside its validity is not
        r = as_user(server, pem)
        assert r.status_code == 401, (name, r.text)
        assert r.json()["error"]["code"] == "InvalidAuthenticationInfo"
        assert reason in r.json()["error"]["message"]
        assert (start if name == "future" else end).strftime("%Y-%m-%d") in r.json()["error"]["message"]
    pem, user_id = identity(tmp_path, "valid", now - day, now + day)
    r = admin(
        server, "PATCH", f"/app/users/{user_id}", data=json.dumps({"assignedRole": "Reader"}), headers=MERGE_PATCH
    )
    assert r.status_code == 200, r.text
    assert as_user(server, pem).status_code == 200


def _front_pid(server: Server) -> int:
    pid = server.process.pid
    children = [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]
    fronts = [c for c in children if b"notarium.server.front" in Path(f"/proc/{c}/cmdline").read_bytes()]
    assert len(fronts) == 1, children
    return fronts[0]


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_unregistered_certificates_are_not_kept(server: Server, tmp_path: Path) -> None:
    """The issue's figure: 4,200 unregistered 60 KB certificates, each on its own connection."""
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    host, port = server.url.removeprefix("https://").rsplit(":", 1)

    window = (now - datetime.timedelta(hours=1), now + datetime.timedelta(days=1))

    def present(n: int) -> bytes:
        """A new unregistered certificate (made, used on a connection of its own, deleted)."""
        pem = identity(tmp_path, f"stranger{n}", *window, key=key, padding=60_000)[0]
        ctx = ssl.create_default_context(cafile=str(server.service_cert))
        ctx.check_hostname = False  # the node certificate names the host it was made for; pinned all the same
        ctx.load_cert_chain(str(pem))
        pem.unlink()
        with socket.create_connection((host, int(port)), timeout=TIMEOUT) as raw, ctx.wrap_socket(raw) as tls:
            tls.sendall(b"GET /app/ping HTTP/1.1\r\nHost: ledger\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := tls.recv(1 << 16):
                answer += chunk
        return answer.split(b"\r\n", 1)[0]

    with ThreadPoolExecutor(16) as pool:
        assert set(pool.map(present, range(50))) == {b"HTTP/1.1 401 Unauthorized"}  # warm up
        front = _front_pid(server)
        before = _rss(front)
        assert set(pool.map(present, range(50, 4250))) == {b"HTTP/1.1 401 Unauthorized"}
        grown = _rss(front) - before
    assert grown < 32 << 20, f"the front grew by {grown / 1e6:.0f} MB"
