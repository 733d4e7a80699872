"""The host's ledgers over their lifetime: create, update, delete, purge, and serving them.

Every change is recorded in the registry (and its event log) before it takes effect. Creation
and deletion are long-running operations (:class:`Operation`): the management API answers at
once and the work goes on in the background; ARM clients poll the operation.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import secrets
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from typing import Any

from notarium.auth.identity import JWT_USER_PREFIX
from notarium.auth.users import User
from notarium.errors import ServiceError
from notarium.host.credentials import HostCredentials, HostLayout
from notarium.host.ledgers import HostedLedger, LedgerSettings
from notarium.host.names import (
    AadPrincipal,
    CertPrincipal,
    InvalidRequestError,
    aad_principals,
    cert_principals,
    name_key,
)
from notarium.host.provision import create_ledger_directory, first_users, remove_ledger_directory
from notarium.host.registry import (
    CREATING,
    DELETED,
    DELETING,
    FAILED,
    SUCCEEDED,
    Caller,
    LedgerRecord,
    Registry,
    iso,
    utcnow,
)
from notarium.types import TxStatus

log = logging.getLogger("notarium.host")

IN_PROGRESS = "InProgress"
MAX_OPERATIONS = 1000  # finished operations remembered for polling
RESTART_MAX_S = 30.0  # the longest wait between two attempts to start a dead engine again


@dataclass
class Operation:
    """A long-running management operation (ARM's Azure-AsyncOperation resource)."""

    id: str
    ledger: str
    action: str  # "create" or "delete"
    status: str = IN_PROGRESS
    start_time: str = ""
    end_time: str | None = None
    error: dict[str, str] | None = None

    def finish(self, error: dict[str, str] | None = None) -> None:
        self.status = "Failed" if error else "Succeeded"
        self.error = error
        self.end_time = iso(utcnow())


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
        registry: Registry,
        config: HostConfig,
        settings: LedgerSettings,
    ) -> None:
        self.layout = layout
        self.credentials = credentials
        self.registry = registry
        self.config = config
        self.settings = settings
        self.ledgers: dict[str, HostedLedger] = {}  # served ledgers by name key
        self.operations: dict[str, Operation] = {}
        self.base_url = ""  # set once the host listens
        self._tasks: set[asyncio.Task[None]] = set()
        self._watchers: set[asyncio.Task[None]] = set()  # one per served ledger: restarts a dead engine

    # --- start and stop ------------------------------------------------------------------------

    async def resume(self) -> None:
        """At start: serve every created ledger; settle what a previous run left half-done; purge."""
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
        directory = self.layout.ledger_dir(record.key)
        hosted = await HostedLedger.start(record.name, directory, self.settings)
        self.ledgers[record.key] = hosted
        self._watch(record, hosted)

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
            log.error("ledger %s: its engine exited (status %s); starting it again", record.name, status)
            try:
                fresh = await HostedLedger.start(record.name, self.layout.ledger_dir(record.key), self.settings)
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
        op = Operation(secrets.token_hex(16), record.name, action, start_time=iso(utcnow()))
        self.operations[op.id] = op
        while len(self.operations) > MAX_OPERATIONS:
            oldest = next(iter(self.operations))
            if self.operations[oldest].status == IN_PROGRESS:
                break
            del self.operations[oldest]
        return op

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
        )
        self.registry.put(record)
        self.registry.record_event("create", record, caller, ledgerType=record.ledger_type)
        op = self._operation(record, "create")
        self._background(self._provision(record, request.certs, request.aad, op, retry=existing is not None))
        return record, op

    async def _provision(
        self, record: LedgerRecord, certs: list[CertPrincipal], aad: list[AadPrincipal], op: Operation, *, retry: bool
    ) -> None:
        directory = self.layout.ledger_dir(record.key)
        try:
            if retry:  # a failed creation served nothing: start again from scratch
                await asyncio.to_thread(remove_ledger_directory, directory)
            await asyncio.to_thread(
                create_ledger_directory,
                directory,
                record.name,
                record.ledger_type,
                certs,
                aad,
                self.config.host_names,
            )
            await self._serve(record)
        except Exception as exc:
            log.exception("ledger %s could not be created", record.name)
            message = str(exc) if isinstance(exc, ServiceError | ValueError) else "see the host's log"
            failed = replace(record, state=FAILED, failure=message)
            self.registry.put(failed)
            self.registry.record_event("create-failed", failed, None, reason=message)
            op.finish({"code": "ProvisioningFailed", "message": f"The ledger could not be created: {message}"})
            return
        done = replace(record, state=SUCCEEDED)
        self.registry.put(done)
        self.registry.record_event("created", done, None)
        op.finish()

    def _update(self, record: LedgerRecord, request: LedgerRequest, caller: Caller) -> LedgerRecord:
        if record.state in (CREATING, DELETING):
            raise ConflictError(f"The ledger {record.name!r} is {record.state.lower()}; retry when it is done.")
        if request.ledger_type != record.ledger_type:
            raise ConflictError(f"The ledger type is fixed at creation; {record.name!r} is {record.ledger_type}.")
        updated = record.modified(
            caller,
            tags=request.tags if request.tags_given else record.tags,
            cert_principals=_merge(record.cert_principals, [p.to_arm() for p in request.certs], "cert"),
            aad_principals=_merge(record.aad_principals, [p.to_arm() for p in request.aad], "principalId"),
        )
        if request.certs or request.aad:
            hosted = self.ledgers.get(record.key)
            if hosted is None:
                raise ConflictError(f"The ledger {record.name!r} is not running; its users cannot be changed now.")
            self._background(_apply_users(hosted, request.certs, request.aad))
        self.registry.put(updated)
        self.registry.record_event("update", updated, caller)
        return updated

    # --- delete and purge ----------------------------------------------------------------------

    def delete(self, record: LedgerRecord, caller: Caller) -> Operation:
        if record.state == CREATING:
            raise ConflictError(f"The ledger {record.name!r} is being created; delete it when that is done.")
        now = utcnow()
        purge_after = now + datetime.timedelta(days=self.config.retention_days)
        deleting = record.modified(
            caller, state=DELETING, deleted_at=iso(now), deleted_by=caller.name, purge_after=iso(purge_after)
        )
        self.registry.put(deleting)
        self.registry.record_event("delete", deleting, caller, purgeAfter=deleting.purge_after)
        hosted = self.ledgers.pop(record.key, None)  # its data-plane paths stop answering now
        op = self._operation(record, "delete")
        self._background(self._stop(deleting, hosted, op))
        return op

    async def _stop(self, record: LedgerRecord, hosted: HostedLedger | None, op: Operation) -> None:
        if hosted is not None:
            status = await hosted.stop()
            if status != 0:
                log.warning("ledger %s: its engine exited with status %s", record.name, status)
        deleted = replace(record, state=DELETED)
        self.registry.put(deleted)
        self.registry.record_event("deleted", deleted, None)
        op.finish()

    def purge(self, now: datetime.datetime | None = None) -> list[str]:
        """Remove the files of ledgers deleted longer ago than the retention; free their names."""
        purged = []
        for record in self.registry.due_for_purge(now or utcnow()):
            remove_ledger_directory(self.layout.ledger_dir(record.key))
            self.registry.remove(record.name)
            self.registry.record_event("purged", record, None)
            log.warning("ledger %s: files removed (deleted at %s, retention ended)", record.name, record.deleted_at)
            purged.append(record.name)
        return purged


