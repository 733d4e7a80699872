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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from notarium.cluster.join import ENGINE_CALLS
from notarium.cluster.node import NodeSettings, ReplicaNode
from notarium.cluster.sealing import NodeCourier
from notarium.errors import ServiceError, StoreUnavailableError
from notarium.ledger import EngineConfig, Ledger, open_ledger
from notarium.ledger.engine_service import EngineService
from notarium.ledger.service import recover_service_identity
from notarium.server.config import ServerConfig, url
from notarium.server.recovery import RecoveryAnnounce, wait_for_shares

log = logging.getLogger("notarium.server")

Announce = Callable[[str, int, int | None], None]  # host, TLS port, plain identity port
KILL_GRACE_S = 5.0


@dataclass(frozen=True, slots=True)
class Replication:
    """``notarium serve --store``: a node of a replicated service (docs/design/ha.md)."""

    dsn: str
    advertise: str | None = None  # https://host:port the other nodes forward writes to
    lease_ttl_s: float = 3.0
    schema: str = "notarium"  # the PostgreSQL schema of the log (a hosted ledger's own: docs/design/host.md)


async def serve(
    directory: Path,
    config: ServerConfig,
    engine: EngineConfig | None = None,
    *,
    announce: Announce | None = None,
    stop: asyncio.Event | None = None,
    recover: bool = False,
    announce_recovery: RecoveryAnnounce | None = None,
    replication: Replication | None = None,
) -> None:
    """Serve ``directory`` until ``stop`` is set or SIGTERM/SIGINT arrives. With ``recover``, first
    wait for the members' recovery shares (:mod:`notarium.server.recovery`), on the same port.
    With ``replication``, serve as a node of a replicated service; a node deposed as primary starts
    again as a follower."""
    while True:
        again, port = await _serve_once(
            directory, config, engine, announce, stop, recover, announce_recovery, replication
        )
        if not again:
            return
        log.warning("starting again as a follower")
        recover = False
        if port is not None:
            config = replace(config, port=port)  # the same address: other nodes and clients know it


