"""The accept loop of a listener: what ``loop.create_server`` does, with admission at accept
(:class:`notarium.server.gate.Gate`). A failed ``accept()`` pauses accepting briefly, and sheds a
connection when the process is out of file descriptors.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable, Iterable
from typing import Any

from notarium.server.connections import GuardedProtocol
from notarium.server.gate import Gate

log = logging.getLogger("notarium.server.connections")

ACCEPT_BATCH = 64  # accepts per readiness of a listening socket (each admitted at once)
ACCEPT_PAUSE_S = 0.1  # after a failed accept
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class Listener:
    """Listening sockets whose connections become ``factory()`` protocols under ``gate``."""

    def __init__(self, sockets: list[socket.socket], factory: Callable[[], GuardedProtocol], gate: Gate) -> None:
        self.sockets = sockets
        self._factory = factory
        self._gate = gate
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        for sock in sockets:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, address = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                self._gate.note("accept-failed", exc.strerror or str(exc))
                if exc.errno in _OUT_OF_RESOURCES:
                    self._gate.shed_one()
                self._loop.remove_reader(sock.fileno())
                self._loop.call_later(ACCEPT_PAUSE_S, self._resume, sock)
                return
            self._admit(conn, address)

    def _resume(self, sock: socket.socket) -> None:
        if not self._closed:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    def _admit(self, conn: socket.socket, address: Any) -> None:
        protocol = self._factory()
        host = str(address[0]) if isinstance(address, tuple) else str(address)
        if self._gate.closed or not self._gate.admit(protocol, host):
            conn.close()
            return
        conn.setblocking(False)
        task = self._loop.create_task(self._connect(conn, protocol))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, conn: socket.socket, protocol: GuardedProtocol) -> None:
        try:
            await self._loop.connect_accepted_socket(lambda: protocol, conn)
        except Exception as exc:  # a connection that could not start: the client's loss
            log.debug("a connection from %s could not start: %s", protocol.address, exc)
            self._gate.forget(protocol)
            conn.close()

    def close(self) -> None:
        """Stop accepting; connections already accepted go on."""
        self._closed = True
        for sock in self.sockets:
            self._loop.remove_reader(sock.fileno())
            sock.close()
        self._gate.flush()


async def listen(
    host: str, port: int, factory: Callable[[], GuardedProtocol], gate: Gate, *, backlog: int = 1024
) -> Listener:
    """Listen on every address ``host`` resolves to (as ``loop.create_server`` does); raise the
    open-files limit and fit ``gate``'s connection limit within it."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _name, address in _unique(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                reason = (exc.strerror or str(exc)).lower()
                raise OSError(exc.errno, f"error while attempting to bind on address {address!r}: {reason}") from None
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    gate.fit()
    return Listener(sockets, factory, gate)


def _unique(infos: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(infos))
