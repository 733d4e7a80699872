"""The limits on one process's client connections (docs/design/server.md §Connections).

The :class:`Gate` holds one process's connections. At ``max_connections`` (lowered at start to fit
the open-files limit, itself raised to its hard limit) or ``max_connections_per_address`` for the
newcomer's address, a newcomer sheds, among that address's or all connections: the newest idle one;
else the oldest that has not completed a request yet (connecting or sending headers: a client that
means it takes milliseconds); a connection with a request in progress is never shed, and if every
one is busy the newcomer is refused. Sheds, refusals and accept failures (:mod:`.listener`) are
reported in one WARNING line per :data:`REPORT_INTERVAL_S`, never one per event.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import resource
import time
from typing import Protocol

from notarium.server.config import ServerConfig

log = logging.getLogger("notarium.server.connections")

REPORT_INTERVAL_S = 10.0
FD_RESERVE_MIN = 64  # file descriptors kept for everything but client connections (and 1/8 of the limit)


class Phase(enum.Enum):
    CONNECTING = "connecting"
    IDLE = "idle"
    HEADERS = "headers"
    BUSY = "busy"


class Connection(Protocol):
    """What the gate knows of a connection (:class:`notarium.server.connections.GuardedProtocol`)."""

    address: str
    phase: Phase
    closing: bool
    lingering: bool  # closed after a refusal, dropping what the client still sends
    writing_paused: bool

    def abort(self, reason: Exception | None = None) -> None: ...


def raise_open_files_limit() -> int:
    """Raise this process's open-files soft limit to its hard limit (as far as the kernel allows);
    return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 30
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < target:
        with contextlib.suppress(ValueError, OSError):  # e.g. above the kernel's nr_open: keep what we have
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 32


class Gate:
    """One process's client connections under its limits (``config``). Closed when the server
    stops: connections that finish their handshake afterwards are dropped instead of being handed to
    the application (which is shutting down)."""

    def __init__(self, config: ServerConfig | None = None) -> None:
        self.config = config or ServerConfig()
        self.closed = False
        self.max_connections = self.config.max_connections  # lowered by fit()
        self._all: dict[Connection, None] = {}  # in order of arrival
        self._by_address: dict[str, dict[Connection, None]] = {}
        self._events: dict[str, int] = {}  # since the last report
        self._details: dict[str, str] = {}
        self._reported = -REPORT_INTERVAL_S
        self._since = 0.0  # the first event not reported yet
        self._report_handle: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._all)

    def fit(self) -> None:
        """Raise the open-files limit, and keep the connections within it (with room for the rest)."""
        soft = raise_open_files_limit()
        room = soft - _open_fds() - max(FD_RESERVE_MIN, soft // 8)
        fitted = max(1, min(self.config.max_connections, room))
        if fitted != self.max_connections:
            self.max_connections = fitted
            log.info(
                "at most %d client connections (%d per address; open-files limit %d)",
                fitted,
                self.config.max_connections_per_address,
                soft,
            )

    def admit(self, conn: Connection, address: str) -> bool:
        """Count ``conn`` in, shedding another connection if a limit is reached; ``False``: refused
        (every connection in the way has a request in progress)."""
        conn.address = address
        mine = self._by_address.get(address, {})
        for pool, limit in ((mine, self.config.max_connections_per_address), (self._all, self.max_connections)):
            while len(pool) >= limit:
                victim = _victim(pool)
                if victim is None:
                    self.note("refused")
                    return False
                self.note("shed")
                self.forget(victim)
                victim.abort()
        self._all[conn] = None
        self._by_address.setdefault(address, {})[conn] = None
        return True

    def forget(self, conn: Connection) -> None:
        if conn not in self._all:
            return
        del self._all[conn]
        mine = self._by_address.get(conn.address)
        if mine is not None:
            mine.pop(conn, None)
            if not mine:
                del self._by_address[conn.address]

    def shed_one(self) -> None:
        """Out of file descriptors: free one, if a connection may be shed."""
        victim = _victim(self._all)
        if victim is not None:
            self.note("shed")
            self.forget(victim)
            victim.abort()

    def note(self, event: str, detail: str = "") -> None:
        """Count an event for the next report (at most one per :data:`REPORT_INTERVAL_S`)."""
        if not self._events:
            self._since = time.monotonic()
        self._events[event] = self._events.get(event, 0) + 1
        if detail:
            self._details[event] = detail
        now = time.monotonic()
        if now - self._reported >= REPORT_INTERVAL_S:
            self._report()
        elif self._report_handle is None:
            loop = asyncio.get_running_loop()
            self._report_handle = loop.call_later(self._reported + REPORT_INTERVAL_S - now, self._report)

    def flush(self) -> None:
        """Report now what is not reported yet (when the server stops)."""
        if self._report_handle is not None:
            self._report_handle.cancel()
        self._report()

    def _report(self) -> None:
        self._report_handle = None
        events, details = self._events, self._details
        if not events:
            return
        self._events, self._details = {}, {}
        self._reported = time.monotonic()
        parts = []
        if events.get("shed") or events.get("refused"):
            parts.append(
                f"{_times(events.get('shed', 0), 'connection')} shed and {events.get('refused', 0)} refused at the "
                f"connection limits ({len(self._all)} open; at most {self.max_connections}, "
                f"{self.config.max_connections_per_address} per address)"
            )
        if events.get("accept-failed"):
            failed = _times(events["accept-failed"], "time")
            parts.append(f"accepting a connection failed {failed} ({details['accept-failed']})")
        log.warning("in the last %.0f s: %s", max(1.0, self._reported - self._since), "; ".join(parts))


def _times(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _victim(pool: dict[Connection, None]) -> Connection | None:
    """Whom to shed: a connection closing after a refusal; else the newest idle connection; else the
    oldest that has not completed a request."""
    for conn in pool:
        if conn.lingering:
            return conn
    for conn in reversed(pool):
        if conn.phase is Phase.IDLE and not conn.writing_paused and not conn.closing:
            return conn
    for conn in pool:
        if conn.phase in (Phase.CONNECTING, Phase.HEADERS) and not conn.closing:
            return conn
    return None
