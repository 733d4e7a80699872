"""Running the server: the engine in this process, the HTTP front in a child process.

This process opens the ledger and serves it to the front over a socketpair
(:mod:`notarium.ledger.remote`); the front (:mod:`notarium.server.front`) does TLS, HTTP and
authentication. SIGTERM/SIGINT stop the front first (it finishes requests in flight), then the
ledger is closed, which signs what is pending. If the front dies, the engine closes too; if this
process dies, the front sees the socket close and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from notarium.errors import ServiceError
from notarium.ledger import EngineConfig, open_ledger
from notarium.ledger.remote import EngineService
from notarium.ledger.service import recover_service_identity
from notarium.server.config import ServerConfig
from notarium.server.recovery import RecoveryAnnounce, wait_for_shares

log = logging.getLogger("notarium.server")

Announce = Callable[[str, int, int | None], None]  # host, TLS port, plain identity port
_KILL_GRACE_S = 5.0


async def serve(
    directory: Path,
    config: ServerConfig,
    engine: EngineConfig | None = None,
    *,
    announce: Announce | None = None,
    stop: asyncio.Event | None = None,
    recover: bool = False,
    announce_recovery: RecoveryAnnounce | None = None,
) -> None:
    """Serve ``directory`` until ``stop`` is set or SIGTERM/SIGINT arrives. With ``recover``, first
    wait for the members' recovery shares (:mod:`notarium.server.recovery`), on the same port."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    listening: asyncio.Future[tuple[int, int | None]] = loop.create_future()

    def listening_on(ports: tuple[int, int | None]) -> None:
        if not listening.done():
            listening.set_result(ports)

    def notice(what: str, args: tuple[Any, ...]) -> None:
        if what == "listening":
            plain = int(args[1]) if len(args) > 1 and args[1] is not None else None
            loop.call_soon_threadsafe(listening_on, (int(args[0]), plain))

    if recover:
        try:
            port = await wait_for_shares(directory, config, stop, announce_recovery)
        finally:
            if stop.is_set():
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
        if port is None:
            return
        # a recovered service starts under a new identity that endorses the previous one
        new_cert = await asyncio.to_thread(recover_service_identity, directory)
        log.warning("recovered: new service identity %s (clients must pin the new service_cert.pem)", new_cert.subject)
        config = replace(config, port=port)
    # the front sequences (see notarium.ledger.remote): the engine signs only when told
    ledger = open_ledger(directory, replace(engine or EngineConfig(), auto_sign=False))
    gc.collect()
    gc.freeze()  # the engine's long-lived objects: out of the collector's way (see front.py)
    ours, theirs = socket.socketpair()
    service = EngineService(ledger, ours, config, notice)
    front: asyncio.subprocess.Process | None = None
    try:
        service.start()
        level = logging.getLogger().getEffectiveLevel()
        front = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "notarium.server.front", str(theirs.fileno()), str(level), pass_fds=[theirs.fileno()]
        )
        theirs.close()
        exited = asyncio.ensure_future(front.wait())
        stopping = asyncio.ensure_future(stop.wait())
        started: set[asyncio.Future[Any]] = {listening, exited, stopping}
        await asyncio.wait(started, return_when=asyncio.FIRST_COMPLETED)
        if listening.done() and announce is not None:
            announce(config.host, *listening.result())
        await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not exited.done():
            log.info("stopping: no new connections; finishing requests in flight")
            front.send_signal(signal.SIGTERM)
            await asyncio.wait({exited}, timeout=config.shutdown_timeout_s + _KILL_GRACE_S)
        elif not stop.is_set():
            what = "could not start" if not listening.done() else "stopped unexpectedly"
            raise ServiceError(f"the HTTP front process {what} (exit status {front.returncode})")
    finally:
        theirs.close()
        if front is not None and front.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                front.kill()
            await front.wait()
        service.stop()
        ledger.close()  # signs what is pending and completes the chunk
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
