"""Reading a ledger from disk for the auditor: file selection, secrets, progress.

The checks themselves are in :mod:`notarium.verify.chunk` and :mod:`notarium.verify.audit`; this
module only finds the files and feeds them in order.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from notarium.errors import LedgerAuditError, ServiceError, VerificationError
from notarium.ledger.layout import Layout
from notarium.recovery.chain import LedgerSecrets
from notarium.recovery.records import scan_recovery_records
from notarium.types import TxId
from notarium.verify.audit import AuditReport, LedgerAuditor, find_changed_entry
from notarium.verify.chunk import ChunkScan, scan_chunk
from notarium.verify.entry import ChunkName
from notarium.verify.keys import load_pem_cert

Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class AuditTarget:
    chunk_files: list[Path]
    service_cert: x509.Certificate | None
    ledger_secret: LedgerSecrets | None  # checks the unsigned tail, and names a changed entry
    total_bytes: int
    # only to name a changed entry (`audit --store` with a node's directory: its secrets may lag
    # behind the log's unsigned tail, which they are therefore not asked to authenticate)
    entry_secrets: LedgerSecrets | None = None


def find_target(path: Path, service_cert_file: Path | None = None) -> AuditTarget:
    """A service directory (its ``ledger/`` folder, certificate and secret), an export (its ``ledger/``
    folder and the ``service_cert.pem`` pinned when it was exported) or a folder of chunks."""
    if not path.is_dir():
        raise ServiceError(f"{path} is not a directory")
    layout = Layout(path)
    secret: LedgerSecrets | None = None
    folder = path
    if layout.config.exists():
        folder = layout.ledger_dir
        if service_cert_file is None:
            service_cert_file = layout.service_cert
        secret = directory_secrets(layout)
    elif layout.ledger_dir.is_dir() and layout.service_cert.is_file():  # an export (notarium export)
        folder = layout.ledger_dir
        if service_cert_file is None:
            service_cert_file = layout.service_cert
    cert = None
    if service_cert_file is not None:
        try:
            cert = load_pem_cert(service_cert_file.read_bytes(), f"service certificate {service_cert_file}")
        except OSError as exc:
            raise ServiceError(f"cannot read {service_cert_file}: {exc.strerror}") from None
    chunks = []
    for p in folder.iterdir():
        name = ChunkName.parse(p.name)
        if name is not None:
            chunks.append((name.start, name.end is None, p))
    chunks.sort(key=lambda c: (c[0], c[1]))
    files = [p for _s, _live, p in chunks]
    return AuditTarget(files, cert, secret, sum(p.stat().st_size for p in files))


def directory_secrets(layout: Layout) -> LedgerSecrets | None:
    """The ledger secrets sealed in a service directory, or ``None`` if they cannot be read."""
    try:
        return LedgerSecrets.from_sealed(layout.sealed_ledger_secret.read_bytes())
    except (OSError, ValueError):
        return None


PARALLEL_MIN_BYTES = 16 << 20  # below this, worker start-up costs more than it saves


def _scan_file(path: str, service_key_der: bytes | None, want_tail: bool) -> ChunkScan:
    p = Path(path)
    return scan_chunk(p.name, p.read_bytes(), service_key_der=service_key_der, want_tail=want_tail)


def audit(
    target: AuditTarget,
    *,
    expect: TxId | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
) -> AuditReport:
    """Verify every chunk in order; raise :class:`LedgerAuditError` on the first failure.

    Chunks are scanned in parallel worker processes (one per core by default) and linked in
    order in this process; small ledgers are scanned in-process. A signed root that does not
    match the ledger is reported at that signature transaction, unless the ledger secrets are
    known: then at the entry they do not authenticate (the one that was changed).
    """
    auditor = LedgerAuditor(target.service_cert, ledger_secret=target.ledger_secret)
    try:
        report = _audit(auditor, target, progress, workers)
    except LedgerAuditError as exc:
        changed = _changed_entry(exc, auditor, target)
        if changed is None:
            raise
        raise changed from exc
    if expect is not None and (report.last_signed is None or report.last_signed.seqno < expect.seqno):
        raise LedgerAuditError(
            f"the ledger is signed only up to {report.last_signed}, but {expect} was expected (truncated ledger)",
            check="expected-tip",
        )
    return report


def _audit(auditor: LedgerAuditor, target: AuditTarget, progress: Progress | None, workers: int | None) -> AuditReport:
    files = list(target.chunk_files)
    workers = workers if workers is not None else (os.cpu_count() or 1)
    # without a pinned identity, the first chunk (which names it) is scanned here first
    while files and (auditor.service_key_der is None or workers <= 1 or target.total_bytes < PARALLEL_MIN_BYTES):
        path = files.pop(0)
        auditor.add_scan(_scan_file(str(path), auditor.service_key_der, auditor.wants_tail))
        if progress is not None:
            progress(path.stat().st_size)
    if files:
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            window: deque[tuple[Path, Future[ChunkScan]]] = deque()
            key, tail = auditor.service_key_der, auditor.wants_tail
            for path in files:
                window.append((path, pool.submit(_scan_file, str(path), key, tail)))
                if len(window) > 2 * workers:
                    _link_next(auditor, window, progress)
            while window:
                _link_next(auditor, window, progress)
    return auditor.finish()


def _changed_entry(exc: LedgerAuditError, auditor: LedgerAuditor, target: AuditTarget) -> LedgerAuditError | None:
    """When a signed root does not match the entries it covers (those after the previous
    signature), the one of them that the ledger secrets do not authenticate, as the failure."""
    secrets = target.ledger_secret or target.entry_secrets
    if secrets is None or exc.check != "signature-root" or exc.txid is None:
        return None
    try:
        signature = TxId.parse(exc.txid)
    except ValueError:
        return None
    previous = auditor.report.last_signed
    first = 1 if previous is None else previous.seqno + 1
    last = signature.seqno
    if target.ledger_secret is None and target.chunk_files:
        # another directory's secrets may miss a rekey of this ledger (a node that stopped
        # following at it): they name nothing from the first secret they lack
        try:
            _shares, chain = scan_recovery_records(target.chunk_files[0].parent)
        except (OSError, ValueError, VerificationError):
            return None
        unknown = [r.successor_start_seqno for r in chain.values() if r.successor_start_seqno not in secrets.starts]
        last = min([last, *(start - 1 for start in unknown)])
    for path in target.chunk_files:
        name = ChunkName.parse(path.name)
        if name is None or name.start > last or (name.end is not None and name.end < first):
            continue
        found = find_changed_entry(path.read_bytes(), first, last, list(secrets))
        if found is not None:
            txid, problem = found
            return LedgerAuditError(
                f"transaction {txid} was changed: {problem} (the root signed at {signature}, which covers it, "
                "does not match the ledger)",
                txid=str(txid),
                check="entry-secret",
            )
    return None


def _link_next(
    auditor: LedgerAuditor, window: deque[tuple[Path, Future[ChunkScan]]], progress: Progress | None
) -> None:
    path, future = window.popleft()
    try:
        auditor.add_scan(future.result())
    except BaseException:
        for _p, f in window:
            f.cancel()
        raise
    if progress is not None:
        progress(path.stat().st_size)
