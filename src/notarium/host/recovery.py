"""Recovering one hosted ledger whose ledger secrets are lost, while the host serves the others.

The flow is ``notarium serve DIR --recover`` (:mod:`notarium.server.recovery`), run inside the host
for one ledger (docs/operations/recovery.md#a-ledger-of-a-host):

1. A ledger whose sealed secrets are missing is not started (its engine could not open it): it
   **needs recovery**; its data plane answers 503 saying so, ``/ledgerIdentity/{name}`` still
   answers its service certificate.
2. The operator puts it into recovery (``notarium ledgers recover NAME``, the management action
   ``POST …/ledgers/{name}/recover``): its engine is stopped if it still runs, the ledger's files are
   read for its recovery shares (in a worker thread), and ``/ledgers/{name}/…`` serves the recovery
   endpoints of ``serve --recover`` (``/gov/recovery/status``, ``…/encrypted-shares/{memberId}``,
   ``…/members/{memberId}:recover``; anything else 503).
3. The ledger's members fetch, decrypt (locally) and submit their shares through the host
   (``notarium recovery share|submit`` at the ledger's URI). At the threshold the secrets are
   restored and sealed, the ledger moves to a new service identity endorsing the previous one
   (:func:`notarium.ledger.service.recover_service_identity`, in a worker thread), and the host
   serves it again.

On PostgreSQL (``host --store``) the ledger's log is in its schema and its identity in a bundle
sealed under the store key: a ledger whose bundle no longer opens (every process lost its
``store_key``) or whose secrets are gone is recovered from the log
(:mod:`notarium.cluster.storerecovery`, :meth:`RecoveringLedger.start_store`): its local directory
is made anew from the log under a new identity, and once the shares are in, the identity change is
recorded in the log by this process (holding the ledger's lease) and the new identity is sealed
into the ledger's bundle for the other processes.

Nothing of this stops or slows the host's other ledgers beyond sharing its CPU. What is in flight
is kept in memory: a host restarted during a recovery finds the ledger needing recovery again
(shares submitted before the restart must be submitted again, as with ``serve --recover``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from yarl import URL

from notarium.errors import ServiceError
from notarium.ledger.layout import Layout
from notarium.ledger.restore import DirectoryRecovery
from notarium.ledger.service import recover_service_identity
from notarium.server.errors import ApiError, error_response
from notarium.server.recovery import MAX_SHARE_BODY, recovery_app

log = logging.getLogger("notarium.host")

WAITING = "WaitingForRecoveryShares"
OPENING = "Opening"


def secrets_missing(directory: Path) -> bool:
    """Whether a ledger directory has lost its sealed ledger secrets (it cannot be opened)."""
    return not Layout(directory).sealed_ledger_secret.exists()


def needs_recovery_response(name: str) -> web.Response:
    """The data plane of a ledger that needs recovery and is not recovering yet."""
    return error_response(
        503,
        "ServiceUnavailable",
        f"The ledger {name[:64]} cannot be opened: its ledger secrets are missing. Its host operator puts it into "
        "recovery (notarium ledgers recover NAME); its members then submit their recovery shares.",
    )


@dataclass(frozen=True, slots=True)
class StoreTarget:
    """Where a ledger of ``host --store`` lives: its log's schema, and this process's node address."""

    dsn: str
    schema: str
    address: str
    lease_ttl_s: float


def _prepare_store(directory: Path, target: StoreTarget) -> None:
    """The ledger's local directory made anew from its log, under a new identity (a worker thread)."""
    from notarium.cluster.storerecovery import MARKER, prepare_store_recovery  # noqa: PLC0415
    from notarium.ledger.storage.postgres import PostgresLog  # noqa: PLC0415

    with PostgresLog(target.dsn, schema=target.schema) as store:
        lease = store.lease()
        if lease.holder is not None and lease.expires_in_s is not None and lease.expires_in_s > 0:
            raise ServiceError(
                "a node of it still leads it (its lease is held): a host process serves it, so its secrets are not "
                "lost; if that process just died, retry once the lease has expired"
            )
        if directory.exists() and not (directory / MARKER).is_file():
            shutil.rmtree(directory)  # a copy that cannot be opened: the log holds the ledger
        prepare_store_recovery(directory, store, None)


