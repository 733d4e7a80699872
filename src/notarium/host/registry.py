"""What a host knows of its ledgers: ``DIR/registry.json``, and ``DIR/events.jsonl``.

The registry holds each ledger's ARM resource (subscription, resource group, location, tags, type,
first principals), its state and its history (who created, changed and deleted it, when). It is
rewritten atomically after every change (temporary file, fsync, rename) and read only at start;
the running host keeps it in memory. Every management change is also appended to
``events.jsonl`` (one JSON object a line, never rewritten): the host's own record of what its
operators did, with times and callers, kept after a ledger's files are purged.

States: ``Creating`` → ``Succeeded`` (served) or ``Failed``; ``Deleting`` → ``Deleted`` (no longer
served; its files are kept until ``purgeAfter``); after the purge the record is gone and the
name is free again.

The registry also keeps the long-running operations (:class:`Operation`), the last
:data:`MAX_OPERATIONS` of them, so that an operation URL answers after a restart. With
``notarium host --store`` the same interface is kept in PostgreSQL instead
(:class:`notarium.host.store.StoreRegistry`), shared by every host process.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from notarium.durable import fsync_dir
from notarium.durable import replace as replace_file
from notarium.errors import ServiceError
from notarium.host.names import name_key

REGISTRY_FORMAT = 1
CREATING, SUCCEEDED, FAILED, DELETING, DELETED = "Creating", "Succeeded", "Failed", "Deleting", "Deleted"
IN_PROGRESS = "InProgress"
MAX_OPERATIONS = 1000  # finished operations remembered for polling


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def iso(t: datetime.datetime) -> str:
    return t.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")


def parse_iso(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True, slots=True)
class Caller:
    """Who made a management call: ``kind`` is ARM's createdByType (``Key`` for the host token,
    ``Application`` for an operator certificate), ``name`` says which."""

    name: str
    kind: str


@dataclass
class Operation:
    """A long-running management operation (ARM's Azure-AsyncOperation resource). ``owner`` is
    the host process running it (``notarium host --store``: another one settles it if that
    process dies)."""

    id: str
    ledger: str
    action: str  # "create" or "delete"
    status: str = IN_PROGRESS
    start_time: str = ""
    end_time: str | None = None
    error: dict[str, str] | None = None
    owner: str = ""

    def finish(self, error: dict[str, str] | None = None) -> None:
        self.status = "Failed" if error else "Succeeded"
        self.error = error
        self.end_time = iso(utcnow())


@dataclass(frozen=True, slots=True)
class LedgerRecord:
    name: str
    subscription: str
    resource_group: str
    location: str
    ledger_type: str
    state: str
    created_at: str
    created_by: str
    created_by_type: str
    modified_at: str
    modified_by: str
    modified_by_type: str
    tags: dict[str, str] = field(default_factory=dict)
    cert_principals: list[dict[str, str]] = field(default_factory=list)
    aad_principals: list[dict[str, str]] = field(default_factory=list)
    deleted_at: str | None = None
    deleted_by: str | None = None
    purge_after: str | None = None
    failure: str | None = None
    schema: str | None = None  # notarium host --store: the PostgreSQL schema of the ledger's log

    @property
    def key(self) -> str:
        return name_key(self.name)

    @property
    def gone(self) -> bool:
        """Deleted (or being deleted): not served, not listed, its name not free."""
        return self.state in (DELETING, DELETED)

    def modified(self, by: Caller, **changes: Any) -> LedgerRecord:
        return replace(self, modified_at=iso(utcnow()), modified_by=by.name, modified_by_type=by.kind, **changes)


class Registry:
    """The ledgers of one host. Not thread-safe: the host's event loop owns it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "registry.json"
        self.events = directory / "events.jsonl"
        self._records: dict[str, LedgerRecord] = {}
        self._operations: dict[str, Operation] = {}

    @classmethod
    def load(cls, directory: Path) -> Registry:
        registry = cls(directory)
        try:
            obj = json.loads(registry.path.read_text())
        except FileNotFoundError:
            return registry
        except (OSError, ValueError) as exc:
            raise ServiceError(f"cannot read {registry.path}: {exc}") from None
        if not isinstance(obj, dict) or obj.get("format") != REGISTRY_FORMAT:
            raise ServiceError(f"{registry.path} is not a notarium host registry of format {REGISTRY_FORMAT}")
        try:
            for item in obj["ledgers"]:
                record = LedgerRecord(**item)
                registry._records[record.key] = record
            for item in obj.get("operations", []):
                op = Operation(**item)
                registry._operations[op.id] = op
        except (KeyError, TypeError) as exc:
            raise ServiceError(f"{registry.path} holds a malformed ledger record: {exc}") from None
        return registry

    def save(self) -> None:
        body = {
            "format": REGISTRY_FORMAT,
            "ledgers": [asdict(r) for r in self._records.values()],
            "operations": [asdict(o) for o in self._operations.values()],
        }
        replace_file(self.path, json.dumps(body, indent=2, sort_keys=True).encode(), 0o600)

    def record_event(self, event: str, record: LedgerRecord, caller: Caller | None, **details: Any) -> None:
        """Append one line to ``events.jsonl`` (and make it durable)."""
        line = {
            "time": iso(utcnow()),
            "event": event,
            "ledger": record.name,
            "subscription": record.subscription,
            "resourceGroup": record.resource_group,
            "by": caller.name if caller else "host",
            "byType": caller.kind if caller else "Host",
            **details,
        }
        fd = os.open(self.events, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (json.dumps(line, sort_keys=True) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(self.directory)

    def get(self, name: str) -> LedgerRecord | None:
        return self._records.get(name_key(name))

    def put(self, record: LedgerRecord) -> None:
        self._records[record.key] = record
        self.save()

    def create(self, record: LedgerRecord) -> bool:
        """Record a new ledger (or one created again after a failure): False if the name is taken
        meanwhile (with several host processes, another one may have taken it)."""
        existing = self._records.get(record.key)
        if existing is not None and existing.state != FAILED:
            return False
        self.put(record)
        return True

    def transition(self, record: LedgerRecord, expected_state: str) -> bool:
        """Replace the record of ``record.name`` if it is still in ``expected_state``."""
        existing = self._records.get(record.key)
        if existing is None or existing.state != expected_state:
            return False
        self.put(record)
        return True

    def remove(self, name: str) -> None:
        self._records.pop(name_key(name), None)
        self.save()

    def put_operation(self, op: Operation) -> None:
        """Record an operation (new, or finished); the oldest finished ones are forgotten."""
        self._operations[op.id] = op
        finished = [k for k, o in self._operations.items() if o.status != IN_PROGRESS]
        for key in finished[: max(0, len(self._operations) - MAX_OPERATIONS)]:
            del self._operations[key]
        self.save()

    def get_operation(self, op_id: str) -> Operation | None:
        return self._operations.get(op_id)

    def unfinished_operations(self) -> list[Operation]:
        return [o for o in self._operations.values() if o.status == IN_PROGRESS]

    def __iter__(self) -> Iterator[LedgerRecord]:
        return iter(sorted(self._records.values(), key=lambda r: r.key))

    def listed(self, subscription: str, resource_group: str | None = None) -> list[LedgerRecord]:
        """The ledgers of a subscription (and resource group), deleted ones left out; ARM compares
        subscription and resource group names regardless of case."""
        return [
            r
            for r in self
            if not r.gone
            and r.subscription.lower() == subscription.lower()
            and (resource_group is None or r.resource_group.lower() == resource_group.lower())
        ]

    def due_for_purge(self, now: datetime.datetime) -> list[LedgerRecord]:
        return [r for r in self if r.state == DELETED and r.purge_after is not None and parse_iso(r.purge_after) <= now]
