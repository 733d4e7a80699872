"""notarium's verification core: pure functions over untrusted bytes.

Imports only the standard library, ``cryptography`` and ``cbor2`` (and notarium's ``errors`` and
``types``). Every failure on untrusted input raises :class:`notarium.errors.VerificationError`.
"""

from notarium.verify.audit import AuditReport, LedgerAuditor
from notarium.verify.consistency import (
    SignedRoot,
    consistency_proof,
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
    "consistency_proof",
    "proof_from_json",
    "proof_to_json",
    "verify_consistency",
    "verify_cose_receipt",
    "verify_extension",
    "verify_json_receipt",
    "verify_signed_root",
]
