"""Reading a ledger from disk for the auditor: file selection, secrets, progress.

The checks themselves are in :mod:`notarium.verify.audit`; this module only finds the files
and feeds them in order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from notarium.errors import LedgerAuditError, ServiceError
from notarium.ledger.layout import Layout
from notarium.types import TxId
from notarium.verify.audit import AuditReport, LedgerAuditor
from notarium.verify.entry import ChunkName
from notarium.verify.keys import load_pem_cert

Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class AuditTarget:
    chunk_files: list[Path]
    service_cert: x509.Certificate | None
    ledger_secret: bytes | None
    total_bytes: int


def find_target(path: Path, service_cert_file: Path | None = None) -> AuditTarget:
    """A service directory (its ``ledger/`` folder, certificate and secret) or a folder of chunks."""
    if not path.is_dir():
        raise ServiceError(f"{path} is not a directory")
    layout = Layout(path)
    secret: bytes | None = None
    folder = path
    if layout.config.exists():
        folder = layout.ledger_dir
        if service_cert_file is None:
            service_cert_file = layout.service_cert
        try:
            secret = layout.sealed_ledger_secret.read_bytes()
        except OSError:
            secret = None
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


def audit(target: AuditTarget, *, expect: TxId | None = None, progress: Progress | None = None) -> AuditReport:
    """Verify every chunk in order; raise :class:`LedgerAuditError` on the first failure."""
    auditor = LedgerAuditor(target.service_cert, ledger_secret=target.ledger_secret)
    for path in target.chunk_files:
        data = path.read_bytes()
        auditor.add_chunk(path.name, data)
        if progress is not None:
            progress(len(data))
    report = auditor.finish()
    if expect is not None and (report.last_signed is None or report.last_signed.seqno < expect.seqno):
        raise LedgerAuditError(
            f"the ledger is signed only up to {report.last_signed}, but {expect} was expected (truncated ledger)",
            check="expected-tip",
        )
    return report
