"""The host's ledgers over their lifetime: create, update, delete, purge, and serving them.

Every change is recorded in the registry (and its event log) before it takes effect. Creation
and deletion are long-running operations (:class:`Operation`): the management API answers at
once and the work goes on in the background; ARM clients poll the operation.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import logging
import secrets
import shutil
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from typing import Any

from notarium.auth.identity import JWT_USER_PREFIX
from notarium.auth.users import User
from notarium.errors import ServiceError, StorageError
from notarium.host.credentials import HostCredentials, HostLayout
from notarium.host.ledgers import HostedLedger, LedgerSettings
from notarium.host.limits import LedgerLimits, LimitBook, ledger_limits
from notarium.host.metrics import HostMetrics
from notarium.host.names import (
    AadPrincipal,
    CertPrincipal,
    InvalidRequestError,
    aad_principals,
    cert_principals,
    name_key,
)
from notarium.host.provision import create_ledger_directory, first_users, remove_ledger_directory
from notarium.host.recovery import RecoveringLedger, StoreTarget, secrets_missing
from notarium.host.registry import (
    CREATING,
    DELETED,
    DELETING,
    FAILED,
    SUCCEEDED,
    Caller,
    LedgerRecord,
    Operation,
    Registry,
    iso,
    utcnow,
)
from notarium.host.requests import LedgerRequest, merge_principals, parse_ledger

__all__ = ["ConflictError", "HostConfig", "LedgerManager", "Operation"]
from notarium.host.replica import EXIT_DEPOSED
from notarium.host.store import StoreRegistry, ledger_schema
from notarium.host.storehost import StoreHost
from notarium.host.vault import VaultError
from notarium.types import TxStatus

log = logging.getLogger("notarium.host")

RESTART_MAX_S = 30.0  # the longest wait between two attempts to start a dead engine again
PRIMARY_TIMEOUT_S = 60.0  # notarium host --store: a new ledger's node must seed its log within this


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


class LedgerManager:
    def __init__(
        self,
        layout: HostLayout,
        credentials: HostCredentials,
        registry: Registry | StoreRegistry,
        config: HostConfig,
        settings: LedgerSettings,
        store: StoreHost | None = None,
    ) -> None:
        self.layout = layout
        self.credentials = credentials
        self.registry = registry
        self.config = config
        self.settings = settings
        self.store = store  # notarium host --store: the registry and every ledger on PostgreSQL
        self.instance = registry.instance if isinstance(registry, StoreRegistry) else ""
        self.ledgers: dict[str, HostedLedger] = {}  # served ledgers by name key
        self._running: set[str] = set()  # the operations this process runs now
        self._unsaved: dict[str, Operation] = {}  # finished while the registry could not be written
        self._starting: set[str] = set()  # notarium host --store: ledgers this process is starting
        self._provisioning: set[str] = set()  # ledgers this process is creating
        self._last_purge = datetime.datetime.min.replace(tzinfo=datetime.UTC)
        self.base_url = ""  # set once the host listens
        self._tasks: set[asyncio.Task[None]] = set()
        self._watchers: set[asyncio.Task[None]] = set()  # one per served ledger: restarts a dead engine
        self.limits = LimitBook()  # per-ledger settings (host/limits.py)
        self.metrics = HostMetrics()  # GET /metrics: every ledger's figures (host/metrics.py)
        self.lost: set[str] = set()  # ledgers whose secrets are missing: not served until recovered
        self.recovering: dict[str, RecoveringLedger] = {}  # ledgers waiting for their members' shares
        self._entering: set[str] = set()  # ledgers being put into recovery
        self._lost_bundles: dict[str, str] = {}  # --store: the bundle (digest) a lost ledger could not use

    # --- start and stop ------------------------------------------------------------------------

    async def resume(self) -> None:
        """At start: serve every created ledger; settle what a previous run left half-done; purge.
        On PostgreSQL, what other host processes do is theirs to finish (or, if they died, settled
        by :meth:`sync`); this process serves every created ledger."""
        if self.store is not None:
            await self.sync()
            return
        for op in self.registry.unfinished_operations():  # cut short by the stop
            self._settle(op)
        for record in list(self.registry):
            if record.state == CREATING:
                failed = replace(record, state=FAILED, failure="the host stopped while the ledger was being created")
                self.registry.put(failed)
                self.registry.record_event("create-failed", failed, None, reason=failed.failure)
            elif record.state == DELETING:
                self.registry.put(replace(record, state=DELETED))
                self.registry.record_event("deleted", record, None)
        self.purge()
        starting = [r for r in self.registry if r.state == SUCCEEDED]
        results = await asyncio.gather(*(self._serve(r) for r in starting), return_exceptions=True)
        for record, result in zip(starting, results, strict=True):
            if isinstance(result, BaseException):
                log.error("ledger %s could not be started: %s", record.name, result)

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

    async def _retry_lost(self, record: LedgerRecord) -> None:
        """--store: a ledger lost here is served again once its bundle changed (recovered through
        another host process): its unusable local directory is replaced from the new bundle."""
        try:
            if await asyncio.to_thread(self._bundle_digest, record) == self._lost_bundles.get(record.key):
                return
            if record.key not in self.lost or record.key in self.recovering:
                return
            self.lost.discard(record.key)
            await asyncio.to_thread(shutil.rmtree, self.layout.ledger_dir(record.key), True)
            await self._serve(record)
        except Exception as exc:  # tried again at the next sync
            log.error("ledger %s could not be started here: %s", record.name, exc)
        finally:
            self._starting.discard(record.key)

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

    # --- create and update ---------------------------------------------------------------------

    def create_or_update(
        self,
        subscription: str,
        resource_group: str,
        name: str,
        body: dict[str, object],
        caller: Caller,
    ) -> tuple[LedgerRecord, Operation | None]:
        """Start creating ``name`` (returns its operation) or update it (no operation). Raises
        :class:`ConflictError` when the name is taken elsewhere or kept after a deletion,
        :class:`~notarium.host.names.InvalidRequestError` for a bad request."""
        request = parse_ledger(body, self.config.location)
        if request.tags_given:  # per-ledger settings (host/limits.py): refused before anything changes
            ledger_limits(request.tags, self.settings.server.max_entry_bytes)
        existing = self.registry.get(name)
        if existing is not None and existing.gone:
            raise ConflictError(
                f"The ledger name {existing.name!r} belonged to a ledger deleted at {existing.deleted_at}; its data "
                f"is kept until {existing.purge_after}, and the name is not available until then.",
                "LedgerNameAlreadyExists",
            )
        if existing is not None and (
            existing.subscription.lower() != subscription.lower()
            or existing.resource_group.lower() != resource_group.lower()
        ):
            raise ConflictError(f"The ledger name {existing.name!r} is already in use.", "LedgerNameAlreadyExists")
        if existing is not None and existing.state != FAILED:
            return self._update(existing, request, caller), None
        if not any(p.role == "Administrator" for p in request.certs) and not any(
            p.role == "Administrator" for p in request.aad
        ):
            raise InvalidRequestError(
                "A ledger needs at least one security principal with ledgerRoleName Administrator "
                "(certBasedSecurityPrincipals or aadBasedSecurityPrincipals)."
            )
        now = iso(utcnow())
        record = LedgerRecord(
            name=existing.name if existing else name,
            subscription=subscription,
            resource_group=resource_group,
            location=request.location,
            ledger_type=request.ledger_type,
            state=CREATING,
            created_at=now,
            created_by=caller.name,
            created_by_type=caller.kind,
            modified_at=now,
            modified_by=caller.name,
            modified_by_type=caller.kind,
            tags=request.tags,
            cert_principals=[p.to_arm() for p in request.certs],
            aad_principals=[p.to_arm() for p in request.aad],
            schema=ledger_schema(name) if self.store is not None else None,
        )
        if not self.registry.create(record):  # another host process took the name meanwhile
            raise ConflictError(f"The ledger name {record.name!r} is already in use.", "LedgerNameAlreadyExists")
        self.registry.record_event("create", record, caller, ledgerType=record.ledger_type)
        op = self._operation(record, "create")
        self._background(self._provision(record, request.certs, request.aad, op, previous=existing))
        return record, op

    async def _provision(
        self,
        record: LedgerRecord,
        certs: list[CertPrincipal],
        aad: list[AadPrincipal],
        op: Operation,
        *,
        previous: LedgerRecord | None,
    ) -> None:
        self._provisioning.add(record.key)
        try:
            await self._create(record, certs, aad, op, previous)
        finally:
            self._provisioning.discard(record.key)

    async def _create(
        self,
        record: LedgerRecord,
        certs: list[CertPrincipal],
        aad: list[AadPrincipal],
        op: Operation,
        previous: LedgerRecord | None,
    ) -> None:
        directory = self.layout.ledger_dir(record.key)
        try:
            if previous is not None:  # a failed creation served nothing: start again from scratch
                await asyncio.to_thread(remove_ledger_directory, directory)
                if self.store is not None and previous.schema is not None:
                    await asyncio.to_thread(self.store.registry.drop_ledger_schema, previous.schema)
            await asyncio.to_thread(
                create_ledger_directory,
                directory,
                record.name,
                record.ledger_type,
                certs,
                aad,
                self.config.host_names,
            )
            if self.store is not None:
                await asyncio.to_thread(self.store.upload, record, directory)
            await self._serve(record)
            if self.store is not None:
                await self._until_primary(record)
            done = replace(record, state=SUCCEEDED)
            if not self.registry.transition(done, CREATING):
                raise ServiceError("the creation was settled as failed meanwhile (this host process was silent)")
        except Exception as exc:
            log.exception("ledger %s could not be created", record.name)
            message = str(exc) if isinstance(exc, ServiceError | ValueError) else "see the host's log"
            hosted = self.ledgers.pop(record.key, None)
            if hosted is not None:
                await hosted.stop()
            failed = replace(record, state=FAILED, failure=message)
            try:
                if self.registry.transition(failed, CREATING):
                    self.registry.record_event("create-failed", failed, None, reason=message)
            except StorageError as store_exc:  # settled by the next sync
                log.warning("ledger %s: its failure is recorded later (%s)", record.name, store_exc)
                self._running.discard(op.id)
                return
            self._finish(op, {"code": "ProvisioningFailed", "message": f"The ledger could not be created: {message}"})
            return
        self.registry.record_event("created", done, None)
        self._finish(op)

    async def _until_primary(self, record: LedgerRecord) -> None:
        """On PostgreSQL: wait until the new ledger's node has seeded its log and leads it, so that
        no other process serves it before its log holds its genesis."""
        deadline = asyncio.get_running_loop().time() + PRIMARY_TIMEOUT_S
        while True:
            hosted = self.ledgers.get(record.key)
            role = hosted.remote.role if hosted is not None else None
            if role is not None and role.primary:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise ServiceError("the new ledger's node did not take its lease in time")
            await asyncio.sleep(0.05)

    def _update(self, record: LedgerRecord, request: LedgerRequest, caller: Caller) -> LedgerRecord:
        if record.state in (CREATING, DELETING):
            raise ConflictError(f"The ledger {record.name!r} is {record.state.lower()}; retry when it is done.")
        if request.ledger_type != record.ledger_type:
            raise ConflictError(f"The ledger type is fixed at creation; {record.name!r} is {record.ledger_type}.")
        updated = record.modified(
            caller,
            tags=request.tags if request.tags_given else record.tags,
            cert_principals=merge_principals(record.cert_principals, [p.to_arm() for p in request.certs], "cert"),
            aad_principals=merge_principals(record.aad_principals, [p.to_arm() for p in request.aad], "principalId"),
        )
        if (request.certs or request.aad) and self.store is not None:
            # applied by whichever host process is the ledger's primary (sync)
            self.store.registry.queue_user_change(
                record.key,
                {"certs": [p.to_arm() for p in request.certs], "aad": [p.to_arm() for p in request.aad]},
            )
        elif request.certs or request.aad:
            hosted = self.ledgers.get(record.key)
            if hosted is None:
                raise ConflictError(f"The ledger {record.name!r} is not running; its users cannot be changed now.")
            self._background(_apply_users(hosted, request.certs, request.aad))
        self.registry.put(updated)
        self.registry.record_event("update", updated, caller)
        if request.tags_given:  # new settings apply at once (a changed rate starts a full bucket)
            limits = self._ledger_limits(updated)
            hosted = self.ledgers.get(record.key)
            if hosted is not None:
                entry = limits.max_entry_bytes or self.settings.server.max_entry_bytes
                hosted.ctx.config = replace(hosted.ctx.config, max_entry_bytes=entry)
        return updated

    # --- recovery (host/recovery.py) -----------------------------------------------------------

    async def recover(self, record: LedgerRecord, caller: Caller) -> dict[str, Any]:
        """Put a ledger whose ledger secrets are lost into recovery, or say how its recovery stands.
        Its engine is stopped if it still runs; the other ledgers are not touched."""
        key = record.key
        current = self.recovering.get(key)
        if current is not None:
            return current.status()
        if record.state != SUCCEEDED:
            raise ConflictError(f"The ledger {record.name!r} is {record.state.lower()}: it cannot be recovered.")
        directory = self.layout.ledger_dir(key)
        if self.store is not None and key in self.ledgers:  # its log is on PostgreSQL; a node of it runs here
            raise ConflictError(
                f"The ledger {record.name!r} has its ledger secrets: this host process serves it, so there is "
                "nothing to recover."
            )
        if self.store is None and not secrets_missing(directory):
            raise ConflictError(
                f"The ledger {record.name!r} has its ledger secrets: there is nothing to recover (a recovery "
                "replaces the secrets from the members' shares and moves the ledger to a new service identity)."
            )
        if key in self._entering:
            raise ConflictError(f"The ledger {record.name!r} is being put into recovery; ask again in a moment.")
        self._entering.add(key)
        try:
            hosted = self.ledgers.pop(key, None)  # its engine can no longer reopen it
            if hosted is not None:
                self.lost.add(key)
                await hosted.stop()
            try:
                if self.store is None:
                    recovering = await RecoveringLedger.start(record.name, directory)
                else:  # its new local directory made from its log (host/recovery.py)
                    recovering = await RecoveringLedger.start_store(record.name, directory, self._store_target(record))
            except ServiceError as exc:
                self.lost.add(key)
                raise ConflictError(f"The ledger {record.name!r} cannot be recovered: {exc}") from None
            now = self.registry.get(record.name)
            if now is None or now.state != SUCCEEDED:  # deleted meanwhile
                await recovering.close()
                raise ConflictError(f"The ledger {record.name!r} was deleted meanwhile.")
        finally:
            self._entering.discard(key)
        self.recovering[key] = recovering
        self.lost.discard(key)
        self.registry.record_event("recover", record, caller, threshold=recovering.recovery.threshold)
        self._background(self._open_when_recovered(record, recovering))
        return recovering.status()

    def _store_target(self, record: LedgerRecord) -> StoreTarget:
        if self.store is None or record.schema is None:
            raise ServiceError(f"ledger {record.name} is not on PostgreSQL")
        address = f"{self.store.address}/ledgers/{record.name}"
        return StoreTarget(self.store.settings.dsn, record.schema, address, self.store.settings.lease_ttl_s)

    async def _open_when_recovered(self, record: LedgerRecord, recovering: RecoveringLedger) -> None:
        if not await recovering.wait() or self.recovering.get(record.key) is not recovering:
            return  # deleted, or the host stops: the shares submitted are forgotten
        try:
            await recovering.open()
            if self.store is not None:  # the new identity, sealed for the other host processes
                await asyncio.to_thread(self.store.upload, record, recovering.directory)
                self._lost_bundles.pop(record.key, None)
            await self._serve(self.registry.get(record.name) or record)
        except Exception as exc:
            log.exception("ledger %s: the recovered ledger could not be opened", record.name)
            self.recovering.pop(record.key, None)
            self.lost.add(record.key)
            self.registry.record_event("recover-failed", record, None, reason=str(exc)[:500])
            return
        self.recovering.pop(record.key, None)
        self.registry.record_event("recovered", record, None)

    def waiting(self) -> list[str]:
        """The names of the ledgers that are not served: they need recovery or are recovering."""
        records = (self.registry.get(key) for key in self.lost | set(self.recovering))
        return [r.name for r in records if r is not None]

    # --- delete and purge ----------------------------------------------------------------------

    def delete(self, record: LedgerRecord, caller: Caller) -> Operation:
        if record.state == CREATING:
            raise ConflictError(f"The ledger {record.name!r} is being created; delete it when that is done.")
        now = utcnow()
        purge_after = now + datetime.timedelta(days=self.config.retention_days)
        deleting = record.modified(
            caller, state=DELETING, deleted_at=iso(now), deleted_by=caller.name, purge_after=iso(purge_after)
        )
        if not self.registry.transition(deleting, record.state):
            raise ConflictError(f"The ledger {record.name!r} changed meanwhile; retry.")
        self.registry.record_event("delete", deleting, caller, purgeAfter=deleting.purge_after)
        hosted = self.ledgers.pop(record.key, None)  # its data-plane paths stop answering now
        self.lost.discard(record.key)
        self.limits.forget(record.key)
        recovering = self.recovering.pop(record.key, None)
        if recovering is not None:
            self._background(recovering.close())
        op = self._operation(record, "delete")
        self._background(self._stop(deleting, hosted, op))
        return op

    async def _stop(self, record: LedgerRecord, hosted: HostedLedger | None, op: Operation) -> None:
        if hosted is not None:
            status = await hosted.stop()
            if status != 0:
                log.warning("ledger %s: its engine exited with status %s", record.name, status)
        deleted = replace(record, state=DELETED)
        try:
            if self.registry.transition(deleted, DELETING):
                self.registry.record_event("deleted", deleted, None)
        except StorageError as exc:  # settled by the next sync
            log.warning("ledger %s: its deletion is recorded later (%s)", record.name, exc)
            self._running.discard(op.id)
            return
        self._finish(op)

    def purge(self, now: datetime.datetime | None = None) -> list[str]:
        """Remove the files of ledgers deleted longer ago than the retention; free their names.
        (On PostgreSQL, :meth:`sync` purges: the rows, and every process its own files.)"""
        if self.store is not None:
            return []
        purged = []
        for record in self.registry.due_for_purge(now or utcnow()):
            remove_ledger_directory(self.layout.ledger_dir(record.key))
            self.registry.remove(record.name)
            self.registry.record_event("purged", record, None)
            log.warning("ledger %s: files removed (deleted at %s, retention ended)", record.name, record.deleted_at)
            purged.append(record.name)
        return purged

    # --- notarium host --store: following the registry shared with the other host processes --------

    async def sync(self) -> None:
        """Every sync interval on PostgreSQL (:mod:`notarium.host.storehost`): heartbeat; settle the
        operations of dead processes; purge what is due; serve the ledgers created elsewhere, stop
        those deleted elsewhere; apply queued user changes of the ledgers this process leads;
        remove the local files of purged ledgers. PostgreSQL unreachable: try again next time."""
        store = self.store
        if store is None:
            return
        try:
            records, changes = await asyncio.to_thread(self._sync_registry, store)
        except StorageError as exc:
            store.unreachable(exc)
            return
        by_key = {r.key: r for r in records}
        for key, record in by_key.items():
            if record.state != SUCCEEDED:
                continue
            hosted = self.ledgers.get(key)
            if hosted is not None:
                self._refresh_limits(record, hosted)
            elif key not in self._starting and key not in self.lost and key not in self.recovering:
                self._starting.add(key)
                self._background(self._serve_found(record))
            elif key in self.lost and key not in self._starting and key not in self.recovering:
                self._starting.add(key)  # recovered through another process? (its bundle changed)
                self._background(self._retry_lost(record))
        for key in list(self.ledgers):
            found = by_key.get(key)
            if key in self._provisioning:  # created here right now (perhaps after the registry was read)
                continue
            if found is None or found.gone or found.state == FAILED:  # deleted through another process
                hosted = self.ledgers.pop(key)
                self.limits.forget(key)
                log.info("ledger %s: deleted through another host process; its node here stops", hosted.name)
                self._background(self._stop_node(hosted))
        for change_id, key, body in changes:
            hosted = self.ledgers.get(key)
            if hosted is not None and hosted.remote.role is not None and hosted.remote.role.primary:
                await _apply_users(hosted, cert_principals(body.get("certs")), aad_principals(body.get("aad")))
                await asyncio.to_thread(store.registry.done_user_change, change_id)
        keep = set(by_key) | self._starting | self._provisioning | set(self.ledgers)
        await asyncio.to_thread(store.forget_local, keep)

    def _sync_registry(self, store: StoreHost) -> tuple[list[LedgerRecord], list[tuple[int, str, dict[str, Any]]]]:
        """The registry's side of :meth:`sync`, in a worker thread."""
        registry = store.registry
        registry.heartbeat(store.address)
        store.reachable()
        for op in list(self._unsaved.values()):
            registry.put_operation(op)
            self._unsaved.pop(op.id, None)
        for op in registry.unfinished_operations():  # this process's own, no longer running (a failed write)
            if op.owner == self.instance and op.id not in self._running:
                self._settle(op)
        for op in store.orphans():  # a dead process's: settled by the one process that claims it
            if registry.claim_operation(op):
                op.owner = self.instance
                self._settle(op)
        now = utcnow()
        if (now - self._last_purge).total_seconds() >= self.config.purge_interval_s:
            self._last_purge = now
            for record in store.purge_due(registry.due_for_purge(now)):
                registry.record_event("purged", record, None)
                log.warning(
                    "ledger %s: its log and files removed (deleted at %s, retention ended)",
                    record.name,
                    record.deleted_at,
                )
        return registry.records(), registry.all_user_changes()

    async def _serve_found(self, record: LedgerRecord) -> None:
        try:
            await self._serve(record)
        except Exception as exc:  # tried again at the next sync
            log.error("ledger %s could not be started here: %s", record.name, exc)
        finally:
            self._starting.discard(record.key)

    async def _stop_node(self, hosted: HostedLedger) -> None:
        status = await hosted.stop()
        if status not in (0, EXIT_DEPOSED):
            log.warning("ledger %s: its node exited with status %s", hosted.name, status)

    def _refresh_limits(self, record: LedgerRecord, hosted: HostedLedger) -> None:
        """Settings changed through another host process apply here too."""
        limits = self._ledger_limits(record)
        entry = limits.max_entry_bytes or self.settings.server.max_entry_bytes
        if hosted.ctx.config.max_entry_bytes != entry:
            hosted.ctx.config = replace(hosted.ctx.config, max_entry_bytes=entry)


async def _apply_users(hosted: HostedLedger, certs: list[CertPrincipal], aad: list[AadPrincipal]) -> None:
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
