"""What the client raises. Every error is a :class:`notarium.errors.NotariumError` with
``diagnostics()`` saying what to do; verification failures are ``VerificationError``::

    NotariumError
    ├── ClientError
    │   ├── ApiError            the ledger answered with an error (status, ACL code, message)
    │   ├── UnreachableError    no answer: connection, TLS or timeout
    │   └── NotCommittedError   a transaction stayed Pending past the wait, or became Invalid
    └── VerificationError       (notarium.errors) a receipt, signed root or chunk failed a check
        └── ForkError           the ledger does not extend what this client trusted before
"""

from __future__ import annotations

from typing import Any

from notarium.errors import NotariumError, VerificationError
from notarium.verify.consistency import SignedRoot

_HINTS = {
    "InvalidAuthenticationInfo": "the client certificate (or token) is not a user of this ledger: "
    "an Administrator can add it with `notarium users add <fingerprint> --role Reader`",
    "NotAllowed": "this user's role does not allow it: an Administrator can change the role",
    "InvalidTransactionId": "no such transaction (or it was lost before it committed): check the id",
    "EntrySizeCapacityExceeded": "the entry is larger than this ledger accepts",
    "ServiceUnavailable": "the ledger is not available right now: retry later",
}


class ClientError(NotariumError):
    """A request to the ledger did not succeed."""


class ApiError(ClientError):
    """The ledger answered with an error in ACL's format."""

    def __init__(self, status: int, code: str, message: str, *, method: str = "", path: str = "") -> None:
        super().__init__(f"{method} {path}: {status} {code}: {message}".strip())
        self.status = status
        self.code = code
        self.message = message

    def diagnostics(self) -> str:
        hint = _HINTS.get(self.code)
        return f"{self}" + (f"\n  hint: {hint}" if hint else "")


class UnreachableError(ClientError):
    """No answer from the ledger: connection refused, TLS failure (wrong pinned certificate?), timeout."""

    def diagnostics(self) -> str:
        return (
            f"{self}\n  hint: check the endpoint, that the server runs, and that the service certificate you pinned "
            "is this ledger's (`notarium serve` prints where it is)"
        )


class NotCommittedError(ClientError):
    """A transaction did not become Committed: still Pending after the wait, or Invalid."""

    def __init__(self, txid: str, state: str, waited_s: float) -> None:
        super().__init__(f"transaction {txid} is {state} after {waited_s:.1f} s")
        self.txid = txid
        self.state = state


class ForkError(VerificationError):
    """The ledger does not extend the signed root this client trusted: a fork (a different history
    at a size already seen), a rollback (a smaller tree), or a proof that does not verify.

    ``trusted`` and ``presented`` are the two signed roots, ``proof`` the consistency proof the
    server gave (``None`` if it gave none): keep them, they are the evidence.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        trusted: SignedRoot,
        presented: SignedRoot | None,
        proof: list[bytes] | None,
    ) -> None:
        super().__init__(message, check=kind)
        self.kind = kind
        self.trusted = trusted
        self.presented = presented
        self.proof = proof

    def evidence(self) -> dict[str, Any]:
        """Both signed roots and the proof, as JSON: each signed root verifies against the service
        certificate on its own, so anyone can check the claim."""
        return {
            "kind": self.kind,
            "message": str(self),
            "trusted": self.trusted.to_json(),
            "presented": self.presented.to_json() if self.presented is not None else None,
            "proof": [p.hex() for p in self.proof] if self.proof is not None else None,
        }

    def diagnostics(self) -> str:
        return (
            f"the ledger does not extend what this client verified before ({self.kind}): {self}\n"
            "  this is evidence of a forked or rolled-back ledger: keep the evidence (--json prints it) "
            "and tell the ledger's operator and its other users"
        )
