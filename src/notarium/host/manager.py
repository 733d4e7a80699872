"""The host's ledgers over their lifetime: create, update, delete, purge, recover, and serving them.

:class:`LedgerManager` is assembled from one class per concern, each in its own module, on top
of :class:`~notarium.host.serving.Serving` (the shared state, and serving a created ledger):
:mod:`.provisioning` (create, update, delete, purge), :mod:`.recovering` (a lost ledger's
recovery) and :mod:`.syncing` (``notarium host --store``: the registry shared on PostgreSQL).
"""

from __future__ import annotations

import asyncio
import datetime
from dataclasses import replace

from notarium.host.credentials import HostCredentials, HostLayout
from notarium.host.ledgers import LedgerSettings
from notarium.host.limits import LimitBook
from notarium.host.metrics import HostMetrics
from notarium.host.provisioning import Provisioning
from notarium.host.recovering import Recovering
from notarium.host.registry import CREATING, DELETED, DELETING, FAILED, SUCCEEDED, Operation, Registry
from notarium.host.serving import ConflictError, HostConfig, log
from notarium.host.store import StoreRegistry
from notarium.host.storehost import StoreHost
from notarium.host.syncing import Syncing

__all__ = ["ConflictError", "HostConfig", "LedgerManager", "Operation"]


class LedgerManager(Provisioning, Recovering, Syncing):
    """Every ledger of the host: the management API's calls, and what the host does by itself."""

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
        self.store = store
        self.instance = registry.instance if isinstance(registry, StoreRegistry) else ""
        self.base_url = ""
        self.limits = LimitBook()
        self.metrics = HostMetrics()
        self.ledgers = {}
        self.lost = set()
        self.recovering = {}
        self._entering = set()
        self._lost_bundles = {}
        self._starting = set()
        self._provisioning = set()
        self._running = set()
        self._unsaved = {}
        self._last_purge = datetime.datetime.min.replace(tzinfo=datetime.UTC)
        self._tasks = set()
        self._watchers = set()

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
