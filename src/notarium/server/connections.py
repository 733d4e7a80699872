"""Connections: the phases and timeouts of every connection of a listener (TLS and plain HTTP).

A public listener must bound what a client can hold without sending a request. Each connection is
in one *phase*, and each phase has a deadline:

- ``CONNECTING``: accepted, TLS handshake under way (:data:`HANDSHAKE_TIMEOUT_S`);
- ``IDLE``: no request, before the first or between two (``idle_timeout_s``, then a clean close);
- ``HEADERS``: part of a request has arrived, not yet its headers (``header_timeout_s`` from the
  first byte, however slowly more bytes trickle in);
- ``BUSY``: aiohttp handles a request. While its body is still arriving, each read must come within
  ``body_timeout_s`` of the last (the time aiohttp itself stops reading does not count).

A response the client does not take (the socket's send buffer stays full) is also cut off after
``body_timeout_s``. A timed-out request is aborted: its handler's reads fail with
:class:`RequestTimeoutError`, so nothing half-read is ever applied.

A client's half-close (TLS ``close_notify``, or TCP FIN) ends what it may send, not what it gets: a
request it completed is answered, then the connection closes; a request it did not complete is
aborted before its handler can apply it.

How many connections a process holds, and whom it sheds at its limits, is :mod:`.gate`; the accept
loop is :mod:`.listener`.

A request answered before its body was read (a refusal: 401, 403, 413, 415…) is never drained: the
answer says ``Connection: close``, goes out with close_notify and a FIN, and what the client still
sends is dropped unread (not decrypted, not parsed) for at most :data:`REFUSED_LINGER_S`, so that a
client writing its whole body before it reads gets the answer rather than a reset; such a
connection is the first one shed at the limits. The servers are made with
:data:`notarium.server.bodies.HTTP_OPTIONS` (aiohttp itself neither inflates nor drains bodies).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import weakref
from typing import Any

from aiohttp import web

from notarium.server.errors import error_response
from notarium.server.gate import Gate, Phase

log = logging.getLogger("notarium.server.connections")

HANDSHAKE_TIMEOUT_S = 10.0
REFUSED_LINGER_S = 5.0  # after an answer to a request whose body was not read (see above)


class RequestAbortedError(ConnectionResetError):
    """Why a request's connection ended before it was read: what its handler's reads raise. The
    access log shows ``status`` (nothing is sent: there is no one to send it to)."""

    status = 499  # "client closed request"
    code = "ClientClosedRequest"


class RequestTimeoutError(RequestAbortedError):
    status = 408
    code = "RequestTimeout"


def aborted(request: web.BaseRequest, exc: BaseException) -> RequestAbortedError | None:
    """``exc`` (raised serving ``request``) as a :class:`RequestAbortedError` if it only says that the
    request's connection is gone (the client left, or stalled and was cut off), else ``None``."""
    if isinstance(exc, RequestAbortedError):
        return exc
    transport = request.transport
    if isinstance(exc, ConnectionError) and (transport is None or transport.is_closing()):
        return RequestAbortedError(str(exc) or "the client closed the connection")
    return None


def failure_response(request: web.BaseRequest, exc: BaseException, log: logging.Logger, who: str) -> web.Response:
    """The answer to a request whose handler raised ``exc`` unexpectedly: if the client is gone (it
    left, or stalled and was cut off), a response only the access log sees; otherwise a 500 in ACL's
    format, the traceback logged. ``who``: "server" or "host", for the message."""
    gone = aborted(request, exc)
    if gone is not None:
        return error_response(gone.status, gone.code, str(gone))
    log.exception("unexpected error serving %s %s", request.method, request.path)
    return error_response(500, "InternalServerError", f"The {who} failed to answer this request.")


# --- requests: aiohttp tells each connection when it begins and ends one -----------------------

_TRACKED: weakref.WeakSet[web.Server] = weakref.WeakSet()


def _track(server: web.Server) -> None:
    """Wrap ``server``'s request factory (called once a request's headers are in) and handler (whose
    end is the request's end) to keep each connection's phase. Before its first connection."""
    if server in _TRACKED:
        return
    make, handle = server.request_factory, server.request_handler

    def factory(message: Any, payload: Any, protocol: Any, *args: Any, **kwargs: Any) -> web.BaseRequest:
        request = make(message, payload, protocol, *args, **kwargs)
        transport = protocol.transport
        if isinstance(transport, _PlainTransport):
            transport.outer.request_began(payload)
            request[_CONNECTION] = transport.outer
        return request

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        try:
            response = await handle(request)
        finally:
            conn = request.get(_CONNECTION)
            if conn is not None:
                conn.request_ended(body_unread=not request.content.is_eof())
        if not request.content.is_eof():  # answered before its body was read: not kept alive
            response.force_close()
        return response

    server.request_factory = factory
    server.request_handler = handler
    _TRACKED.add(server)


