"""Receipts: ACL/CCF JSON receipts and RFC 9942 COSE receipts in the CCF profile.

Builders and verifiers of both formats (ccf-ledger-format.md §6; acl-rest-api.md §8). A verifier
must already trust the service identity; a receipt never establishes it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from notarium.errors import VerificationError
from notarium.types import TxId
from notarium.verify import cose
from notarium.verify.keys import check_endorsement, ec_public_key, key_id, load_pem_cert
from notarium.verify.leaf import commit_evidence_digest, compute_claims_digest, leaf_hash
from notarium.verify.merkle import PathElement, root_from_path
from notarium.verify.signature import (
    b64decode_strict,
    check_cose_root_header,
    verify_root_signature,
)

MAX_PROOF_LENGTH = 64
ZERO_CLAIMS_HEX = "00" * 32


@dataclass(frozen=True, slots=True)
class LeafComponents:
    write_set_digest: bytes
    commit_evidence: str
    claims_digest: bytes

    def leaf(self) -> bytes:
        return leaf_hash(self.write_set_digest, commit_evidence_digest(self.commit_evidence), self.claims_digest)


# --- JSON receipts ---


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


MAX_RECEIPT_DEPTH = 16


def _normalise(obj: Any, depth: int = 0) -> Any:
    """snake_case keys to camelCase, recursively (as the ACL SDK does), with bounded depth."""
    if depth > MAX_RECEIPT_DEPTH:
        raise VerificationError("receipt is nested too deeply")
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            key = _camel(str(k))
            if key in out:
                raise VerificationError(f"receipt has the key {key!r} twice (in snake_case and camelCase)")
            out[key] = _normalise(v, depth + 1)
        return out
    if isinstance(obj, list):
        return [_normalise(v, depth + 1) for v in obj]
    return obj


_COMMIT_EVIDENCE = re.compile(r"^ce:(0|[1-9][0-9]{0,9})\.(0|[1-9][0-9]{0,18}):[0-9a-f]{64}$")


def _commit_evidence(value: Any) -> str:
    """CCF commit evidence is ``ce:<view>.<seqno>:<64 lower-case hex>``; anything else fails."""
    if not isinstance(value, str) or not _COMMIT_EVIDENCE.match(value):
        raise VerificationError("commit evidence must be ce:<view>.<seqno>:<64 hex digits>")
    return value


def _hex32(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise VerificationError(f"{what} must be a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError as exc:
        raise VerificationError(f"{what} is not hex") from exc
    if len(raw) != 32 or value != raw.hex():
        raise VerificationError(f"{what} must be 64 lower-case hex digits")
    return raw


def _json_path(proof: Any) -> list[PathElement]:
    if not isinstance(proof, list) or len(proof) > MAX_PROOF_LENGTH:
        raise VerificationError("receipt proof must be a list of at most 64 elements")
    path: list[PathElement] = []
    for element in proof:
        if not isinstance(element, Mapping) or len(element) != 1:
            raise VerificationError("each proof element must have exactly one of 'left' or 'right'")
        ((side, value),) = element.items()
        if side not in ("left", "right"):
            raise VerificationError("each proof element must have exactly one of 'left' or 'right'")
        path.append((side == "left", _hex32(value, "proof hash")))
    return path


@dataclass(frozen=True, slots=True)
class JsonReceiptResult:
    root: bytes
    node_id: str
    leaf: LeafComponents


def verify_json_receipt(
    receipt: Mapping[str, Any],
    service_cert: x509.Certificate,
    *,
    application_claims: Sequence[Mapping[str, Any]] | None = None,
    expected_claims_digest: bytes | None = None,
) -> JsonReceiptResult:
    """Verify an ACL/CCF JSON receipt (the inner ``receipt`` object) against a pinned service cert.

    Stricter than the SDK: ``nodeId`` is required, hex must be canonical, the proof is bounded,
    and (if ``expected_claims_digest`` is given) the claims digest must equal it.
    """
    return ReceiptVerifier(service_cert, memory=0).verify_json(
        receipt, application_claims=application_claims, expected_claims_digest=expected_claims_digest
    )


class ReceiptVerifier:
    """:func:`verify_json_receipt` for many receipts of one service, with a bounded memory of the
    checks that many receipts repeat: a node certificate already found endorsed by the service
    certificate, and a root signature already verified (receipts of one batch share both). Only
    successes are remembered, keyed by the exact bytes checked, so the answer is never different
    from the uncached one."""

    def __init__(self, service_cert: x509.Certificate, *, memory: int = 1024) -> None:
        self.service_cert = service_cert
        self._memory = memory
        self._nodes: dict[tuple[str, tuple[str, ...]], ec.EllipticCurvePublicKey] = {}
        self._signatures: set[tuple[str, bytes, str]] = set()

    def _node_key(self, cert_pem: str, node_id: str, endorsements: tuple[str, ...]) -> ec.EllipticCurvePublicKey:
        known = self._nodes.get((cert_pem, endorsements))
        if known is not None:
            if key_id(known) != node_id:
                raise VerificationError("receipt nodeId does not match its certificate")
            return known
        node_cert = load_pem_cert(cert_pem, "receipt node certificate")
        node_key = ec_public_key(node_cert, "receipt node certificate")
        if key_id(node_key) != node_id:
            raise VerificationError("receipt nodeId does not match its certificate")
        current = node_cert
        for pem in endorsements:
            endorser = load_pem_cert(pem, "service endorsement")
            check_endorsement(current, endorser, "receipt certificate chain")
            current = endorser
        check_endorsement(current, self.service_cert, "receipt node certificate")
        if self._memory:
            if len(self._nodes) >= self._memory:
                self._nodes.clear()
            self._nodes[(cert_pem, endorsements)] = node_key
        return node_key

    def _check_signature(self, cert_pem: str, key: ec.EllipticCurvePublicKey, root: bytes, signature: str) -> None:
        memo = (cert_pem, root, signature)
        if memo in self._signatures:
            return
        verify_root_signature(key, root, b64decode_strict(signature, "receipt signature"))
        if self._memory:
            if len(self._signatures) >= self._memory:
                self._signatures.clear()
            self._signatures.add(memo)

    def verify_json(
        self,
        receipt: Mapping[str, Any],
        *,
        application_claims: Sequence[Mapping[str, Any]] | None = None,
        expected_claims_digest: bytes | None = None,
    ) -> JsonReceiptResult:
        if not isinstance(receipt, Mapping):
            raise VerificationError("receipt must be a JSON object")
        r = _normalise(receipt)
        lc = r.get("leafComponents")
        if not isinstance(lc, Mapping) or set(lc) != {
            "claimsDigest",
            "commitEvidence",
            "writeSetDigest",
        }:
            raise VerificationError(
                "receipt leafComponents must hold exactly claimsDigest, commitEvidence, writeSetDigest"
            )
        leaf = LeafComponents(
            write_set_digest=_hex32(lc["writeSetDigest"], "writeSetDigest"),
            commit_evidence=_commit_evidence(lc["commitEvidence"]),
            claims_digest=_hex32(lc["claimsDigest"], "claimsDigest"),
        )
        if application_claims:
            try:
                computed = compute_claims_digest(application_claims)
            except ValueError as exc:
                raise VerificationError(f"application claims are malformed: {exc}") from exc
            if computed != leaf.claims_digest:
                raise VerificationError("application claims do not match the receipt's claims digest")
        if expected_claims_digest is not None and expected_claims_digest != leaf.claims_digest:
            raise VerificationError("receipt claims digest is not the expected one")
        for field in ("cert", "signature", "nodeId"):
            if not isinstance(r.get(field), str):
                raise VerificationError(f"receipt {field} must be a string")
        endorsements = r.get("serviceEndorsements", [])
        if not isinstance(endorsements, list) or not all(isinstance(e, str) for e in endorsements):
            raise VerificationError("receipt serviceEndorsements must be a list of PEM strings")
        node_key = self._node_key(r["cert"], r["nodeId"], tuple(endorsements))
        root = root_from_path(leaf.leaf(), _json_path(r.get("proof")))
        self._check_signature(r["cert"], node_key, root, r["signature"])
        return JsonReceiptResult(root=root, node_id=r["nodeId"], leaf=leaf)


# --- COSE receipts (RFC 9942, CCF profile: vds = 2) ---

PROOF_LEAF, PROOF_PATH = 1, 2


def _decode_inclusion_proof(raw: Any) -> tuple[LeafComponents, list[PathElement]]:
    if not isinstance(raw, bytes):
        raise VerificationError("inclusion proof must be a byte string")
    proof = cose.loads_exact(raw, "inclusion proof")
    if not isinstance(proof, Mapping):
        raise VerificationError("inclusion proof must be a map")
    leaf, path = proof.get(PROOF_LEAF), proof.get(PROOF_PATH)
    if not isinstance(leaf, list | tuple) or len(leaf) != 3:
        raise VerificationError("inclusion proof leaf must have three parts")
    wsd, ce, claims = leaf
    if not (isinstance(wsd, bytes) and len(wsd) == 32 and isinstance(claims, bytes) and len(claims) == 32):
        raise VerificationError("inclusion proof leaf digests must be 32-byte strings")
    _commit_evidence(ce)
    if not isinstance(path, list | tuple) or len(path) > MAX_PROOF_LENGTH:
        raise VerificationError("inclusion proof path must be a list of at most 64 elements")
    elements: list[PathElement] = []
    for element in path:
        if not isinstance(element, list | tuple) or len(element) != 2:
            raise VerificationError("inclusion path elements must be [left, hash] pairs")
        is_left, h = element
        if not isinstance(is_left, bool) or not isinstance(h, bytes) or len(h) != 32:
            raise VerificationError("inclusion path elements must be [bool, 32-byte hash]")
        elements.append((is_left, h))
    return LeafComponents(wsd, ce, claims), elements


@dataclass(frozen=True, slots=True)
class CoseReceiptResult:
    signature_txid: TxId | None
    leaves: tuple[LeafComponents, ...]


def verify_cose_receipt(
    data: bytes, service_key: ec.EllipticCurvePublicKey, *, claims_digest: bytes | None = None
) -> CoseReceiptResult:
    """Verify a COSE receipt with the service public key alone."""
    sign1 = cose.Sign1.decode(data)
    check_cose_root_header(sign1, service_key, None)
    vdp = sign1.unprotected.get(cose.HDR_VDP)
    proofs = vdp.get(cose.VDP_INCLUSION) if isinstance(vdp, Mapping) else None
    if not isinstance(proofs, list | tuple) or not proofs:
        raise VerificationError("COSE receipt carries no inclusion proof")
    leaves = []
    for raw in proofs:
        leaf, path = _decode_inclusion_proof(raw)
        sign1.verify_detached(service_key, root_from_path(leaf.leaf(), path))
        if claims_digest is not None and leaf.claims_digest != claims_digest:
            raise VerificationError("COSE receipt claims digest is not the expected one")
        leaves.append(leaf)
    txid = None
    ccf = sign1.protected.get(cose.HDR_CCF)
    if isinstance(ccf, Mapping) and isinstance(ccf.get("txid"), str):
        try:
            txid = TxId.parse(ccf["txid"])
        except ValueError as exc:
            raise VerificationError("COSE ccf.v1.txid is malformed") from exc
    return CoseReceiptResult(signature_txid=txid, leaves=tuple(leaves))
