"""The engine process's side of the local socket (the front's side, and the wire format, is
:mod:`notarium.ledger.remote`): :class:`EngineService` runs the front's calls on the
:class:`~notarium.ledger.engine.Ledger` and sends back answers and commit notices.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
from collections.abc import Callable, Mapping
from typing import Any

from notarium.errors import LedgerError, NotariumError, ServiceError
from notarium.ledger.engine import Ledger
from notarium.ledger.identity import cert_pem, private_pem
from notarium.ledger.remote import (
    CALLS,
    FRAME_HEADER,
    MAX_FRAME,
    EngineFacts,
    EngineMetrics,
    EngineStatus,
    Role,
    frame,
    load_frame,
    portable_error,
)

log = logging.getLogger("notarium.ledger.remote")


class EngineService:
    """Serves one front over ``sock``: a reader thread runs the calls in arrival order, a writer thread
    sends answers and commit notices (so the engine's flusher never waits on the front)."""

    def __init__(
        self,
        ledger: Ledger,
        sock: socket.socket,
        settings: Any = None,
        control: Callable[[str, tuple[Any, ...]], Any] | None = None,
        calls: Mapping[str, Callable[..., Any]] | None = None,
    ) -> None:
        """``calls``: engine calls beyond the ledger's own methods (:data:`CALLS`), each called with
        the ledger first (e.g. ``admit_node``: :data:`notarium.cluster.join.ENGINE_CALLS`)."""
        self._ledger = ledger
        self._sock = sock
        self._settings = settings
        self._control = control  # front → engine process notices ("listening", port)
        self._calls = dict(calls or {})
        self._out: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self.role: Role | None = None  # set (and announced) by a replicated node's replication thread
        self._reader = threading.Thread(target=self._read_loop, name="engine-rpc", daemon=True)
        self._writer = threading.Thread(target=self._write_loop, name="engine-rpc-send", daemon=True)
        self.disconnected = threading.Event()

    def start(self) -> None:
        self._ledger.add_commit_listener(self._on_commit)
        self._writer.start()
        self._reader.start()

    def stop(self) -> None:
        """Stop answering (the front is gone or the engine is closing)."""
        with contextlib.suppress(ValueError):
            self._ledger.remove_commit_listener(self._on_commit)
        self._out.put(None)
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._reader.join(5)
        self._writer.join(5)
        self._sock.close()

    def _status(self) -> EngineStatus:
        return EngineStatus(self._ledger.committed, self._ledger.healthy, self._ledger.state_version)

    def announce_role(self, role: Role) -> None:
        """A replicated node's role changed: the front sequences from ``role`` or forwards writes."""
        self.role = role
        self._out.put(frame(("p", role)))

    def _on_commit(self, _seqno: int) -> None:
        self._out.put(frame(("s", self._status())))

    def _facts(self) -> EngineFacts:
        ident = self._ledger.identity
        return EngineFacts(
            self._ledger.service,
            cert_pem(ident.node_cert),
            private_pem(ident.node_key),
            cert_pem(ident.service_cert),
            self._status(),
            self._ledger.view,
            self._ledger.last_sequenced + 1,
            self._ledger.config,
            self._settings,
            ledger_dir=self._ledger.layout.ledger_dir,
            role=self.role,
            previous_endorsements=tuple(cert_pem(c) for c in self._ledger.previous_identity_endorsements),
        )

    def _metrics(self) -> EngineMetrics:
        ledger = self._ledger
        return EngineMetrics(ledger.committed.seqno, ledger.last_sequenced, ledger.ledger_bytes())

    def _call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if method in CALLS:
            return getattr(self._ledger, method)(*args, **kwargs)
        if method in self._calls:
            return self._calls[method](self._ledger, *args, **kwargs)
        if method == "facts":
            return self._facts()
        if method == "metrics":
            return self._metrics()
        if method == "notice" and self._control is not None:
            return self._control(args[0], tuple(args[1:]))
        raise LedgerError(f"unknown engine call {method!r}")

    def _read_loop(self) -> None:
        stream = self._sock.makefile("rb")
        try:
            while True:
                header = stream.read(FRAME_HEADER.size)
                if len(header) < FRAME_HEADER.size:
                    break
                (size,) = FRAME_HEADER.unpack(header)
                if size > MAX_FRAME:
                    raise ServiceError("oversized frame from the front")
                data = stream.read(size)
                if len(data) < size:
                    break
                answers = []
                for call_id, method, args, kwargs in load_frame(data):
                    try:
                        value = self._call(method, args, kwargs)
                    except Exception as exc:  # each call gets its own answer
                        if not isinstance(exc, NotariumError):
                            log.exception("engine call %s failed", method)
                        if call_id:
                            answers.append((call_id, False, portable_error(exc)))
                        else:
                            log.error("a sequenced %s failed: %s", method, exc)
                            self._out.put(frame(("x", f"{method} failed in the engine: {exc}")))
                    else:
                        if call_id:
                            answers.append((call_id, True, value))
                if answers:
                    self._out.put(frame(("r", answers)))
        except (OSError, ServiceError):
            pass
        finally:
            stream.close()
            self.disconnected.set()

    def _write_loop(self) -> None:
        while True:
            data = self._out.get()
            if data is None:
                return
            try:
                self._sock.sendall(data)
            except OSError:
                self.disconnected.set()
                return
