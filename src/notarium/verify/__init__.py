"""notarium's verification core: pure functions over untrusted bytes.

Imports only the standard library, ``cryptography`` and ``cbor2`` (and notarium's ``errors`` and
``types``). Every failure on untrusted input raises :class:`notarium.errors.VerificationError`.
It verifies; it writes nothing (what the ledger writes is built in :mod:`notarium.ledger`).

**The core**, what verifies a receipt (JSON and COSE) and a ledger file, in reading order (each
module uses only those before it; kept under 1,500 lines, docs/design/architecture.md):
:mod:`.tables` (table names), :mod:`.keys` (certificates, key ids), :mod:`.cose` (COSE_Sign1),
:mod:`.merkle` (CCF's tree), :mod:`.leaf` (leaves, claims digests), :mod:`.signature` (signature
transactions), :mod:`.receipt` (receipts), :mod:`.entry` (entries, chunk files), :mod:`.chunk`
(one ledger file on its own).

**Beyond the core**: :mod:`.audit` (linking the chunks of a whole ledger: roots against every
entry, nodes trusted by governance, identity changes, checks with the ledger secret),
:mod:`.secrets` (commit evidence from the ledger secret), :mod:`.consistency` (signed roots and
consistency proofs), :mod:`.standalone` (the self-contained verifier page).
"""

from notarium.verify.audit import AuditReport, LedgerAuditor
from notarium.verify.consistency import (
    SignedRoot,
    proof_from_json,
    proof_to_json,
    verify_consistency,
    verify_extension,
    verify_signed_root,
)
from notarium.verify.leaf import compute_claims_digest
from notarium.verify.receipt import (
    CoseReceiptResult,
    JsonReceiptResult,
    verify_cose_receipt,
    verify_json_receipt,
)

__all__ = [
    "AuditReport",
    "CoseReceiptResult",
    "JsonReceiptResult",
    "LedgerAuditor",
    "SignedRoot",
    "compute_claims_digest",
    "proof_from_json",
    "proof_to_json",
    "verify_consistency",
    "verify_cose_receipt",
    "verify_extension",
    "verify_json_receipt",
    "verify_signed_root",
]