async def _serve_once(
    directory: Path,
    config: ServerConfig,
    engine: EngineConfig | None,
    announce: Announce | None,
    stop: asyncio.Event | None,
    recover: bool,
    announce_recovery: RecoveryAnnounce | None,
    replication: Replication | None,
) -> tuple[bool, int | None]:
    """One run of :func:`serve`: whether it should start again (a deposed primary), and the TLS port
    it listened on."""
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
            return False, None
        config = replace(config, port=port)
        if replication is not None:  # its new identity was made before the shares: now recorded in the log
            await asyncio.to_thread(_record_store_recovery, directory, replication, config)
        else:
            # a recovered service starts under a new identity that endorses the previous one
            new_cert = await asyncio.to_thread(recover_service_identity, directory)
            log.warning(
                "recovered: new service identity %s (clients must pin the new service_cert.pem)", new_cert.subject
            )
    # the front sequences (see notarium.ledger.remote): the engine signs only when told
    engine = replace(engine or EngineConfig(), auto_sign=False)
    deposed = asyncio.Event()
    node = None
    if replication is None:
        ledger = open_ledger(directory, engine)
    else:
        node, ledger = await asyncio.to_thread(_open_node, directory, engine, replication, config)
    gc.collect()
    gc.freeze()  # the engine's long-lived objects: out of the collector's way (see front.py)
    ours, theirs = socket.socketpair()
    service = EngineService(ledger, ours, config, notice, calls=ENGINE_CALLS)
    front: asyncio.subprocess.Process | None = None
    try:
        service.start()
        if node is not None:
            service.role = node.role()
            node.on_role = service.announce_role
            node.on_deposed = lambda: loop.call_soon_threadsafe(deposed.set)
        level = logging.getLogger().getEffectiveLevel()
        front = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "notarium.server.front", str(theirs.fileno()), str(level), pass_fds=[theirs.fileno()]
        )
        theirs.close()
        exited = asyncio.ensure_future(front.wait())
        stopping = asyncio.ensure_future(stop.wait())
        started: set[asyncio.Future[Any]] = {listening, exited, stopping}
        await asyncio.wait(started, return_when=asyncio.FIRST_COMPLETED)
        if listening.done() and node is not None and replication is not None:
            # the replication thread starts once this node can take forwarded writes
            if replication.advertise is None:
                address = url(config.host, listening.result()[0])
                node.settings = replace(node.settings, address=address)
            node.start()
        if listening.done() and announce is not None:
            announce(config.host, *listening.result())
        lost = asyncio.ensure_future(deposed.wait())
        await asyncio.wait({exited, stopping, lost}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        lost.cancel()
        if not exited.done():
            log.info("stopping: no new connections; finishing requests in flight")
            front.send_signal(signal.SIGTERM)
            await asyncio.wait({exited}, timeout=config.shutdown_timeout_s + KILL_GRACE_S)
        elif not stop.is_set() and not deposed.is_set():
            what = "could not start" if not listening.done() else "stopped unexpectedly"
            raise ServiceError(f"the HTTP front process {what} (exit status {front.returncode})")
    finally:
        theirs.close()
        if front is not None and front.returncode is None:
            log.warning("the HTTP front did not stop in time; killing it")
            with contextlib.suppress(ProcessLookupError):
                front.kill()
            await front.wait()
        if node is not None:
            node.stop()
            if not deposed.is_set():
                await asyncio.to_thread(_close_primary, node)
        service.stop()
        ledger.close()  # signs what is pending and completes the chunk
        if node is not None:
            node.store.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return deposed.is_set() and not stop.is_set(), listening.result()[0] if listening.done() else None


def _open_node(
    directory: Path, engine: EngineConfig, replication: Replication, config: ServerConfig
) -> tuple[ReplicaNode, Ledger]:
    """Open a replicated node: its local replica (a follower), checked against the log and caught up.

    PostgreSQL being unreachable does not stop it: the node then serves what it has verified, not
    ready, and its replication thread checks and catches up once PostgreSQL answers (a deposed
    primary starts again this way while PostgreSQL is down). A log that lost this node's committed
    transactions, or any other refusal, does stop it."""
    from notarium.ledger.storage.postgres import PostgresLog  # noqa: PLC0415  (psycopg only when used)

    store = PostgresLog(replication.dsn, connect=False, schema=replication.schema)
    try:
        # local files are a verified cache of the log: no fsync of their own (the log is durable)
        ledger = open_ledger(directory, replace(engine, fsync=False), replica=store, courier=NodeCourier())
    except BaseException:
        store.close()
        raise
    try:
        address = replication.advertise or url(config.host, config.port)
        settings = NodeSettings(node_id=ledger.node_id, address=address, lease_ttl_s=replication.lease_ttl_s)
        node = ReplicaNode(ledger, store, settings)
        try:
            node.check(refuse=True)
            node.follow()  # up to date before serving reads (a verification failure: reads of what was verified)
        except StoreUnavailableError as exc:
            node.store_unreachable(exc)
            log.warning(
                "the replicated log (PostgreSQL) cannot be reached: %s; serving what this node has verified "
                "(up to seqno %d), not ready, until it can",
                " ".join(str(exc).split()),
                ledger.committed.seqno,
            )
            return node, ledger
    except BaseException:
        ledger.close()
        store.close()
        raise
    log.info("node %s… follows %s from seqno %d", ledger.node_id[:12], store.redacted_dsn, ledger.committed.seqno)
    return node, ledger


def _record_store_recovery(directory: Path, replication: Replication, config: ServerConfig) -> None:
    """``serve --store --recover``, once the secrets are restored: the new identity into the log
    (:func:`notarium.cluster.storerecovery.finish_store_recovery`)."""
    from notarium.cluster.storerecovery import finish_store_recovery  # noqa: PLC0415  (psycopg only when used)
    from notarium.ledger.storage.postgres import PostgresLog  # noqa: PLC0415

    with PostgresLog(replication.dsn, schema=replication.schema) as store:
        address = replication.advertise or url(config.host, config.port)
        finish_store_recovery(directory, store, address, replication.lease_ttl_s)


def _close_primary(node: ReplicaNode) -> None:
    """A primary stopping cleanly signs what it sequenced (the ledger's close) and hands the lease on."""
    node.ledger.close()
    node.release()