def _finish_store(directory: Path, target: StoreTarget) -> None:
    from notarium.cluster.storerecovery import finish_store_recovery  # noqa: PLC0415
    from notarium.ledger.storage.postgres import PostgresLog  # noqa: PLC0415

    with PostgresLog(target.dsn, schema=target.schema) as store:
        finish_store_recovery(directory, store, target.address, target.lease_ttl_s)


class RecoveringLedger:
    """A ledger in recovery: the recovery endpoints under its prefix, until the threshold."""

    store: StoreTarget | None = None

    def __init__(
        self, name: str, directory: Path, recovery: DirectoryRecovery, runner: web.AppRunner, done: asyncio.Event
    ) -> None:
        self.name = name
        self.directory = directory
        self.recovery = recovery
        self.state = WAITING
        self._runner = runner
        server = runner.server
        if server is None:
            raise ServiceError("the recovery application did not set up")
        self._handler = server.request_handler
        self._done = done  # set by the recovery endpoints once the secrets are restored and sealed
        self._closed = asyncio.Event()

    @classmethod
    async def start(cls, name: str, directory: Path) -> RecoveringLedger:
        """Read the ledger's recovery shares (a worker thread) and set up its recovery endpoints;
        :class:`~notarium.errors.ServiceError` if its files record none."""
        recovery = await asyncio.to_thread(DirectoryRecovery, directory)
        done = asyncio.Event()
        runner = web.AppRunner(recovery_app(recovery, Layout(directory), done), access_log=None)
        await runner.setup()
        ledger = cls(name, directory, recovery, runner, done)
        log.warning(
            "ledger %s: recovering: waiting for %d of %d members' recovery shares",
            name,
            recovery.threshold,
            len(recovery.members),
        )
        return ledger

    @classmethod
    async def start_store(cls, name: str, directory: Path, target: StoreTarget) -> RecoveringLedger:
        """:meth:`start` for a ledger of ``host --store``: its directory first made from its log."""
        await asyncio.to_thread(_prepare_store, directory, target)
        ledger = await cls.start(name, directory)
        ledger.store = target
        return ledger

    @property
    def service_cert_pem(self) -> bytes:
        return Layout(self.directory).service_cert.read_bytes()

    def status(self) -> dict[str, Any]:
        return {
            "status": self.state,
            "threshold": self.recovery.threshold,
            "submitted": len(self.recovery.submitted),
            "members": self.recovery.members,
        }

    async def handle(self, request: web.Request, prefix_length: int) -> web.StreamResponse:
        """Serve ``request`` on the recovery endpoints, without its ``/ledgers/{name}`` prefix."""
        if self.state != WAITING:
            return error_response(
                503, "ServiceUnavailable", f"The ledger {self.name[:64]} is opening after its recovery; retry."
            )
        path = request.raw_path[prefix_length:] or "/"
        if not path.startswith("/"):
            path = "/" + path
        inner = request.clone(rel_url=URL(path, encoded=True), client_max_size=MAX_SHARE_BODY)
        try:
            return await self._handler(inner)
        except ApiError as exc:
            return exc.response()

    async def wait(self) -> bool:
        """Until the secrets are restored (True) or the recovery is given up (False)."""
        done, closed = asyncio.ensure_future(self._done.wait()), asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait({done, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            done.cancel()
            closed.cancel()
        return self._done.is_set() and not self._closed.is_set()

    async def open(self) -> bytes:
        """Once the shares are in (``done``): stop serving the recovery endpoints and move the
        ledger to a new service identity (a worker thread). Returns the new service certificate."""
        self.state = OPENING
        await self._runner.cleanup()
        if self.store is not None:  # its new identity was made first: now recorded in its log
            await asyncio.to_thread(_finish_store, self.directory, self.store)
            log.warning("ledger %s: recovered from its log: new service identity recorded", self.name)
            return self.service_cert_pem
        cert = await asyncio.to_thread(recover_service_identity, self.directory)
        log.warning("ledger %s: recovered: new service identity %s", self.name, cert.subject.rfc4514_string())
        return self.service_cert_pem

    async def close(self) -> None:
        """Give up (the ledger is deleted, or the host stops): the shares submitted are forgotten."""
        self.state = OPENING
        self._closed.set()
        with contextlib.suppress(Exception):
            await self._runner.cleanup()
