"""``notarium host --store``: following the registry shared with the other host processes on
PostgreSQL (a part of :class:`~notarium.host.manager.LedgerManager`; :mod:`notarium.host.serving`
holds the state).
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import replace
from typing import Any

from notarium.errors import StorageError
from notarium.host.ledgers import HostedLedger
from notarium.host.names import aad_principals, cert_principals
from notarium.host.registry import FAILED, SUCCEEDED, LedgerRecord, utcnow
from notarium.host.replica import EXIT_DEPOSED
from notarium.host.serving import Serving, apply_users, log
from notarium.host.storehost import StoreHost


class Syncing(Serving):
    """What every host process on PostgreSQL does at each sync interval."""

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
                await apply_users(hosted, cert_principals(body.get("certs")), aad_principals(body.get("aad")))
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
