"""A JSON receipt verified step by step, for a person to read (acl-rest-api.md §8.2).

The same checks as :func:`notarium.verify.verify_json_receipt`, built from the same primitives,
but each recorded as a :class:`Step` with the values it computed, so that the console can show
the leaf, every Merkle path step, the root, the node signature and the endorsement of the node
certificate, and say which one failed. Independent checks all run (an altered signature still
shows the endorsement as good); a check whose input is missing is "not reached". The verdict is
then also asked of ``verify_json_receipt`` itself: the page never says "verified" unless the
project's verifier agrees.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from notarium.errors import VerificationError
from notarium.types import TxId
from notarium.verify import verify_json_receipt
from notarium.verify.keys import check_endorsement, ec_public_key, key_id, load_pem_cert
from notarium.verify.leaf import commit_evidence_digest, compute_claims_digest, leaf_hash
from notarium.verify.receipt import _commit_evidence, _hex32, _json_path, _normalise
from notarium.verify.signature import b64decode_strict, verify_root_signature

OK, FAILED, SKIPPED = "ok", "failed", "not reached"


@dataclass
class Step:
    """One check: its name (the same in the standalone page), a sentence, the values it shows."""

    key: str
    title: str
    status: str = OK
    detail: str = ""
    values: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Verification:
    steps: list[Step]
    verified: bool
    txid: TxId | None = None

    @property
    def failed(self) -> Step | None:
        """The first failed step (what the verdict names)."""
        return next((s for s in self.steps if s.status == FAILED), None)


def _fail(step: Step, exc: Exception) -> Step:
    step.status, step.detail = FAILED, str(exc)
    return step


def _fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def verify_steps(
    receipt: Any,
    service_cert: x509.Certificate,
    *,
    application_claims: Sequence[Mapping[str, Any]] | None = None,
    expected_txid: TxId | None = None,
) -> Verification:
    """Check ``receipt`` (the inner receipt object) against ``service_cert``, step by step."""
    steps: list[Step] = []
    fmt = Step("format", "Receipt format")
    steps.append(fmt)
    r: Mapping[str, Any] = {}
    try:
        if not isinstance(receipt, Mapping):
            raise VerificationError("the receipt must be a JSON object (the inner 'receipt' of the answer)")
        normalised = _normalise(receipt)
        r = normalised if isinstance(normalised, Mapping) else {}
        lc = r.get("leafComponents")
        if not isinstance(lc, Mapping) or set(lc) != {"claimsDigest", "commitEvidence", "writeSetDigest"}:
            raise VerificationError("leafComponents must hold exactly claimsDigest, commitEvidence, writeSetDigest")
        fmt.detail = "a JSON receipt with leafComponents, proof, signature and cert"
    except VerificationError as exc:
        _fail(fmt, exc)
        lc = None

    leaf = _leaf_steps(steps, lc, application_claims, expected_txid)
    root = _path_steps(steps, r.get("proof") if fmt.status == OK else None, leaf)
    node, endorse, node_key = _node_steps(r if fmt.status == OK else None, service_cert)
    sig = Step("signature", "Node signature over the root")
    steps += [node, sig, endorse]  # the order of the standalone page
    if root is None or node_key is None:
        sig.status, sig.detail = SKIPPED, "needs the root and the node's key"
    else:
        try:
            signature = r.get("signature")
            if not isinstance(signature, str):
                raise VerificationError("the receipt's signature must be a base64 string")
            der = b64decode_strict(signature, "the receipt's signature")
            verify_root_signature(node_key, root, der)
            sig.detail = "the node's key signed this root (ECDSA over the 32-byte root)"
            sig.values.append(("signature (base64)", signature))
        except VerificationError as exc:
            _fail(sig, exc)
    txid = _proved_txid(lc)
    verified = all(s.status == OK or (s.key == "claims" and s.status == SKIPPED) for s in steps)
    final = Step("verdict", "notarium's verifier (verify_json_receipt)")
    try:
        verify_json_receipt(receipt, service_cert, application_claims=application_claims)
        final.detail = "agrees: the receipt verifies"
    except VerificationError as exc:
        _fail(final, exc)
    if verified and final.status != OK:  # never say "verified" alone: the project's verifier decides
        steps.append(final)
        verified = False
    return Verification(steps, verified and final.status == OK, txid)


def _proved_txid(lc: Mapping[str, Any] | None) -> TxId | None:
    try:
        evidence = _commit_evidence(lc.get("commitEvidence") if lc else None)
    except VerificationError:
        return None
    return TxId.parse(evidence.split(":")[1])


def _leaf_steps(
    steps: list[Step],
    lc: Mapping[str, Any] | None,
    claims: Sequence[Mapping[str, Any]] | None,
    expected_txid: TxId | None,
) -> bytes | None:
    wsd_step = Step("write_set_digest", "Leaf: write-set digest")
    claims_step = Step("claims", "Leaf: claims digest")
    ce_step = Step("commit_evidence", "Leaf: commit evidence")
    leaf_step = Step("leaf", "Leaf hash")
    steps.extend([wsd_step, claims_step, ce_step, leaf_step])
    if lc is None:
        for s in (wsd_step, claims_step, ce_step, leaf_step):
            s.status, s.detail = SKIPPED, "needs leafComponents"
        return None
    wsd = cd = ce_digest = None
    try:
        wsd = _hex32(lc["writeSetDigest"], "writeSetDigest")
        wsd_step.values.append(("writeSetDigest", wsd.hex()))
        wsd_step.detail = "the digest of what the transaction wrote"
    except VerificationError as exc:
        _fail(wsd_step, exc)
    try:
        cd = _hex32(lc["claimsDigest"], "claimsDigest")
        claims_step.values.append(("claimsDigest", cd.hex()))
        if claims:
            try:
                computed = compute_claims_digest(claims)
            except ValueError as exc:
                raise VerificationError(f"the application claims are malformed: {exc}") from exc
            claims_step.values.append(("digest of the application claims", computed.hex()))
            if computed != cd:
                raise VerificationError("the application claims do not match the receipt's claims digest")
            claims_step.detail = "the application claims (the entry's contents, collection and key) match it"
        else:
            claims_step.status = SKIPPED
            claims_step.detail = "no application claims given: the digest is taken as it is"
    except VerificationError as exc:
        _fail(claims_step, exc)
    try:
        ce = _commit_evidence(lc["commitEvidence"])
        ce_digest = commit_evidence_digest(ce)
        proved = TxId.parse(ce.split(":")[1])
        ce_step.values += [("commitEvidence", ce), ("SHA-256(commitEvidence)", ce_digest.hex())]
        ce_step.detail = f"names transaction {proved}"
        if expected_txid is not None and proved != expected_txid:
            raise VerificationError(f"the commit evidence names transaction {proved}, not {expected_txid}")
    except VerificationError as exc:
        _fail(ce_step, exc)
    if wsd is None or cd is None or ce_digest is None:
        leaf_step.status, leaf_step.detail = SKIPPED, "needs the three leaf components"
        return None
    leaf = leaf_hash(wsd, ce_digest, cd)
    leaf_step.detail = "SHA-256(writeSetDigest ‖ SHA-256(commitEvidence) ‖ claimsDigest)"
    leaf_step.values.append(("leaf", leaf.hex()))
    return leaf


def _path_steps(steps: list[Step], proof: Any, leaf: bytes | None) -> bytes | None:
    try:
        path = _json_path(proof) if proof is not None or leaf is not None else None
    except VerificationError as exc:
        steps.append(_fail(Step("path", "Merkle path"), exc))
        steps.append(Step("root", "Merkle root", SKIPPED, "needs a well-formed path"))
        return None
    if path is None or leaf is None:
        steps.append(Step("root", "Merkle root", SKIPPED, "needs the leaf and the path"))
        return None
    acc = leaf
    for i, (is_left, sibling) in enumerate(path, 1):
        pair = sibling + acc if is_left else acc + sibling
        acc = hashlib.sha256(pair).digest()
        side = "left" if is_left else "right"
        steps.append(
            Step(
                f"path-{i}",
                f"Merkle path step {i} of {len(path)}",
                detail=f"sibling on the {side}: SHA-256({'sibling ‖ hash' if is_left else 'hash ‖ sibling'})",
                values=[(f"{side} sibling", sibling.hex()), ("hash", acc.hex())],
            )
        )
    steps.append(Step("root", "Merkle root", detail="the root the proof leads to", values=[("root", acc.hex())]))
    return acc


def _node_steps(
    r: Mapping[str, Any] | None, service_cert: x509.Certificate
) -> tuple[Step, Step, ec.EllipticCurvePublicKey | None]:
    node = Step("node_cert", "Node certificate and node id")
    endorse = Step("endorsement", "Node certificate endorsed by the service certificate")
    if r is None:
        node.status = endorse.status = SKIPPED
        node.detail = endorse.detail = "needs a well-formed receipt"
        return node, endorse, None
    key = cert = None
    try:
        pem, node_id = r.get("cert"), r.get("nodeId")
        if not isinstance(pem, str):
            raise VerificationError("the receipt's cert must be a PEM string")
        if not isinstance(node_id, str):
            raise VerificationError("the receipt's nodeId must be a string")
        cert = load_pem_cert(pem, "the node certificate")
        key = ec_public_key(cert, "the node certificate")
        node.values += [("subject", cert.subject.rfc4514_string()), ("node id", node_id)]
        node.values.append(("SHA-256 of the node's public key", key_id(key)))
        if key_id(key) != node_id:
            raise VerificationError("the receipt's nodeId is not the SHA-256 of the certificate's public key")
        node.detail = "the certificate holds the node's key; the node id is its digest"
    except VerificationError as exc:
        _fail(node, exc)
    chain = r.get("serviceEndorsements", [])
    try:
        if cert is None:
            if isinstance(r.get("cert"), str):
                cert = load_pem_cert(r["cert"], "the node certificate")
            else:
                raise VerificationError("the receipt's cert must be a PEM string")
        if not isinstance(chain, list) or not all(isinstance(e, str) for e in chain):
            raise VerificationError("serviceEndorsements must be a list of PEM certificates")
        current = cert
        for pem in chain:
            endorser = load_pem_cert(pem, "a service endorsement")
            check_endorsement(current, endorser, "the certificate chain")
            current = endorser
        check_endorsement(current, service_cert, "the node certificate")
        endorse.detail = "signed by the service certificate" + (
            f" through {len(chain)} endorsement(s)" if chain else ""
        )
        endorse.values.append(("service certificate SHA-256", _fingerprint(service_cert)))
    except VerificationError as exc:
        _fail(endorse, exc)
    return node, endorse, key if node.status == OK else None
