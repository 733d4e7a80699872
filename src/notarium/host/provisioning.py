"""Creating, updating, deleting and purging the host's ledgers (a part of
:class:`~notarium.host.manager.LedgerManager`; :mod:`notarium.host.serving` holds the state).

Every change is recorded in the registry (and its event log) before it takes effect. Creation
and deletion are long-running operations (:class:`~notarium.host.registry.Operation`): the
management API answers at once and the work goes on in the background; ARM clients poll the
operation.
"""

from __future__ import annotations

import asyncio
import datetime
from dataclasses import replace

from notarium.errors import ServiceError, StorageError
from notarium.host.ledgers import HostedLedger
from notarium.host.limits import ledger_limits
from notarium.host.names import AadPrincipal, CertPrincipal, InvalidRequestError
from notarium.host.provision import create_ledger_directory, remove_ledger_directory
from notarium.host.registry import (
    CREATING,
    DELETED,
    DELETING,
    FAILED,
    SUCCEEDED,
    Caller,
    LedgerRecord,
    Operation,
    iso,
    utcnow,
)
from notarium.host.requests import LedgerRequest, merge_principals, parse_ledger
from notarium.host.serving import ConflictError, Serving, apply_users, log
from notarium.host.store import ledger_schema

PRIMARY_TIMEOUT_S = 60.0  # notarium host --store: a new ledger's node must seed its log within this


class Provisioning(Serving):
    """The management API's changes to the ledgers."""

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
            self._background(apply_users(hosted, request.certs, request.aad))
        self.registry.put(updated)
        self.registry.record_event("update", updated, caller)
        if request.tags_given:  # new settings apply at once (a changed rate starts a full bucket)
            limits = self._ledger_limits(updated)
            hosted = self.ledgers.get(record.key)
            if hosted is not None:
                entry = limits.max_entry_bytes or self.settings.server.max_entry_bytes
                hosted.ctx.config = replace(hosted.ctx.config, max_entry_bytes=entry)
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
