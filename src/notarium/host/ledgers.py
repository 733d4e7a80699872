"""One hosted ledger: its engine process and the data-plane application in front of it.

The engine is a child process (``python -m notarium.server.engine DIR FD``) linked by a socketpair,
exactly as under ``notarium serve`` but the other way round: here the host is the front. The
data-plane application is the one ``notarium serve`` runs (:func:`notarium.server.app.create_app`),
unchanged, with its own :class:`~notarium.server.context.ServerContext` (users, roles, token
issuers, metrics, commit waits) per ledger. The host hands it requests whose ``/ledgers/{name}``
prefix it has stripped (:meth:`HostedLedger.handle`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from aiohttp import web
from yarl import URL

from notarium.errors import ServiceError
from notarium.host.replica import STORE_ENV, ReplicaSettings
from notarium.ledger import EngineConfig
from notarium.ledger.remote import RemoteLedger
from notarium.server.app import create_app
from notarium.server.config import ServerConfig
from notarium.server.context import ServerContext
from notarium.server.forward import Forwarder

log = logging.getLogger("notarium.host")

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class StoreNode:
    """How a hosted ledger runs on PostgreSQL (``notarium host --store``)."""

    dsn: str
    settings: ReplicaSettings
    host_ca_pem: bytes  # the host's TLS CA: what the other host processes' certificates chain to


@dataclass(frozen=True, slots=True)
class LedgerSettings:
    """What every ledger of a host runs with."""

    server: ServerConfig
    engine: EngineConfig


class HostedLedger:
    """A running ledger: engine process, engine link, data-plane app."""

    def __init__(
        self,
        name: str,
        directory: Path,
        process: asyncio.subprocess.Process,
        remote: RemoteLedger,
        ctx: ServerContext,
        runner: web.AppRunner,
    ) -> None:
        self.name = name
        self.directory = directory
        self.process = process
        self.remote = remote
        self.ctx = ctx
        self._runner = runner
        server = runner.server
        if server is None:
            raise ServiceError("the ledger's application did not set up")
        self._handler = server.request_handler
        self._max_body = ctx.config.max_body_bytes
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @classmethod
    async def start(
        cls, name: str, directory: Path, settings: LedgerSettings, replica: StoreNode | None = None
    ) -> HostedLedger:
        """Start the engine process for ``directory`` and the data plane in front of it. With
        ``replica`` (``notarium host --store``), the engine is a node of the ledger's replicated
        service (:mod:`notarium.host.replica`), and writes reaching it while it is a backup are
        forwarded to the host process holding the ledger's lease."""
        ours, theirs = socket.socketpair()
        level = logging.getLogger().getEffectiveLevel()
        engine = {k: v for k, v in asdict(settings.engine).items() if k != "auto_sign"}
        if replica is None:
            module, arg, env = "notarium.server.engine", json.dumps(engine), None
        else:
            module, arg = "notarium.host.replica", replica.settings.to_json(settings.engine)
            env = {**os.environ, STORE_ENV: replica.dsn}
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                module,
                str(directory),
                str(theirs.fileno()),
                str(level),
                arg,
                pass_fds=[theirs.fileno()],
                env=env,
            )
        finally:
            theirs.close()
        try:
            remote = await asyncio.wait_for(RemoteLedger.connect(ours), START_TIMEOUT_S)
            ctx = await ServerContext.create(remote, settings.server)
            if replica is not None:
                # the other host processes present the host's TLS certificate, not a node's
                facts = remote.facts
                ctx.forwarder = Forwarder(facts.node_cert_pem, facts.node_key_pem, replica.host_ca_pem)
            ctx.issuers.start()
            runner = web.AppRunner(create_app(ctx), access_log=None, handler_cancellation=False)
            await runner.setup()
        except BaseException:
            ours.close()
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise
        ctx.join_limits.start()  # removes the ledger's expired Pending nodes (server/joins.py)
        log.info("ledger %s: engine process %d serves %s", name, process.pid, directory)
        return cls(name, directory, process, remote, ctx, runner)

    @property
    def service_cert_pem(self) -> bytes:
        """The service certificate now (governance may renew it)."""
        return self.remote.facts.service_cert_pem

    async def handle(self, request: web.Request, prefix_length: int) -> web.StreamResponse:
        """Serve ``request`` as the ledger's own server would, without the first ``prefix_length``
        characters of its raw path (``/ledgers/{name}``)."""
        path = request.raw_path[prefix_length:] or "/"
        if not path.startswith("/"):
            path = "/" + path
        inner = request.clone(rel_url=URL(path, encoded=True), client_max_size=self._max_body)
        self._inflight += 1
        self._idle.clear()
        try:
            return await self._handler(inner)
        finally:
            self._inflight -= 1
            if not self._inflight:
                self._idle.set()

    async def stop(self) -> int | None:
        """Let requests in flight finish (up to the server's shutdown timeout), then close the
        engine link: the engine signs what was sequenced, closes the ledger and exits. Returns its
        exit status."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), self.ctx.config.shutdown_timeout_s)
        await self._runner.cleanup()
        await self.ctx.issuers.stop()
        await self.ctx.join_limits.stop()
        if self.ctx.forwarder is not None:
            await self.ctx.forwarder.close()
        self.ctx.commits.close()
        await self.remote.aclose()
        try:
            return await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            log.error("ledger %s: the engine process did not stop; killing it", self.name)
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            return await self.process.wait()
