"""Disaster recovery of a replicated service from its log in PostgreSQL (docs/operations/recovery.md).

Every node lost its directory (or its sealed secrets): no node can open the ledger, and none can
admit a new one. A fresh node directory is made from the log and the service certificate the
operator pins, in two steps around the members' shares (:mod:`notarium.server.recovery` serves them):

1. :func:`prepare_store_recovery` (no secret needed): the log is copied into ``DIR/ledger`` as
   chunk files and audited against the pinned certificate (a log that does not verify is refused
   before any member is asked for a share); the ledger's id and type and its earlier identity
   changes are read from it; a **new service identity** is made at once (new service and node keys,
   the endorsement of the pinned identity by the new key), since the recovering node needs a TLS
   certificate and the previous service key is lost: members pin the new ``DIR/service_cert.pem``
   to submit their shares (as in CCF, where the recovered service's identity exists before the
   shares are submitted). ``DIR`` is then a :class:`~notarium.ledger.restore.DirectoryRecovery`.
2. :func:`finish_store_recovery`, once the secrets are restored and sealed: the node opens the copy
   (every entry and signature verified again, now with the secrets), takes the service's lease
   when it is free (a live primary means there is nothing to recover: refused), catches up, drops
   the unsigned tail (fenced), and records the identity change as the primary of a new view, in the
   log. It then hands the lease on: the node serves as usual and other nodes join it.

``DIR/RECOVERING`` marks a directory between the two steps: preparing it again (the process was
stopped while waiting for shares) keeps its new identity (members may have pinned it) and copies
the log afresh.
"""

from __future__ import annotations

import datetime
import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from cryptography import x509

from notarium.auditing import audit, find_target
from notarium.cluster.dump import dump_log
from notarium.cluster.node import Log, NodeSettings, ReplicaNode
from notarium.cluster.sealing import NodeCourier
from notarium.durable import fsync_dir
from notarium.errors import LedgerAuditError, ServiceError, VerificationError
from notarium.ledger import identity as ids
from notarium.ledger.config import EngineConfig, LogRow, ReplicaLog
from notarium.ledger.identity_chain import load_identity_chain
from notarium.ledger.layout import Layout, ServiceConfig
from notarium.ledger.service import open_ledger
from notarium.types import TxStatus
from notarium.verify import tables
from notarium.verify.entry import decode_tables, parse_entry
from notarium.verify.keys import key_id

log = logging.getLogger("notarium.cluster")

MARKER = "RECOVERING"
LEASE_WAIT_S = 30.0  # how long a lease still held may take to expire before the recovery is refused
_WATCHED = (tables.SERVICE_INFO, tables.PREVIOUS_SERVICE_IDENTITY, tables.PREVIOUS_IDENTITY_ENDORSEMENT)
_WATCHED_BYTES = tuple(name.encode() for name in _WATCHED)


class StoreLog(Protocol):
    """What the recovery needs of the log (notarium.ledger.storage.postgres.PostgresLog)."""

    def read(self, start: int, end: int | None = None, limit: int = 10_000) -> list[LogRow]: ...


@dataclass
class LogFacts:
    """What the public log says about the service, at or before its last signature."""

    service_info: dict[str, object] | None = None
    previous: list[tuple[bytes, bytes]] = field(default_factory=list)  # (previous cert, endorsement) PEMs
    _pending: list[tuple[int, str, bytes]] = field(default_factory=list)

    def see(self, seqno: int, data: bytes) -> None:
        if not any(name in data for name in _WATCHED_BYTES):
            return
        try:
            e = parse_entry(data, 0, len(data))
            public = decode_tables(data, e.tables_start, e.public_end) if e.tables_start < e.public_end else {}
        except (VerificationError, ValueError):
            return  # the audit names it
        for table in _WATCHED:
            value = public.get(table, {}).get(tables.SINGLETON_KEY)
            if value is not None:
                self._pending.append((seqno, table, value))

    def signed(self) -> None:
        self._settle()

    def _settle(self) -> None:
        change: dict[str, bytes] = {}
        for _seqno, table, value in self._pending:
            if table == tables.SERVICE_INFO:
                self.service_info = json.loads(value)
            else:
                change[table] = value
            if len(change) == 2:
                self.previous.append(
                    (change[tables.PREVIOUS_SERVICE_IDENTITY], change[tables.PREVIOUS_IDENTITY_ENDORSEMENT])
                )
                change = {}
        self._pending = []


