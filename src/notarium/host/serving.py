"""The host's ledgers as one :class:`LedgerManager` (:mod:`notarium.host.manager`), assembled from
one class per concern on top of :class:`Serving`, which holds the state they share:

* :class:`Serving` (here): serving a created ledger (its engine started, watched and started again
  if it dies; a ledger whose secrets are missing is *lost*: not served), the lookups, and the
  long-running operations' bookkeeping;
* :mod:`.provisioning`: create, update, delete and purge, each recorded in the registry first;
* :mod:`.recovering`: a lost ledger put into recovery, served again once its members' shares
  restored its secrets (:mod:`notarium.host.recovery`);
* :mod:`.syncing`: ``notarium host --store``, following the registry shared with the other host
  processes on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import logging
import secrets
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from typing import Any

from notarium.auth.identity import JWT_USER_PREFIX
from notarium.auth.users import User
from notarium.errors import StorageError
from notarium.host.credentials import HostCredentials, HostLayout
from notarium.host.ledgers import HostedLedger, LedgerSettings
from notarium.host.limits import LedgerLimits, LimitBook, ledger_limits
from notarium.host.metrics import HostMetrics
from notarium.host.names import AadPrincipal, CertPrincipal, InvalidRequestError, name_key
from notarium.host.provision import first_users
from notarium.host.recovery import RecoveringLedger, secrets_missing
from notarium.host.registry import (
    CREATING,
    DELETED,
    DELETING,
    FAILED,
    SUCCEEDED,
    LedgerRecord,
    Operation,
    Registry,
    iso,
    utcnow,
)
from notarium.host.replica import EXIT_DEPOSED
from notarium.host.store import StoreRegistry
from notarium.host.storehost import StoreHost
from notarium.host.vault import VaultError
from notarium.types import TxStatus

log = logging.getLogger("notarium.host")

RESTART_MAX_S = 30.0  # the longest wait between two attempts to start a dead engine again


@dataclass(frozen=True, slots=True)
class HostConfig:
    host: str = "127.0.0.1"
    port: int = 9443
    host_names: tuple[str, ...] = ()  # extra names for the TLS server certificate
    advertise: str | None = None  # the public base URL, if not https://host:port
    retention_days: float = 7.0
    purge_interval_s: float = 3600.0
    list_page_size: int = 100
    location: str = "local"  # the location of ledgers whose request names none

    def __post_init__(self) -> None:
        if self.retention_days < 0:
            raise ValueError("the retention must not be negative")
        if self.list_page_size < 1 or self.purge_interval_s <= 0:
            raise ValueError("the list page size and the purge interval must be positive")


class ConflictError(Exception):
    """A management request conflicts with the host's state (ARM 409)."""

    def __init__(self, message: str, code: str = "Conflict") -> None:
        super().__init__(message)
        self.code = code


