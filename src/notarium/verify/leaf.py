"""Leaves, commit evidence and claims digests (ccf-ledger-format.md §3.4, §4.3; acl-rest-api.md §8.3)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from collections.abc import Mapping, Sequence
from typing import Any

ZERO_CLAIMS = bytes(32)
LEDGER_ENTRY_V1 = "LedgerEntryV1"


def leaf_hash(write_set_digest: bytes, commit_evidence_digest: bytes, claims_digest: bytes) -> bytes:
    """The Merkle leaf of an entry of type 4: H(wsd ‖ H(commit evidence) ‖ claims digest)."""
    return hashlib.sha256(write_set_digest + commit_evidence_digest + claims_digest).digest()


def commit_evidence_digest(commit_evidence: str) -> bytes:
    """H(utf8(commit evidence)): what the entry's public header stores."""
    return hashlib.sha256(commit_evidence.encode()).digest()


def ledger_entry_claim_inner(collection_id: str, contents: str, secret_key: bytes) -> bytes:
    """The inner digest of an ACL ``LedgerEntryV1`` claim (the ``ClaimDigest`` value)."""
    return claim_inner_from_macs(
        hmac.digest(secret_key, collection_id.encode(), "sha256"),
        hmac.digest(secret_key, contents.encode(), "sha256"),
    )


def claim_inner_from_macs(collection_mac: bytes, contents_mac: bytes) -> bytes:
    """H(HMAC(k, collection id) ‖ HMAC(k, contents)), given the two MACs."""
    return hashlib.sha256(collection_mac + contents_mac).digest()


def single_claim_digest(inner: bytes) -> bytes:
    """The claims digest of exactly one ``LedgerEntryV1`` claim with this inner digest."""
    d = hashlib.sha256(LEDGER_ENTRY_V1.encode() + inner).digest()
    return hashlib.sha256(struct.pack("<I", 1) + d).digest()


def ledger_entry_claims_digest(collection_id: str, contents: str, secret_key: bytes) -> bytes:
    """The claims digest of one ``LedgerEntryV1`` claim, as ACL computes it."""
    return single_claim_digest(ledger_entry_claim_inner(collection_id, contents, secret_key))


def _claim_digest(claim: Mapping[str, Any]) -> bytes:
    kind = claim.get("kind")
    if kind == "LedgerEntry":
        e = claim.get("ledgerEntry")
        if not isinstance(e, Mapping) or set(e) != {
            "collectionId",
            "contents",
            "protocol",
            "secretKey",
        }:
            raise ValueError("a LedgerEntry claim needs collectionId, contents, protocol, secretKey")
        if not all(isinstance(e[k], str) for k in e):
            raise ValueError("LedgerEntry claim fields must be strings")
        if e["protocol"] != LEDGER_ENTRY_V1:
            raise ValueError(f"unknown ledger entry claim protocol {e['protocol'][:40]!r}")
        try:
            key = base64.b64decode(e["secretKey"], validate=True)
        except binascii.Error as exc:
            raise ValueError("LedgerEntry claim secretKey is not base64") from exc
        inner = ledger_entry_claim_inner(e["collectionId"], e["contents"], key)
        return hashlib.sha256(LEDGER_ENTRY_V1.encode() + inner).digest()
    if kind == "ClaimDigest":
        d = claim.get("digest")
        if not isinstance(d, Mapping) or set(d) != {"value", "protocol"}:
            raise ValueError("a ClaimDigest claim needs value and protocol")
        if not isinstance(d["value"], str) or not isinstance(d["protocol"], str):
            raise ValueError("ClaimDigest fields must be strings")
        try:
            value = bytes.fromhex(d["value"])
        except ValueError as exc:
            raise ValueError("ClaimDigest value is not hex") from exc
        return hashlib.sha256(d["protocol"].encode() + value).digest()
    raise ValueError(f"unknown application claim kind {str(kind)[:40]!r}")


def compute_claims_digest(claims: Sequence[Mapping[str, Any]]) -> bytes:
    """The claims digest of a list of ACL application claims (acl-rest-api.md §8.3).

    Raises ``ValueError`` on malformed claims.
    """
    if not isinstance(claims, Sequence) or not claims:
        raise ValueError("application claims must be a non-empty list")
    parts = [struct.pack("<I", len(claims))]
    for claim in claims:
        if not isinstance(claim, Mapping):
            raise ValueError("each application claim must be an object")
        parts.append(_claim_digest(claim))
    return hashlib.sha256(b"".join(parts)).digest()
