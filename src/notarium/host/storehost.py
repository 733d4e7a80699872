"""What a host process does on PostgreSQL (``notarium host DIR --store``) besides an embedded host.

Several host processes started on the same store are one host (docs/design/host.md, "On
PostgreSQL"). Each of them:

- runs a node of **every** served ledger (:mod:`notarium.host.replica`): the node holding the
  ledger's lease sequences, the others verify the log, serve reads and forward writes to it;
- fills a ledger's local directory, the first time it serves it, from the ledger's identity
  bundle (:mod:`notarium.host.vault`), then from the ledger's log;
- every :attr:`StoreSettings.sync_interval_s`, heartbeats, and follows the registry
  (:meth:`StoreHost.poll`): serves ledgers created through another process, stops those deleted
  through another, settles operations whose process died, applies queued user changes of the
  ledgers it is the primary of, purges what is due, and removes the local files of purged ledgers.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from notarium.errors import ServiceError
from notarium.host.credentials import HostLayout
from notarium.host.ledgers import StoreNode
from notarium.host.names import valid_name
from notarium.host.registry import DELETED, LedgerRecord, Operation
from notarium.host.replica import ReplicaSettings
from notarium.host.store import StoreRegistry
from notarium.host.vault import pack, unpack
from notarium.ledger.layout import Layout

log = logging.getLogger("notarium.host")

SCHEMA_MARK = ".schema"  # in a ledger's local directory: the schema (incarnation) it replicates


@dataclass(frozen=True, slots=True)
class StoreSettings:
    dsn: str
    store_key: bytes = field(repr=False)
    node_address: str | None = None  # this process's base URL for the other processes (default https://host:port)
    lease_ttl_s: float = 3.0
    sync_interval_s: float = 1.0

    @property
    def dead_after_s(self) -> float:
        """A host process silent this long is dead: another one settles its operations."""
        return max(5.0, 5 * self.sync_interval_s)


def new_instance_id() -> str:
    return uuid.uuid4().hex


class StoreHost:
    def __init__(self, settings: StoreSettings, registry: StoreRegistry, layout: HostLayout, ca_pem: bytes) -> None:
        self.settings = settings
        self.registry = registry
        self.layout = layout
        self.ca_pem = ca_pem
        self.address = ""  # this process's base URL, once it listens
        self._reachable_since: float | None = None  # when PostgreSQL last became reachable (monotonic)
        self._unreachable_logged = 0.0

    def node(self, record: LedgerRecord) -> StoreNode:
        if record.schema is None:
            raise ServiceError(f"ledger {record.name} has no schema in the host's registry")
        address = f"{self.address}/ledgers/{record.name}"
        return StoreNode(
            self.settings.dsn, ReplicaSettings(record.schema, address, self.settings.lease_ttl_s), self.ca_pem
        )

    # --- local directories ---------------------------------------------------------------------

    def upload(self, record: LedgerRecord, directory: Path) -> None:
        """After provisioning: seal the new ledger's identity into the registry, and mark its directory."""
        if record.schema is None:
            raise ServiceError(f"ledger {record.name} has no schema")
        self.registry.put_bundle(record.schema, pack(directory, record.schema, self.settings.store_key))
        (directory / SCHEMA_MARK).write_text(record.schema + "\n")

    def materialise(self, record: LedgerRecord) -> Path:
        """The ledger's local directory, made from its bundle if this process never served this
        incarnation of it (a directory of an earlier incarnation, or a half-written one, is replaced)."""
        directory = self.layout.ledger_dir(record.key)
        if record.schema is None:
            raise ServiceError(f"ledger {record.name} has no schema")
        if _marked(directory) == record.schema and Layout(directory).config.is_file():
            return directory
        blob = self.registry.bundle(record.schema)
        if blob is None:
            raise ServiceError(f"ledger {record.name}: its identity bundle is not in the registry")
        if directory.exists():
            shutil.rmtree(directory)
        partial = directory.with_name(directory.name + ".partial")
        if partial.exists():
            shutil.rmtree(partial)
        unpack(blob, partial, record.schema, self.settings.store_key)
        (partial / SCHEMA_MARK).write_text(record.schema + "\n")
        partial.rename(directory)
        log.info("ledger %s: local replica made from its identity bundle (%s)", record.name, record.schema)
        return directory

    def forget_local(self, keep: set[str]) -> list[str]:
        """Remove the local directories of ledgers no longer in the registry (purged): ``keep`` names
        the keys that still have a record. Returns the keys removed."""
        removed: list[str] = []
        if not self.layout.ledgers.is_dir():
            return removed
        for path in self.layout.ledgers.iterdir():
            key = path.name  # only a ledger's own directory: never one being made (init's, a .partial)
            if valid_name(key) and key not in keep and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
                removed.append(key)
        return removed

    # --- following the registry ----------------------------------------------------------------

    def reachable(self) -> None:
        if self._reachable_since is None:
            self._reachable_since = time.monotonic()

    def unreachable(self, exc: Exception) -> None:
        self._reachable_since = None
        now = time.monotonic()
        if now - self._unreachable_logged >= 30:
            self._unreachable_logged = now
            log.warning("the host's registry (PostgreSQL) cannot be reached: %s; retrying", exc)

    def orphans(self) -> list[Operation]:
        """Operations whose host process is dead: only once this process has itself reached
        PostgreSQL for longer than the silence that counts as dead (after an outage, every process
        was silent, and none of them is dead for it)."""
        if self._reachable_since is None or time.monotonic() - self._reachable_since < self.settings.dead_after_s:
            return []
        return self.registry.orphaned_operations(self.settings.dead_after_s)

    def purge_due(self, due: list[LedgerRecord]) -> list[LedgerRecord]:
        """Purge what is due: for each record, the one process that removes it drops its schema."""
        purged = []
        for record in due:
            if record.state != DELETED or not self.registry.take_for_purge(record):
                continue
            if record.schema is not None:
                self.registry.drop_ledger_schema(record.schema)
            self.registry.forget_user_changes(record.key)
            purged.append(record)
        return purged


def _marked(directory: Path) -> str | None:
    try:
        return (directory / SCHEMA_MARK).read_text().strip()
    except OSError:
        return None
