"""TLS termination that accepts any client certificate, with the peer certificate exposed.

Python's ``ssl`` module accepts a client certificate only if it chains to a loaded CA, but ACL
identifies certificate users by the fingerprint of a (usually self-signed) certificate that the
server has never seen: the SDK registers users by fingerprint alone. So TLS is terminated here
with pyOpenSSL over memory BIOs: the handshake requests a client certificate, accepts any (or
none), and authorization happens afterwards by fingerprint. This is the one adapter that reads
the peer certificate (``get_extra_info(PEER_CERT_DER)``); nothing else touches TLS.

``TLSServerProtocol`` presents aiohttp's request handler a transport that reads and writes
plaintext; timeouts, limits and half-closes are its base's (:mod:`notarium.server.connections`).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL

from notarium.server.connections import HANDSHAKE_TIMEOUT_S, GuardedProtocol
from notarium.server.gate import Gate

log = logging.getLogger("notarium.server.tls")

PEER_CERT_DER = "notarium_peer_cert_der"
_READ_SIZE = 1 << 16


def server_context(cert_chain: list[x509.Certificate], key: ec.EllipticCurvePrivateKey) -> SSL.Context:
    """TLS ≥ 1.2 server context with the node certificate; requests, never requires, client certs."""
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    ctx.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION | SSL.OP_CIPHER_SERVER_PREFERENCE)
    ctx.set_cipher_list(b"ECDHE+AESGCM:ECDHE+CHACHA20")
    ctx.use_certificate(cert_chain[0])
    for extra in cert_chain[1:]:
        ctx.add_extra_chain_cert(extra)
    ctx.use_privatekey(key)
    ctx.check_privatekey()
    ctx.set_verify(SSL.VERIFY_PEER, _accept_any)
    ctx.set_alpn_select_callback(_alpn)
    ctx.set_session_id(b"notarium")
    return ctx


def _accept_any(_conn: SSL.Connection, _cert: object, _errno: int, _depth: int, _ok: int) -> bool:
    return True  # identity is decided by fingerprint after the handshake, never by chain


def _alpn(_conn: SSL.Connection, protos: list[bytes]) -> Any:
    return b"http/1.1" if b"http/1.1" in protos else SSL.NO_OVERLAPPING_PROTOCOLS


def key_pem_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class TLSServerProtocol(GuardedProtocol):
    """One TLS connection: handshake, then plaintext to and from the application (the phases,
    deadlines and limits are :class:`~notarium.server.connections.GuardedProtocol`'s)."""

    def __init__(self, ctx: SSL.Context, server: web.Server, gate: Gate) -> None:
        super().__init__(server, gate)
        self._ctx = ctx
        self._conn = SSL.Connection(ctx, None)
        self._conn.set_accept_state()
        self._peer_der: bytes | None = None

    def _opened(self) -> None:
        self._arm(HANDSHAKE_TIMEOUT_S, f"no TLS handshake within {HANDSHAKE_TIMEOUT_S:g} s")

    def data_received(self, data: bytes) -> None:
        if self.closing or self.refused:  # nothing more is read (not even decrypted)
            return
        try:
            self._conn.bio_write(data)
            if self.app is None and not self._handshake():
                return
            plain: list[bytes] = []
            while not self.closing:
                try:
                    plain.append(self._conn.recv(_READ_SIZE))
                except SSL.WantReadError:
                    break
                except SSL.ZeroReturnError:  # close_notify: the client sends no more, but may read
                    self._deliver(plain)
                    self._flush()
                    self._peer_finished()
                    return
            self._deliver(plain)
            self._flush()
        except SSL.Error as exc:
            log.debug("TLS error from %s: %s", self.address, exc)
            self.abort()

    def _handshake(self) -> bool:
        try:
            self._conn.do_handshake()
        except SSL.WantReadError:
            self._flush()
            return False
        self._flush()
        peer = self._conn.get_peer_certificate(as_cryptography=True)
        if peer is not None:
            self._peer_der = peer.public_bytes(serialization.Encoding.DER)
        self._start_app()
        return self.app is not None

    def _flush(self) -> None:
        while True:
            try:
                out = self._conn.bio_read(_READ_SIZE)
            except SSL.WantReadError:
                return
            if self.transport is not None and out:
                self.transport.write(out)

    def _send(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                n = self._conn.send(view[:_READ_SIZE])
                view = view[n:]
        except SSL.Error as exc:
            log.debug("TLS write error to %s: %s", self.address, exc)
            self.abort()
            return
        self._flush()

    def _shutdown(self) -> None:
        with contextlib.suppress(SSL.Error):
            self._conn.shutdown()
        self._flush()

    def extra_info(self, name: str, default: Any) -> Any:
        if name == PEER_CERT_DER:
            return self._peer_der
        if name == "sslcontext":
            return self._ctx  # truthy: the request arrived over TLS
        if name == "ssl_object":
            return self._conn
        return super().extra_info(name, default)
