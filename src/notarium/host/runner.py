"""``notarium host DIR``: one HTTPS listener for the management API and every ledger of the host.

The host process is the single HTTP front (TLS, HTTP, the management API, the data planes); each
ledger's engine is a child process (:mod:`notarium.host.ledgers`). SIGTERM/SIGINT: stop accepting
connections, let requests in flight finish, then stop every engine (each signs what it was sent
and closes its ledger). Deleted ledgers' files are purged at start and every ``purge_interval_s``
once their retention has passed.

With ``--store`` the registry is in PostgreSQL and each ledger is a node of a replicated service
there (:mod:`notarium.host.storehost`): the process listens first (its ledger nodes take forwarded
writes at its address), then starts them, then follows the shared registry every sync interval.
A store that refuses (a wrong DSN, missing permissions) or another host's credentials: exit 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from aiohttp import web
from cryptography.hazmat.primitives.serialization import Encoding

from notarium.durable import lock_exclusive, replace
from notarium.errors import ServiceError
from notarium.host.app import create_host_app
from notarium.host.credentials import HostCredentials, HostLayout, prepare
from notarium.host.ledgers import LedgerSettings
from notarium.host.manager import HostConfig, LedgerManager
from notarium.host.registry import Registry
from notarium.host.store import StoreRegistry
from notarium.host.storehost import StoreHost, StoreSettings, new_instance_id
from notarium.host.vault import key_check
from notarium.server.bodies import HTTP_OPTIONS
from notarium.server.config import url
from notarium.server.front import EXIT_LISTEN_FAILED, _quiet_http_logger
from notarium.server.gate import Gate
from notarium.server.listener import listen
from notarium.server.tls import TLSServerProtocol, server_context

log = logging.getLogger("notarium.host")

Announce = Callable[[str, HostLayout], None]  # the base URL, the host's files
EXIT_STORE_FAILED = 1  # --store: PostgreSQL refused (wrong DSN, missing permissions) or another host's files


def _lock(layout: HostLayout) -> int:
    return lock_exclusive(layout.root / "LOCK", f"{layout.root} is in use by another notarium host")


async def _store_registry(
    layout: HostLayout, credentials: HostCredentials, store: StoreSettings
) -> tuple[StoreRegistry, StoreHost]:
    """The registry on PostgreSQL, its schema made if missing, this process's credentials checked
    against the host's (:class:`ServiceError` when PostgreSQL refuses, or they differ)."""
    registry = StoreRegistry(store.dsn, new_instance_id())
    try:
        ca_fingerprint = hashlib.sha256(credentials.ca_cert.public_bytes(Encoding.DER)).hexdigest()
        await asyncio.to_thread(registry.prepare, credentials.token, ca_fingerprint, key_check(store.store_key))
    except BaseException:
        registry.close()
        raise
    return registry, StoreHost(store, registry, layout, credentials.ca_pem)


async def run_host(
    directory: Path,
    config: HostConfig,
    settings: LedgerSettings,
    *,
    announce: Announce | None = None,
    stop: asyncio.Event | None = None,
    store: StoreSettings | None = None,
) -> int:
    """Serve the host in ``directory`` until ``stop`` is set or SIGTERM/SIGINT arrives. With
    ``store``, its registry and every ledger are on PostgreSQL, shared with the other host
    processes started on it (:mod:`notarium.host.storehost`). Returns the exit status."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    layout = HostLayout(directory.absolute())
    credentials = await asyncio.to_thread(prepare, layout, config.host_names)
    lock = _lock(layout)
    store_host = None
    if store is None:
        registry: Registry | StoreRegistry = Registry.load(layout.root)
    else:
        try:
            registry, store_host = await _store_registry(layout, credentials, store)
        except ServiceError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            os.close(lock)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            return EXIT_STORE_FAILED
    manager = LedgerManager(layout, credentials, registry, config, settings, store_host)
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
        if store_host is None:
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
        if store_host is not None and store is not None:
            # on PostgreSQL the ledgers start once this process listens: their nodes take forwarded writes
            store_host.address = (store.node_address or url(config.host, port)).rstrip("/")
            await manager.resume()
        gc.collect()
        gc.freeze()
        if announce is not None:
            announce(manager.base_url, layout)
        interval = config.purge_interval_s if store is None else store.sync_interval_s
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            if stop.is_set():
                break
            if store_host is None:
                manager.purge()
            else:
                await manager.sync()
        log.info("stopping: no new connections; finishing requests in flight")
        gate.closed = True
        server.close()
        await runner.shutdown()
    finally:
        await runner.cleanup()
        await manager.close()
        if isinstance(registry, StoreRegistry):
            registry.close()
        os.close(lock)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return 0
