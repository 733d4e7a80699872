"""TLS termination that accepts any client certificate, with the peer certificate exposed.

Python's ``ssl`` module accepts a client certificate only if it chains to a loaded CA, but ACL
identifies certificate users by the fingerprint of a (usually self-signed) certificate that the
server has never seen: the SDK registers users by fingerprint alone. So TLS is terminated here
with pyOpenSSL over memory BIOs: the handshake requests a client certificate, accepts any (or
none), and authorization happens afterwards by fingerprint. This is the one adapter that reads
the peer certificate (``get_extra_info(PEER_CERT_DER)``); nothing else touches TLS.

``TLSServerProtocol`` wraps any asyncio protocol (aiohttp's request handler) and presents it a
transport that reads and writes plaintext.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL

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


class _PlainTransport(asyncio.Transport):
    """The transport the application protocol sees: plaintext in and out."""

    def __init__(self, outer: TLSServerProtocol) -> None:
        super().__init__()
        self._outer = outer

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._outer.extra_info(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._outer.write_plain(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self._outer.write_plain(b"".join(bytes(d) for d in list_of_data))

    def can_write_eof(self) -> bool:
        return False

    def is_closing(self) -> bool:
        return self._outer.closing

    def close(self) -> None:
        self._outer.close()

    def abort(self) -> None:
        self._outer.abort()

    def pause_reading(self) -> None:
        self._outer.pause_reading()

    def resume_reading(self) -> None:
        self._outer.resume_reading()

    def is_reading(self) -> bool:
        return not self._outer.reading_paused

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if self._outer.transport is not None:
            self._outer.transport.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._outer.transport.get_write_buffer_size() if self._outer.transport is not None else 0

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._outer.app = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        app: asyncio.BaseProtocol = self._outer.app
        return app


class Gate:
    """Closed when the server stops: connections that finish their handshake afterwards are
    dropped instead of being handed to the application (which is shutting down)."""

    def __init__(self) -> None:
        self.closed = False


class TLSServerProtocol(asyncio.Protocol):
    """One TLS connection: handshake, then plaintext to and from ``app``."""

    def __init__(
        self,
        ctx: SSL.Context,
        app_factory: Callable[[], asyncio.Protocol],
        gate: Gate | None = None,
        handshake_timeout: float = 10.0,
    ):
        self._gate = gate or Gate()
        self._ctx = ctx
        self._app_factory = app_factory
        self.app: Any = None
        self.transport: asyncio.Transport | None = None
        self._conn = SSL.Connection(ctx, None)
        self._conn.set_accept_state()
        self._handshaken = False
        self.closing = False
        self.reading_paused = False
        self._peer_der: bytes | None = None
        self._peername: Any = None
        self._handshake_timeout = handshake_timeout
        self._timer: asyncio.TimerHandle | None = None
        self._outbox: list[bytes] = []
        self._flush_scheduled = False

    # --- the outer (socket) side ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not isinstance(transport, asyncio.Transport):
            raise TypeError("TLS needs a stream transport")
        self.transport = transport
        self._peername = transport.get_extra_info("peername")
        self._timer = asyncio.get_running_loop().call_later(self._handshake_timeout, self._handshake_expired)

    def _handshake_expired(self) -> None:
        if not self._handshaken:
            self.abort()

    def data_received(self, data: bytes) -> None:
        try:
            self._conn.bio_write(data)
            if not self._handshaken and not self._handshake():
                return
            plain: list[bytes] = []
            while not self.closing:
                try:
                    plain.append(self._conn.recv(_READ_SIZE))
                except SSL.WantReadError:
                    break
                except SSL.ZeroReturnError:  # close_notify from the peer
                    self._deliver(plain)
                    self._flush()
                    self.close()
                    return
            self._deliver(plain)
            self._flush()
        except SSL.Error as exc:
            log.debug("TLS error from %s: %s", self._peername, exc)
            self.abort()

    def _deliver(self, plain: list[bytes]) -> None:
        """Hand what one socket read decrypted to the application at once (one parse, not one per record)."""
        if plain and self.app is not None:
            self.app.data_received(plain[0] if len(plain) == 1 else b"".join(plain))

    def _handshake(self) -> bool:
        try:
            self._conn.do_handshake()
        except SSL.WantReadError:
            self._flush()
            return False
        self._flush()
        self._handshaken = True
        if self._timer is not None:
            self._timer.cancel()
        if self._gate.closed:
            self.abort()
            return False
        peer = self._conn.get_peer_certificate(as_cryptography=True)
        if peer is not None:
            self._peer_der = peer.public_bytes(serialization.Encoding.DER)
        self.app = self._app_factory()
        self.app.connection_made(_PlainTransport(self))
        return True

    def _flush(self) -> None:
        while True:
            try:
                out = self._conn.bio_read(_READ_SIZE)
            except SSL.WantReadError:
                return
            if self.transport is not None and out:
                self.transport.write(out)

    def eof_received(self) -> bool | None:
        if self.app is not None:
            self.app.eof_received()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self._timer is not None:
            self._timer.cancel()
        if self.app is not None:
            app, self.app = self.app, None
            app.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.app is not None:
            self.app.pause_writing()

    def resume_writing(self) -> None:
        if self.app is not None:
            self.app.resume_writing()

    # --- the inner (plaintext) side ---

    def extra_info(self, name: str, default: Any) -> Any:
        if name == PEER_CERT_DER:
            return self._peer_der
        if name == "sslcontext":
            return self._ctx  # truthy: the request arrived over TLS
        if name == "ssl_object":
            return self._conn
        if self.transport is None:
            return default
        return self.transport.get_extra_info(name, default)

    def write_plain(self, data: bytes) -> None:
        """Queue plaintext; it is encrypted and sent once per event-loop turn, so the answers to
        pipelined requests leave in one TLS record and one system call."""
        if self.closing:
            return
        self._outbox.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._send_outbox)

    def _send_outbox(self) -> None:
        self._flush_scheduled = False
        if not self._outbox or self.transport is None:
            return
        data = b"".join(self._outbox)
        self._outbox.clear()
        view = memoryview(data)
        try:
            while view:
                n = self._conn.send(view[:_READ_SIZE])
                view = view[n:]
        except SSL.Error as exc:
            log.debug("TLS write error to %s: %s", self._peername, exc)
            self.abort()
            return
        self._flush()

    def pause_reading(self) -> None:
        if self.transport is not None and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        if self.closing:
            return
        self._send_outbox()
        self.closing = True
        with contextlib.suppress(SSL.Error):
            self._conn.shutdown()
        self._flush()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()
