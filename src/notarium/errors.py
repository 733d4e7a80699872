"""notarium's exceptions.

Every error notarium raises on purpose derives from :class:`NotariumError`, so a caller (and the
CLI) can catch one class and print :meth:`NotariumError.diagnostics`::

    NotariumError
    ├── VerificationError        untrusted bytes failed a check (parse failures included)
    │   └── LedgerAuditError     a ledger failed the audit; names the TxId and the check
    ├── ServiceError             a service directory is missing, locked or inconsistent
    │   └── StorageError         the PostgreSQL store failed or refused an operation
    │       ├── StoreUnavailableError  PostgreSQL cannot be reached right now: retry later
    │       └── FencedError      this node no longer holds the lease: it must stop writing
    └── LedgerError              the engine refused an operation (closed, bad write set, ...)
        └── NotPrimaryError      a write reached a node that is not the primary

Caller misuse (wrong argument types, impossible values) raises plain ``ValueError`` or
``TypeError``, never one of these.
"""

from __future__ import annotations


class NotariumError(Exception):
    """Root of notarium's exceptions."""

    def diagnostics(self) -> str:
        """A human-readable explanation, suitable for a terminal."""
        return str(self)


class VerificationError(NotariumError):
    """Untrusted data failed verification: a bad signature, proof, format, or identity.

    ``check`` names the check that failed (e.g. ``"signature-root"``), when known.
    """

    def __init__(self, message: str, *, check: str = "") -> None:
        super().__init__(message)
        self.check = check


class LedgerAuditError(VerificationError):
    """A ledger failed the audit.

    ``txid`` is the transaction at which the failure was found (``None`` for file-level
    failures), ``check`` a short name of the check that failed.
    """

    def __init__(self, message: str, *, txid: str | None = None, check: str = "") -> None:
        super().__init__(message, check=check)
        self.txid = txid

    def __reduce__(self) -> tuple[type[LedgerAuditError], tuple[str], dict[str, str | None]]:
        # keep txid and check when the error crosses a process boundary (parallel audits)
        return (type(self), (str(self),), {"txid": self.txid, "check": self.check})

    def diagnostics(self) -> str:
        where = f" at TxId {self.txid}" if self.txid else ""
        check = f" [{self.check}]" if self.check else ""
        return f"audit failed{where}{check}: {self}"


class ServiceError(NotariumError):
    """A service directory is missing, already exists, is locked, or is inconsistent."""


class StorageError(ServiceError):
    """The PostgreSQL store failed or refused an operation (never shows the connection password)."""


class StoreUnavailableError(StorageError):
    """The PostgreSQL store cannot be reached right now: connecting failed, the connection was lost,
    or the server is starting, stopping or out of connections. Worth retrying later."""


class FencedError(StorageError):
    """A write was refused because the writer no longer holds the lease ``(view, holder)``.

    Nothing was written; the node must stop writing (another node sequences now).
    """


class LedgerError(NotariumError):
    """The ledger engine refused an operation."""


class NotPrimaryError(LedgerError):
    """A write reached a replicated ledger that is not the primary (docs/design/ha.md)."""
