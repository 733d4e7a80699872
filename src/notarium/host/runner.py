"""``notarium host DIR``: one HTTPS listener for the management API and every ledger of the host.

The host process is the single HTTP front (TLS, HTTP, the management API, the data planes); each
ledger's engine is a child process (:mod:`notarium.host.ledgers`). SIGTERM/SIGINT: stop accepting
connections, let requests in flight finish, then stop every engine (each signs what it was sent
and closes its ledger). Deleted ledgers' files are purged at start and every ``purge_interval_s``
once their retention has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from notarium.errors import ServiceError
from notarium.host.app import create_host_app
from notarium.host.credentials import HostLayout, prepare
from notarium.host.ledgers import LedgerSettings
from notarium.host.manager import HostConfig, LedgerManager
from notarium.host.registry import Registry
from notarium.ledger.durable import lock_exclusive, replace
from notarium.server.bodies import HTTP_OPTIONS
from notarium.server.config import url
from notarium.server.connections import Gate, listen
from notarium.server.front import EXIT_LISTEN_FAILED, _quiet_http_logger
from notarium.server.tls import TLSServerProtocol, server_context

log = logging.getLogger("notarium.host")

Announce = Callable[[str, HostLayout], None]  # the base URL, the host's files


def _lock(layout: HostLayout) -> int:
    return lock_exclusive(layout.root / "LOCK", f"{layout.root} is in use by another notarium host")


async def run_host(
    directory: Path,
    config: HostConfig,
    settings: LedgerSettings,
    *,
    announce: Announce | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Serve the host in ``directory`` until ``stop`` is set or SIGTERM/SIGINT arrives."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    layout = HostLayout(directory.absolute())
    credentials = await asyncio.to_thread(prepare, layout, config.host_names)
    lock = _lock(layout)
    manager = LedgerManager(layout, credentials, Registry.load(layout.root), config, settings)
    runner = web.AppRunner(
        create_host_app(manager),
        access_log=None,
        handler_cancellation=False,  # a write in progress always finishes
        max_line_size=settings.server.max_header_bytes,
        max_field_size=settings.server.max_header_bytes,
        shutdown_timeout=settings.server.shutdown_timeout_s,
        logger=_quiet_http_logger(),
        **HTTP_OPTIONS,
    )
    server = None
    try:
        await manager.resume()
        await runner.setup()
        handler = runner.server
        if handler is None:
            raise ServiceError("the host application did not set up")
        tls = server_context([credentials.server_cert], credentials.server_key)
        gate = Gate(settings.server)
        try:
            server = await listen(config.host, config.port, lambda: TLSServerProtocol(tls, handler, gate), gate)
        except OSError as exc:
            print(f"error: cannot listen on {config.host} port {config.port}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_LISTEN_FAILED
        port = server.sockets[0].getsockname()[1]
        manager.base_url = (config.advertise or url(config.host, port)).rstrip("/")
        replace(layout.endpoint, (manager.base_url + "\n").encode())
        gc.collect()
        gc.freeze()
        if announce is not None:
            announce(manager.base_url, layout)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), config.purge_interval_s)
            if not stop.is_set():
                manager.purge()
        log.info("stopping: no new connections; finishing requests in flight")
        gate.closed = True
        server.close()
        await runner.shutdown()
    finally:
        await runner.cleanup()
        await manager.close()
        os.close(lock)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return 0
