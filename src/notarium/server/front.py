"""The HTTP front process: TLS, HTTP, authentication; the ledger is reached through the engine link.

Started by :func:`notarium.server.runner.serve` as ``python -m notarium.server.front FD LOGLEVEL``
with one end of a socketpair; everything else (settings, TLS credentials) arrives over it. It stops
on SIGTERM/SIGINT (finishing requests in flight) or when the engine process goes away.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
import sys
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from notarium.ledger.remote import RemoteLedger
from notarium.server.app import create_app, create_identity_app
from notarium.server.bodies import HTTP_OPTIONS
from notarium.server.config import LOG_FORMAT, ServerConfig
from notarium.server.connections import PlainServerProtocol
from notarium.server.context import ServerContext
from notarium.server.gate import Gate
from notarium.server.listener import listen
from notarium.server.tls import TLSServerProtocol, server_context

log = logging.getLogger("notarium.server")

EXIT_LISTEN_FAILED = 3


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


def _tls(ledger: RemoteLedger) -> Any:
    cert = x509.load_pem_x509_certificate(ledger.facts.node_cert_pem)
    key = load_pem_private_key(ledger.facts.node_key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError("the node key is not an EC key")
    return server_context([cert], key)


async def run_front(sock: socket.socket) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ledger = await RemoteLedger.connect(sock)
    config: ServerConfig = ledger.facts.settings
    ctx = await ServerContext.create(ledger, config)
    ctx.issuers.start()  # re-fetches issuers' keys now and then
    ctx.join_limits.start()  # removes expired Pending nodes (on the primary)
    runner = web.AppRunner(
        create_app(ctx),
        access_log=None,
        handler_cancellation=False,  # a write in progress always finishes
        max_line_size=config.max_header_bytes,
        max_field_size=config.max_header_bytes,
        shutdown_timeout=config.shutdown_timeout_s,
        logger=_quiet_http_logger(),
        **HTTP_OPTIONS,
    )
    await runner.setup()
    app_server = runner.server
    if app_server is None:
        raise RuntimeError("the app did not set up")
    gate = Gate(config)  # both listeners' connections: one budget of file descriptors
    plain = None
    tls = [_tls(ledger)]

    def renewed() -> None:  # certificates renewed by governance: new connections get the new ones
        tls[0] = _tls(ledger)

    ctx.effects.renewed = renewed
    try:
        server = await listen(config.host, config.port, lambda: TLSServerProtocol(tls[0], app_server, gate), gate)
        if config.identity_http_port is not None:
            plain_runner = web.AppRunner(
                create_identity_app(ctx), access_log=None, logger=_quiet_http_logger(), **HTTP_OPTIONS
            )
            await plain_runner.setup()
            handler = plain_runner.server
            if handler is None:
                raise RuntimeError("the identity app did not set up")
            plain = await listen(
                config.host, config.identity_http_port, lambda: PlainServerProtocol(handler, gate), gate
            )
    except OSError as exc:
        where = f"{config.host} port {config.port}"
        print(f"error: cannot listen on {where}: {exc.strerror or exc}", file=sys.stderr, flush=True)
        return EXIT_LISTEN_FAILED
    # everything loaded so far lives as long as the process: keep it out of the collector's way
    # (a full collection would otherwise walk every module's objects, many times a second)
    gc.collect()
    gc.freeze()
    plain_port = plain.sockets[0].getsockname()[1] if plain is not None else None
    await ledger.notice("listening", server.sockets[0].getsockname()[1], plain_port)
    engine_gone = asyncio.ensure_future(ledger.closed.wait())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({engine_gone, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if engine_gone.done() and not stopping.done():
        log.error("the ledger engine process stopped; closing the front")
    log.info("stopping: no new connections; finishing requests in flight")
    gate.closed = True
    server.close()
    if plain is not None:
        plain.close()
    await runner.shutdown()
    await runner.cleanup()
    await ctx.issuers.stop()
    await ctx.join_limits.stop()
    if ctx.forwarder is not None:
        await ctx.forwarder.close()
    ctx.commits.close()
    await ledger.aclose()
    for task in (engine_gone, stopping):
        task.cancel()
    return 0


def main(argv: list[str]) -> int:
    fd, level = int(argv[0]), int(argv[1])
    logging.basicConfig(level=level, format=LOG_FORMAT)
    return asyncio.run(run_front(socket.socket(fileno=fd)))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