class _Watching:
    """The log, read through :func:`dump_log`, noting the service facts of each row as it passes."""

    def __init__(self, store: StoreLog, facts: LogFacts) -> None:
        self._store, self._facts = store, facts

    def read(self, start: int, end: int | None = None, limit: int = 10_000) -> list[LogRow]:
        rows = self._store.read(start, end, limit)
        for seqno, _view, is_signature, data in rows:
            self._facts.see(seqno, data)
            if is_signature:
                self._facts.signed()
        return rows


def prepare_store_recovery(
    directory: Path, store: StoreLog, service_cert: x509.Certificate | None, hosts: Sequence[str] = ()
) -> x509.Certificate:
    """Make ``directory`` (absent, empty, or left by an earlier run of this) the recovering node of
    the service whose log ``store`` holds and whose current identity is ``service_cert`` (``None``:
    the identity the log records, for a ledger host whose operator runs the store too). Returns
    the new service certificate (members pin it to submit their shares). :class:`ServiceError`
    when the directory is another one, or the log does not verify against the certificate; nothing
    of an existing directory is changed then but its copy of the log."""
    layout = Layout(directory.absolute())
    resuming = (layout.root / MARKER).is_file()
    if not resuming and layout.root.exists() and (not layout.root.is_dir() or any(layout.root.iterdir())):
        raise ServiceError(
            f"{layout.root} is not empty: a store recovery makes a new node directory (give a new or empty one)"
        )
    if resuming and layout.sealed_ledger_secret.exists():
        raise ServiceError(f"{layout.root} has its ledger secrets already: serve it without --recover")
    staging = layout.root.with_name(f".{layout.root.name}.recover-log")
    shutil.rmtree(staging, ignore_errors=True)
    facts = LogFacts()
    try:
        count = dump_log(_Watching(store, facts), staging)
        if count == 0:
            raise ServiceError("the replicated log is empty: there is nothing to recover")
        try:
            report = audit(replace(find_target(staging), service_cert=service_cert), workers=1)
        except LedgerAuditError as exc:
            raise ServiceError(
                f"the replicated log does not verify against the pinned service certificate: {exc}"
            ) from None
        info = facts.service_info or {}
        if service_cert is None:
            try:
                service_cert = x509.load_pem_x509_certificate(str(info.get("cert") or "").encode())
            except ValueError:
                raise ServiceError("the replicated log records no service certificate") from None
        if info.get("cert") != ids.cert_pem(service_cert).decode():
            raise ServiceError("the replicated log's service identity is not the pinned service certificate")
        if resuming:
            new_cert = ids.load_cert(layout.service_cert)
            kept = sorted(layout.previous_identities.glob("*.service_cert.pem"))
            if not kept or ids.load_cert(kept[-1]) != service_cert:
                raise ServiceError(f"{layout.root} recovers another service identity than the pinned certificate")
        else:
            new_cert = _new_identity(layout, service_cert, info, facts.previous, tuple(hosts))
        shutil.rmtree(layout.ledger_dir, ignore_errors=True)
        shutil.rmtree(layout.index_file.parent, ignore_errors=True)
        staging.rename(layout.ledger_dir)
        layout.index_file.parent.mkdir()
        fsync_dir(layout.root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.warning(
        "store recovery: copied and verified the replicated log (%d transactions, last signed %s)",
        report.transactions,
        report.last_signed,
    )
    return new_cert


def _new_identity(
    layout: Layout,
    previous: x509.Certificate,
    info: dict[str, object],
    history: list[tuple[bytes, bytes]],
    hosts: tuple[str, ...],
) -> x509.Certificate:
    """The new service and node identities in a new directory, endorsing ``previous`` (as
    :func:`notarium.ledger.service.recover_service_identity` does for a directory that has one)."""
    data = info.get("service_data")
    data = data if isinstance(data, dict) else {}
    ledger_id, ledger_type = str(data.get("ledgerId") or ""), str(data.get("ledgerType") or "Private")
    if not ledger_id:
        raise ServiceError("the replicated log's service record names no ledger id")
    now = datetime.datetime.now(datetime.UTC)
    service_key = ids.new_ec_key()
    service_cert = ids.service_certificate(service_key, now=now)
    node_key = ids.new_ec_key()
    node_cert = ids.node_certificate(node_key.public_key(), service_key, service_cert, hosts=list(hosts), now=now)
    endorsement = ids.endorse_previous_identity(previous, service_key, service_cert, now=now)
    root = layout.root
    staging = root.with_name(f".{root.name}.recover-identity")
    shutil.rmtree(staging, ignore_errors=True)
    made = Layout(staging)
    for sub in ("secrets", "node", "previous_service_identities"):
        (staging / sub).mkdir(parents=True, mode=0o700 if sub == "secrets" else 0o755)
    for n, (cert_pem, endorsement_pem) in enumerate(history):
        ids.write_public(made.previous_identities / f"{n:04d}.service_cert.pem", cert_pem)
        ids.write_public(made.previous_identities / f"{n:04d}.endorsement.pem", endorsement_pem)
    n = len(history)
    ids.write_public(made.previous_identities / f"{n:04d}.service_cert.pem", ids.cert_pem(previous))
    ids.write_public(made.previous_identities / f"{n:04d}.endorsement.pem", ids.cert_pem(endorsement))
    ids.write_secret(made.service_key, ids.private_pem(service_key))
    ids.write_secret(made.node_key, ids.private_pem(node_key))
    ids.write_public(made.node_cert, ids.cert_pem(node_cert))
    ids.write_public(made.service_cert, ids.cert_pem(service_cert))
    config = ServiceConfig(ledger_id, ledger_type, key_id(node_key.public_key()), hosts)
    ids.write_public(made.config, config.to_json().encode())
    try:
        load_identity_chain(made, service_cert)  # the recorded chain must hold with the new link
    except ServiceError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ServiceError(f"the replicated log's identity history does not chain: {exc}") from None
    (staging / MARKER).write_text("a store recovery waits for the members' recovery shares\n")
    if root.exists():
        root.rmdir()  # empty: checked by the caller
    staging.rename(root)
    fsync_dir(root.parent)
    return service_cert


class RecoveryLog(Log, ReplicaLog, Protocol):
    """The log a recovering node writes to (notarium.ledger.storage.postgres.PostgresLog)."""

    def append(self, view: int, holder: str, rows: Sequence[LogRow]) -> None: ...


def finish_store_recovery(directory: Path, store: RecoveryLog, address: str, lease_ttl_s: float) -> str:
    """After the secrets are restored and sealed in ``directory``: open it as a node of the log,
    take the lease, and record the new service identity in the log as the primary of a new view;
    then release the lease. Returns the TxId recorded."""
    layout = Layout(directory.absolute())
    chain = load_identity_chain(layout, ids.load_cert(layout.service_cert))
    previous = ids.load_cert(sorted(layout.previous_identities.glob("*.service_cert.pem"))[-1])
    endorsement = chain[1]
    ledger = open_ledger(layout.root, EngineConfig(fsync=False), replica=store, courier=NodeCourier())
    try:
        node_id = ledger.node_id
        node = ReplicaNode(ledger, store, NodeSettings(node_id=node_id, address=address, lease_ttl_s=lease_ttl_s))
        view = _take_lease(store, node_id, address, lease_ttl_s, ledger.committed.view + 1)
        try:
            node.check(refuse=True)
            committed = node.catch_up()
            dropped = store.truncate_after(view, node_id, committed)
            if dropped:
                log.warning("store recovery: dropped %d unsigned transaction(s) after %d", dropped, committed)
            ledger.promote(view)
            txid = ledger.record_identity_change(previous, endorsement)
            if ledger.wait_committed(txid, timeout=60) != TxStatus.COMMITTED:
                raise ServiceError(f"the service identity change {txid} did not commit")
            ledger.close()
        finally:
            store.release(view, node_id)
    finally:
        ledger.close()
    (layout.root / MARKER).unlink(missing_ok=True)
    log.warning("store recovery: the new service identity is recorded in the log at %s", txid)
    return str(txid)


def _take_lease(store: Log, node_id: str, address: str, ttl_s: float, min_view: int) -> int:
    """The service's lease, once free. A lease renewed meanwhile means a node still leads the
    service: there is nothing to recover (:class:`ServiceError`)."""
    deadline = time.monotonic() + max(LEASE_WAIT_S, 3 * ttl_s)
    last = store.lease()
    while True:
        lease = store.lease()
        if lease.holder is None or lease.expires_in_s is None or lease.expires_in_s < 0:
            view = store.try_acquire(node_id, address, lease.view, ttl_s, min_view=min_view)
            if view is not None:
                return view
        elif (
            lease.view != last.view
            or time.monotonic() > deadline
            or (last.expires_in_s is not None and lease.expires_in_s > last.expires_in_s + 0.05)
        ):
            raise ServiceError(
                f"a node still leads the service (the lease of view {lease.view} is being renewed): its ledger "
                "secrets are not lost, so there is nothing to recover; stop this recovery and join that node instead"
            )
        last = lease
        time.sleep(0.1)