class Serving:
    """State shared by the parts of :class:`~notarium.host.manager.LedgerManager` (set by its
    ``__init__``), and serving the created ledgers."""

    # what the manager was given
    layout: HostLayout
    credentials: HostCredentials
    registry: Registry | StoreRegistry
    config: HostConfig
    settings: LedgerSettings
    store: StoreHost | None  # notarium host --store: the registry and every ledger on PostgreSQL
    instance: str  # --store: this host process's name in the registry
    base_url: str  # set once the host listens
    limits: LimitBook  # per-ledger settings (host/limits.py)
    metrics: HostMetrics  # GET /metrics: every ledger's figures (host/metrics.py)
    # the ledgers
    ledgers: dict[str, HostedLedger]  # served ledgers by name key
    lost: set[str]  # ledgers whose secrets are missing: not served until recovered
    recovering: dict[str, RecoveringLedger]  # ledgers waiting for their members' shares
    _entering: set[str]  # ledgers being put into recovery
    _lost_bundles: dict[str, str]  # --store: the bundle (digest) a lost ledger could not use
    _starting: set[str]  # --store: ledgers this process is starting
    _provisioning: set[str]  # ledgers this process is creating
    # operations and tasks
    _running: set[str]  # the operations this process runs now
    _unsaved: dict[str, Operation]  # finished while the registry could not be written
    _last_purge: datetime.datetime
    _tasks: set[asyncio.Task[None]]
    _watchers: set[asyncio.Task[None]]  # one per served ledger: restarts a dead engine

    # --- serving a ledger ----------------------------------------------------------------------

    async def _serve(self, record: LedgerRecord) -> None:
        bundle = ""
        if self.store is not None:  # on PostgreSQL: its local directory from its identity bundle, once
            bundle = await asyncio.to_thread(self._bundle_digest, record)
            try:
                await asyncio.to_thread(self.store.materialise, record)
            except VaultError as exc:  # it does not open here: recovered from its log (ledgers recover)
                self._lost(record, str(exc), bundle)
                return
        directory = self.layout.ledger_dir(record.key)
        if secrets_missing(directory):  # its engine could not open it: wait for the operator (recover)
            self._lost(record, bundle=bundle)
            return
        hosted = await self._start(record)
        self.ledgers[record.key] = hosted
        self.lost.discard(record.key)
        self._watch(record, hosted)

    async def _start(self, record: LedgerRecord) -> HostedLedger:
        """Start the ledger's engine and data plane (on PostgreSQL: a node of its replicated service,
        its local directory made from its identity bundle if need be)."""
        if self.store is None:
            return await HostedLedger.start(
                record.name, self.layout.ledger_dir(record.key), self._ledger_settings(record)
            )
        directory = await asyncio.to_thread(self.store.materialise, record)
        return await HostedLedger.start(record.name, directory, self._ledger_settings(record), self.store.node(record))

    def _lost(self, record: LedgerRecord, why: str = "its ledger secrets are missing", bundle: str = "") -> None:
        self.lost.add(record.key)
        if self.store is not None:
            if self._lost_bundles.get(record.key) == bundle:
                return  # tried again at a sync, still the same bundle: said already
            self._lost_bundles[record.key] = bundle
        log.error(
            "ledger %s: %s: it is not served until it is recovered (notarium ledgers recover %s; "
            "docs/operations/recovery.md)",
            record.name,
            why,
            record.name,
        )

    def _bundle_digest(self, record: LedgerRecord) -> str:
        """--store: which identity bundle the registry holds for the ledger now (a worker thread)."""
        if self.store is None or record.schema is None:
            return ""
        blob = self.store.registry.bundle(record.schema)
        return "" if blob is None else hashlib.sha256(blob).hexdigest()

    def _ledger_limits(self, record: LedgerRecord) -> LedgerLimits:
        """The ledger's own settings (its tags); the host's if they no longer fit (a lower ceiling)."""
        try:
            limits = ledger_limits(record.tags, self.settings.server.max_entry_bytes)
        except InvalidRequestError as exc:
            log.warning("ledger %s: its settings are ignored (the host's apply): %s", record.name, exc)
            limits = LedgerLimits()
        self.limits.set(record.key, limits)
        return limits

    def _ledger_settings(self, record: LedgerRecord) -> LedgerSettings:
        """What the ledger runs with: the host's settings, with its own largest entry."""
        limits = self._ledger_limits(record)
        if limits.max_entry_bytes is None:
            return self.settings
        return replace(self.settings, server=replace(self.settings.server, max_entry_bytes=limits.max_entry_bytes))

    def _watch(self, record: LedgerRecord, hosted: HostedLedger) -> None:
        task = asyncio.get_running_loop().create_task(self._restart_when_dead(record, hosted))
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def _restart_when_dead(self, record: LedgerRecord, hosted: HostedLedger) -> None:
        """A ledger's engine that exits while the ledger is served (a crash, a kill) is started
        again: the ledger recovers as after any crash (docs/design/durability.md). Meanwhile its
        requests get 503. Restarts back off from 1 s to RESTART_MAX_S."""
        status = await hosted.process.wait()
        delay = 1.0
        while self.ledgers.get(record.key) is hosted:  # not stopped on purpose (delete, close)
            if status == EXIT_DEPOSED:  # notarium host --store: no longer the primary; a follower again
                log.warning("ledger %s: this host process is no longer its primary; following again", record.name)
            else:
                log.error("ledger %s: its engine exited (status %s); starting it again", record.name, status)
            with contextlib.suppress(StorageError):  # --store, PostgreSQL unreachable: the settings as last read
                record = self.registry.get(record.name) or record  # its settings as they are now
            if secrets_missing(self.layout.ledger_dir(record.key)):  # no engine can open it: no retries
                del self.ledgers[record.key]
                self._lost(record)
                await hosted.stop()
                return
            try:
                fresh = await self._start(record)
            except Exception as exc:  # the engine cannot start now (its error is logged): try again later
                log.error("ledger %s: the engine did not start: %s; next try in %.0f s", record.name, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESTART_MAX_S)
                continue
            if self.ledgers.get(record.key) is not hosted:  # deleted or closed meanwhile
                await fresh.stop()
                return
            self.ledgers[record.key] = fresh
            self._watch(record, fresh)
            await hosted.stop()  # the dead one's application and link
            return

    async def close(self) -> None:
        """Stop every engine (each signs and closes its ledger)."""
        for watcher in list(self._watchers):
            watcher.cancel()
        recovering, self.recovering = self.recovering, {}
        await asyncio.gather(*(r.close() for r in recovering.values()), return_exceptions=True)
        for task in list(self._tasks):
            await asyncio.wait({task}, timeout=60)
        ledgers, self.ledgers = self.ledgers, {}
        await asyncio.gather(*(h.stop() for h in ledgers.values()), return_exceptions=True)

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- lookups -------------------------------------------------------------------------------

    def served(self, name: str) -> HostedLedger | None:
        return self.ledgers.get(name_key(name))

    def find(self, subscription: str, resource_group: str, name: str) -> LedgerRecord | None:
        """The live (not deleted) ledger ``name`` of this subscription and resource group."""
        record = self.registry.get(name)
        if (
            record is None
            or record.gone
            or record.subscription.lower() != subscription.lower()
            or record.resource_group.lower() != resource_group.lower()
        ):
            return None
        return record

    def _operation(self, record: LedgerRecord, action: str) -> Operation:
        op = Operation(secrets.token_hex(16), record.name, action, start_time=iso(utcnow()), owner=self.instance)
        self.registry.put_operation(op)  # before the answer that names it: it outlives a restart
        self._running.add(op.id)
        return op

    def operation(self, op_id: str) -> Operation | None:
        """An operation of this host (any of its processes), finished or not; remembered across restarts."""
        return self._unsaved.get(op_id) or self.registry.get_operation(op_id)

    def _finish(self, op: Operation, error: dict[str, str] | None = None) -> None:
        op.finish(error)
        self._running.discard(op.id)
        try:
            self.registry.put_operation(op)
        except StorageError as exc:  # PostgreSQL unreachable: written by the next sync
            log.warning("operation %s: its end is recorded later (%s)", op.id, exc)
            self._unsaved[op.id] = op

    def _settle(self, op: Operation) -> None:
        """Finish an operation whose host process stopped before it did (a restart; on PostgreSQL,
        the death of another process): a creation fails (the ledger is Failed: never served, and a
        new PUT creates it again from scratch), a deletion completes (the ledger is Deleted)."""
        record = self.registry.get(op.ledger)
        if op.action == "create":
            if record is not None and record.state == CREATING:
                reason = "the host process creating it stopped before it was done"
                failed = replace(record, state=FAILED, failure=reason)
                if self.registry.transition(failed, CREATING):
                    self.registry.record_event("create-failed", failed, None, reason=reason)
                    if self.store is not None and record.schema is not None:
                        self.store.registry.drop_ledger_schema(record.schema)
                record = self.registry.get(op.ledger)
            if record is not None and record.state == SUCCEEDED:
                self._finish(op)
            else:
                why = record.failure if record is not None and record.failure else "the host process stopped"
                self._finish(op, {"code": "ProvisioningFailed", "message": f"The ledger could not be created: {why}"})
        else:
            if record is not None and record.state == DELETING:
                deleted = replace(record, state=DELETED)
                if self.registry.transition(deleted, DELETING):
                    self.registry.record_event("deleted", deleted, None)
            self._finish(op)
        log.warning("operation %s (%s %s) settled: %s", op.id, op.action, op.ledger, op.status)


async def apply_users(hosted: HostedLedger, certs: list[CertPrincipal], aad: list[AadPrincipal]) -> None:
    """Add (or give a new role to) principals of an update in the running ledger."""
    ctx = hosted.ctx
    rows = first_users(certs, aad)
    async with ctx.access_changes:
        txid = None
        for key, value in rows.items():
            if value is None:
                continue
            user = User.from_json(key.decode(), value)
            if user.key.startswith(JWT_USER_PREFIX):  # an AAD principal: the token user /app/users would find
                trusted = ctx.issuers.trusted()
                try:
                    existing = ctx.users.lookup(user.user_id, None, trusted)
                    if existing is not None:
                        user = replace(existing, roles=user.roles)
                    else:
                        new_key, issuer = ctx.users.new_key(user.user_id, None, trusted)
                        user = replace(user, key=new_key, issuer=issuer)
                except ValueError as exc:
                    log.warning("ledger %s: the principal %s was not added: %s", hosted.name, user.user_id, exc)
                    continue
            txid = await ctx.users.put(user)
        if txid is not None and await ctx.commits.wait(txid) != TxStatus.COMMITTED:
            log.error("ledger %s: the users of an update did not commit", hosted.name)
        await ctx.users.reload()
