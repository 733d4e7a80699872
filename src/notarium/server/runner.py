"""Running the server: open the ledger, listen with TLS, stop cleanly on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from notarium.auth.users import UserStore
from notarium.ledger import EngineConfig, Ledger, open_ledger
from notarium.server.app import create_app, create_identity_app
from notarium.server.config import ServerConfig
from notarium.server.context import CommitWaiter, ServerContext
from notarium.server.metrics import Metrics
from notarium.server.tls import Gate, TLSServerProtocol, server_context

log = logging.getLogger("notarium.server")

Announce = Callable[[str, int], None]


class _QuietLogger(logging.Logger):
    """aiohttp's protocol logger: malformed requests are the client's problem, not an error of
    ours, and aiohttp would log part of the offending bytes (possibly a credential) with a
    traceback. They are logged at DEBUG, without the exception."""

    def error(self, msg: object, *args: object, **kwargs: Any) -> None:
        kwargs.pop("exc_info", None)
        self.debug("rejected a malformed request: %s", msg)

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        self.debug("rejected a malformed request: %s", msg)


def _quiet_http_logger() -> logging.Logger:
    quiet = _QuietLogger("notarium.server.http")
    quiet.parent = log
    return quiet


def build_context(ledger: Ledger, config: ServerConfig, loop: asyncio.AbstractEventLoop) -> ServerContext:
    metrics = Metrics()
    metrics.bind(lambda: ledger.committed.seqno, lambda: ledger.last_sequenced, ledger.ledger_bytes)
    ctx = ServerContext(ledger, UserStore(ledger), config, metrics, CommitWaiter(ledger, loop))
    ctx.collections.update(ledger.collections())
    return ctx


async def serve(
    directory: Path,
    config: ServerConfig,
    engine: EngineConfig | None = None,
    *,
    announce: Announce | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve ``directory`` until ``stop`` is set or SIGTERM/SIGINT arrives."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ledger = open_ledger(directory, engine)
    try:
        ctx = build_context(ledger, config, loop)
        runner = web.AppRunner(
            create_app(ctx),
            access_log=None,
            handler_cancellation=False,  # a write in progress always finishes
            max_line_size=config.max_header_bytes,
            max_field_size=config.max_header_bytes,
            shutdown_timeout=config.shutdown_timeout_s,
            logger=_quiet_http_logger(),
        )
        await runner.setup()
        tls = server_context([ledger.identity.node_cert], ledger.identity.node_key)
        gate = Gate()
        server = await loop.create_server(
            lambda: TLSServerProtocol(tls, runner.server, gate),  # type: ignore[arg-type]
            config.host,
            config.port,
            reuse_address=True,
            backlog=1024,
        )
        plain = None
        if config.identity_http_port is not None:
            plain_runner = web.AppRunner(create_identity_app(ctx), access_log=None)
            await plain_runner.setup()
            plain = web.TCPSite(plain_runner, config.host, config.identity_http_port)
            await plain.start()
        port = server.sockets[0].getsockname()[1]
        if announce is not None:
            announce(config.host, port)
        await stop.wait()
        log.info("stopping: no new connections; finishing requests in flight")
        gate.closed = True
        server.close()
        if plain is not None:
            await plain.stop()
        await runner.shutdown()
        await runner.cleanup()
        ctx.commits.close()
    finally:
        ledger.close()  # signs what is pending and completes the chunk
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
