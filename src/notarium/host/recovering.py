"""A ledger whose ledger secrets are lost, put into recovery and served again (a part of
:class:`~notarium.host.manager.LedgerManager`; :mod:`notarium.host.serving` holds the state).

Its members submit their shares to the recovery listener of :class:`~notarium.host.recovery.RecoveringLedger`;
once enough arrived, the ledger reopens under a new service identity and is served again. The
other ledgers of the host are not touched.
"""

from __future__ import annotations

import asyncio
from typing import Any

from notarium.errors import ServiceError
from notarium.host.recovery import RecoveringLedger, StoreTarget, secrets_missing
from notarium.host.registry import SUCCEEDED, Caller, LedgerRecord
from notarium.host.serving import ConflictError, Serving, log


class Recovering(Serving):
    """``notarium ledgers recover NAME``: the management API's recovery of one ledger."""

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