# --- one connection ----------------------------------------------------------------------------


class _PlainTransport(asyncio.Transport):
    """The transport the application protocol sees: plaintext in and out."""

    def __init__(self, outer: GuardedProtocol) -> None:
        super().__init__()
        self.outer = outer

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.outer.extra_info(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.outer.write_plain(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self.outer.write_plain(b"".join(bytes(d) for d in list_of_data))

    def can_write_eof(self) -> bool:
        return False

    def is_closing(self) -> bool:
        return self.outer.closing

    def close(self) -> None:
        self.outer.close()

    def abort(self) -> None:
        self.outer.abort()

    def pause_reading(self) -> None:
        self.outer.pause_reading()

    def resume_reading(self) -> None:
        self.outer.resume_reading()

    def is_reading(self) -> bool:
        return not self.outer.reading_paused

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if self.outer.transport is not None:
            self.outer.transport.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self.outer.transport.get_write_buffer_size() if self.outer.transport is not None else 0

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.outer.app = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        app: asyncio.BaseProtocol = self.outer.app
        return app


class GuardedProtocol(asyncio.Protocol, abc.ABC):
    """One accepted connection: its phase and deadline, and plaintext to and from ``app`` (an aiohttp
    request handler made by ``server``). Subclasses say how bytes are carried (TLS or not)."""

    def __init__(self, server: web.Server, gate: Gate) -> None:
        _track(server)
        self._server = server
        self._gate = gate
        self._config = gate.config
        self._loop = asyncio.get_running_loop()
        self.app: Any = None
        self.transport: asyncio.Transport | None = None
        self.address = ""
        self.phase = Phase.CONNECTING
        self.closing = False
        self.reading_paused = False
        self.writing_paused = False
        self.peer_closed = False
        self._deadline: float | None = None
        self._why = ""
        self._timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._body: Any = None  # the body (aiohttp StreamReader) of the request in progress, until it is whole
        self.refused = False  # a request was answered before its body was read: the rest is dropped unread
        self.lingering = False  # closed after such an answer; dropping what the client still sends
        self._next = False  # bytes of the next request arrived during this one
        self._reason: Exception | None = None
        self._outbox: list[bytes] = []
        self._flush_scheduled = False

    # --- what subclasses provide ---

    @abc.abstractmethod
    def _opened(self) -> None:
        """The socket is connected (start the handshake's deadline, or the application)."""

    @abc.abstractmethod
    def _send(self, data: bytes) -> None:
        """Write ``data`` to the peer (TLS: encrypted first)."""

    def _shutdown(self) -> None:
        """Before the socket closes (TLS: close_notify)."""

    # --- deadlines ---

    def _arm(self, seconds: float, why: str) -> None:
        """One deadline at a time; a later one reuses the timer already set (it re-arms on firing)."""
        deadline = self._loop.time() + seconds
        self._deadline, self._why = deadline, why
        if self._timer is None or self._timer.when() > deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_at(deadline, self._expire)

    def _disarm(self) -> None:
        self._deadline = None

    def _expire(self) -> None:
        self._timer = None
        if self._deadline is None or self.closing:
            return
        if self._loop.time() < self._deadline:
            self._timer = self._loop.call_at(self._deadline, self._expire)
            return
        log.debug("closing the connection from %s: %s", self.address, self._why)
        if self.phase is Phase.IDLE and not self.writing_paused:
            self.close()
        else:
            self.abort(RequestTimeoutError(self._why))

    def _idle(self) -> None:
        self.phase = Phase.IDLE
        seconds = self._config.idle_timeout_s
        self._arm(seconds, f"idle for {seconds:g} s")

    def _headers(self) -> None:
        self.phase = Phase.HEADERS
        seconds = self._config.header_timeout_s
        self._arm(seconds, f"no complete request headers within {seconds:g} s")

    def _watch_body(self) -> None:
        body = self._body
        if body is None:
            return
        if body.is_eof() or body.exception() is not None:
            self._body = None
            self._disarm()
        elif self.reading_paused:
            self._disarm()  # the application is not reading: not the client's delay
        else:
            seconds = self._config.body_timeout_s
            self._arm(seconds, f"no more of the request body for {seconds:g} s")

    def _write_stalled(self) -> None:
        self._write_timer = None
        seconds = self._config.body_timeout_s
        log.debug("closing the connection from %s: it took none of the response for %g s", self.address, seconds)
        self.abort(RequestTimeoutError(f"the client took none of the response for {seconds:g} s"))

    # --- the requests (from aiohttp, through _track) ---

    def request_began(self, payload: Any) -> None:
        self.phase = Phase.BUSY
        self._next = False
        self._body = None if payload.is_eof() else payload
        if self._body is None:
            self._disarm()
        else:
            self._watch_body()

    def request_ended(self, body_unread: bool = False) -> None:
        self._body = None
        if body_unread:
            self.refused = True  # from now on nothing more is read: aiohttp closes after the answer
        if self.closing:
            return
        if self._next:
            self._headers()
        else:
            self._idle()

    # --- the socket side ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not isinstance(transport, asyncio.Transport):
            raise TypeError("a connection needs a stream transport")
        self.transport = transport
        if self.closing:  # shed before it was connected
            transport.abort()
            return
        self._opened()

    def _start_app(self) -> None:
        """The connection is ready for HTTP."""
        if self._gate.closed:
            self.abort()
            return
        self.app = self._server()
        self.app.connection_made(_PlainTransport(self))
        self._idle()

    def _deliver(self, plain: list[bytes]) -> None:
        """Hand what one socket read carried to the application at once (one parse, not one per record)."""
        if not plain or self.app is None or self.refused:
            return
        data = plain[0] if len(plain) == 1 else b"".join(plain)
        if not data:
            return
        if self.phase is Phase.IDLE:
            self._headers()
        elif self.phase is Phase.BUSY and self._body is None:
            self._next = True
        self.app.data_received(data)
        self._watch_body()

    def _peer_finished(self) -> None:
        """The client sends no more (TLS close_notify or TCP FIN): answer the request it completed,
        then close; nothing more is read."""
        if self.peer_closed or self.closing:
            return
        self.peer_closed = True
        if self.app is None:
            self.abort()
            return
        self.app.close()  # aiohttp: no further request; close the connection after the current one
        self._loop.call_soon(self._close_if_done)  # after aiohttp has taken a request just completed

    def _close_if_done(self) -> None:
        if self.closing:
            return
        if self.phase is not Phase.BUSY:
            self.close()
        elif self._body is not None:
            self.abort(RequestAbortedError("the client closed its side before sending the whole request body"))
        # else: the request is answered, then aiohttp closes the connection

    def eof_received(self) -> bool | None:
        self._peer_finished()
        return not self.closing  # keep the socket open to send the answer

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self._disarm()
        for timer in (self._timer, self._write_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._write_timer = None
        self._gate.forget(self)
        if self.app is not None:
            app, self.app = self.app, None
            app.connection_lost(self._reason or exc)

    def pause_writing(self) -> None:
        self.writing_paused = True
        if self._write_timer is None:
            self._write_timer = self._loop.call_later(self._config.body_timeout_s, self._write_stalled)
        if self.app is not None:
            self.app.pause_writing()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        if self.app is not None:
            self.app.resume_writing()

    # --- the plaintext side ---

    def extra_info(self, name: str, default: Any) -> Any:
        if self.transport is None:
            return default
        return self.transport.get_extra_info(name, default)

    def write_plain(self, data: bytes) -> None:
        """Queue plaintext; it is sent once per event-loop turn, so the answers to pipelined requests
        leave in one TLS record and one system call."""
        if self.closing:
            return
        self._outbox.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._send_outbox)

    def _send_outbox(self) -> None:
        self._flush_scheduled = False
        if not self._outbox or self.transport is None:
            return
        data = b"".join(self._outbox)
        self._outbox.clear()
        self._send(data)

    def pause_reading(self) -> None:
        if self.transport is not None and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()
            if self._body is not None:
                self._disarm()

    def resume_reading(self) -> None:
        if self.transport is not None and self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()
            self._watch_body()

    def close(self) -> None:
        if self.closing:
            return
        self._send_outbox()
        self.closing = True
        self._shutdown()
        if self.transport is None:
            return
        if self.refused:
            self._linger(self.transport)
        else:
            self.transport.close()

    def _linger(self, transport: asyncio.Transport) -> None:
        """After an answer to a request whose body was not read: send a FIN after the answer, and drop
        what the client still sends (its body, before it reads the answer) for REFUSED_LINGER_S at most,
        or until it closes its side; a reset would otherwise make the client lose the answer."""
        self.lingering = True
        if transport.can_write_eof() and not transport.get_write_buffer_size():  # else the FIN comes at the close
            with contextlib.suppress(OSError):  # the client reset the connection already
                transport.write_eof()
        if self.reading_paused:
            self.reading_paused = False
            transport.resume_reading()
        self._disarm()
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(REFUSED_LINGER_S, transport.close)

    def abort(self, reason: Exception | None = None) -> None:
        if reason is not None and self._reason is None:
            self._reason = reason
        self.closing = True
        if self.transport is not None:
            self.transport.abort()


_CONNECTION: web.RequestKey[GuardedProtocol] = web.RequestKey("notarium.connection", GuardedProtocol)


class PlainServerProtocol(GuardedProtocol):
    """Plain HTTP (the optional identity listener): the same phases, deadlines and limits as TLS."""

    def _opened(self) -> None:
        self._start_app()

    def data_received(self, data: bytes) -> None:
        if not self.closing and not self.refused:
            self._deliver([data])

    def _send(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)