@dataclass(frozen=True, slots=True)
class LedgerRequest:
    """A parsed create or update request."""

    location: str
    ledger_type: str
    tags: dict[str, str]
    tags_given: bool
    certs: list[CertPrincipal]
    aad: list[AadPrincipal]


LEDGER_TYPES = ("Private", "Public")
MAX_TAGS = 50


def _tag(key: object, value: object) -> bool:
    return isinstance(key, str) and isinstance(value, str) and len(key) <= 512 and len(value) <= 256


def parse_ledger(body: dict[str, object], default_location: str) -> LedgerRequest:
    """The ARM ``ConfidentialLedger`` body of a create (PUT) or update (PATCH)."""
    location = body.get("location", default_location)
    if not isinstance(location, str) or not 0 < len(location) <= 64:
        raise InvalidRequestError("location must be a non-empty string of at most 64 characters.")
    tags = body.get("tags")
    if tags is not None and (
        not isinstance(tags, dict)
        or len(tags) > MAX_TAGS
        or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= 512 and len(v) <= 256 for k, v in tags.items()
        )
    ):
        raise InvalidRequestError(f"tags must be an object of at most {MAX_TAGS} string values.")
    props = body.get("properties", {})
    if not isinstance(props, dict):
        raise InvalidRequestError("properties must be an object.")
    ledger_type = props.get("ledgerType", "Private")
    if not isinstance(ledger_type, str) or ledger_type.capitalize() not in LEDGER_TYPES:
        raise InvalidRequestError("properties.ledgerType must be Public or Private.")
    return LedgerRequest(
        location,
        ledger_type.capitalize(),
        dict(tags) if tags is not None else {},
        tags is not None,
        cert_principals(props.get("certBasedSecurityPrincipals")),
        aad_principals(props.get("aadBasedSecurityPrincipals")),
    )


def _merge(old: list[dict[str, str]], new: list[dict[str, str]], key: str) -> list[dict[str, str]]:
    merged = {p[key]: p for p in old}
    merged.update({p[key]: p for p in new})
    return list(merged.values())


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
