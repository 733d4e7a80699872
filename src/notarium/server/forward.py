"""Forwarding writes from a follower to the primary (docs/design/ha.md).

A follower serves reads itself and sends every other request (POST, PUT, PATCH, DELETE) to the
primary named by the lease, unchanged, over TLS with its own node certificate as client
certificate. The caller's TLS client certificate, if any, travels in ``x-notarium-forwarded-
client-cert`` (base64 DER; empty: none); bearer tokens and member-signed governance bodies travel
as they are, and the primary checks them itself. The primary believes the forwarded certificate
only from a peer whose own certificate the service identity issued, i.e. a node of this service
(:func:`forwarded_peer_cert`). One hop only: a forwarded request is never forwarded again.
"""

from __future__ import annotations

import base64
import binascii
import logging
import ssl
import tempfile
from pathlib import Path

import aiohttp
from aiohttp import web
from cryptography import x509

from notarium.errors import VerificationError
from notarium.server.errors import ApiError
from notarium.verify.keys import check_endorsement

log = logging.getLogger("notarium.server")

FORWARDED_CERT = "x-notarium-forwarded-client-cert"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_PASSED_REQUEST_HEADERS = ("Content-Type", "Authorization", "x-ms-client-request-id", "Accept")
_PASSED_RESPONSE_HEADERS = (
    "Content-Type",
    "x-ms-ccf-transaction-id",
    "Retry-After",
    "Allow",
    "Location",
    "WWW-Authenticate",
)
FORWARD_TIMEOUT_S = 30.0


def forwarded_peer_cert(peer_der: bytes | None, header: str, service_cert: x509.Certificate) -> bytes | None:
    """The caller's certificate (DER) of a forwarded request, or None if it had none.

    ``peer_der`` is the certificate of the TLS peer that sent it: it must be a node certificate
    of this service (issued by the service identity); otherwise 401."""
    if peer_der is None:
        raise ApiError(401, "InvalidAuthenticationInfo", "Only a node of this service may forward requests.")
    try:
        check_endorsement(x509.load_der_x509_certificate(peer_der), service_cert, "forwarding node certificate")
    except (ValueError, VerificationError):
        raise ApiError(401, "InvalidAuthenticationInfo", "Only a node of this service may forward requests.") from None
    if not header:
        return None
    try:
        return base64.b64decode(header, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "InvalidInput", f"{FORWARDED_CERT} is not base64.") from None


class Forwarder:
    """A follower's client to the primary (one connection pool, TLS with the node's certificate)."""

    def __init__(self, node_cert_pem: bytes, node_key_pem: bytes, service_cert_pem: bytes) -> None:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=service_cert_pem.decode())
        ctx.check_hostname = False  # any node the service identity endorsed is the primary's peer
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        with tempfile.TemporaryDirectory() as tmp:  # the ssl module loads client keys from files only
            path = Path(tmp) / "node.pem"
            path.touch(0o600)
            path.write_bytes(node_cert_pem + node_key_pem)
            ctx.load_cert_chain(str(path))
        self._ssl = ctx
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=256),
                timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S),
                auto_decompress=False,
            )
        return self._session

    async def forward(self, request: web.Request, primary: str, caller_der: bytes | None) -> web.Response:
        headers = {h: request.headers[h] for h in _PASSED_REQUEST_HEADERS if h in request.headers}
        headers[FORWARDED_CERT] = base64.b64encode(caller_der).decode() if caller_der else ""
        body = await request.read()
        url = primary.rstrip("/") + request.rel_url.raw_path_qs
        try:
            async with self._client().request(request.method, url, data=body, headers=headers) as answer:
                data = await answer.read()
                passed = {h: answer.headers[h] for h in _PASSED_RESPONSE_HEADERS if h in answer.headers}
                return web.Response(status=answer.status, body=data, headers=passed)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("forwarding %s %s to the primary %s failed: %s", request.method, request.path, primary, exc)
            raise ApiError(503, "ServiceUnavailable", "The primary did not answer; retry later.") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
