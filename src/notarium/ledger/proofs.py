"""Proofs of what the ledger holds: receipts (ACL's JSON receipt and the RFC 9942 COSE receipt),
signed roots and consistency proofs. Each is built from the chunk files, the index and the tree,
then verified with :mod:`notarium.verify` before it is returned: the index is not trusted, and a
proof that does not verify is an error, never an answer.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cbor2

from notarium.errors import LedgerError, ServiceError, VerificationError
from notarium.ledger.index import KIND_SIGNATURE
from notarium.ledger.merkle import consistency_proof
from notarium.ledger.reading import Reading
from notarium.ledger.signing import encode_sign1
from notarium.types import TxId
from notarium.verify import cose, tables
from notarium.verify.consistency import SignedRoot, verify_extension, verify_signed_root
from notarium.verify.entry import decode_tables, parse_entry
from notarium.verify.keys import ec_public_key
from notarium.verify.merkle import PathElement
from notarium.verify.receipt import (
    PROOF_LEAF,
    PROOF_PATH,
    LeafComponents,
    verify_cose_receipt,
    verify_json_receipt,
)
from notarium.verify.secrets import commit_evidence_from_commit_secret
from notarium.verify.signature import PrimarySignature, decode_cose_signature_value


@dataclass(frozen=True, slots=True)
class Receipt:
    txid: TxId
    receipt: dict[str, Any]
    application_claims: list[dict[str, Any]] | None


def build_json_receipt(
    leaf: LeafComponents,
    path: Sequence[PathElement],
    signature_der: bytes,
    node_cert_pem: str,
    node_id: str,
    service_endorsements: Sequence[str] = (),
) -> dict[str, Any]:
    """The ACL (camelCase) JSON receipt."""
    return {
        "cert": node_cert_pem,
        "leafComponents": {
            "claimsDigest": leaf.claims_digest.hex(),
            "commitEvidence": leaf.commit_evidence,
            "writeSetDigest": leaf.write_set_digest.hex(),
        },
        "nodeId": node_id,
        "proof": [{"left": h.hex()} if is_left else {"right": h.hex()} for is_left, h in path],
        "serviceEndorsements": list(service_endorsements),
        "signature": base64.b64encode(signature_der).decode(),
    }


def build_cose_receipt(signature_sign1: bytes, leaf: LeafComponents, path: Sequence[PathElement]) -> bytes:
    """Attach an inclusion proof to the COSE root signature of the covering signature transaction."""
    sign1 = cose.Sign1.decode(signature_sign1)
    proof = cbor2.dumps(
        {
            PROOF_LEAF: [leaf.write_set_digest, leaf.commit_evidence, leaf.claims_digest],
            PROOF_PATH: [[is_left, h] for is_left, h in path],
        }
    )
    unprotected = {cose.HDR_VDP: {cose.VDP_INCLUSION: [proof]}}
    return encode_sign1(sign1.protected_bytes, unprotected, sign1.signature)


class Proofs(Reading):
    def _proof_parts(
        self, txid: TxId
    ) -> tuple[LeafComponents, list[tuple[bool, bytes]], PrimarySignature, bytes] | None:
        found = self._read_committed(txid)
        if found is None:
            return None
        raw, e, _kind = found
        sig_row = self._index.next_signature(txid.seqno)
        if sig_row is None:
            # the newest signature transaction: its receipt needs the next signature, so ask for one
            # (an external sequencer places that one itself: see EngineConfig.auto_sign)
            with self._lock_obj:
                if txid.seqno != self._committed:
                    raise ServiceError(f"no signature after committed transaction {txid}; run `notarium reindex`")
                if self.config.auto_sign and not self._closing and not self._closed_batches:
                    self._close_batch_locked()
            return None
        sig_raw = self._chunks.read(sig_row.chunk, sig_row.offset, sig_row.size)
        se = parse_entry(sig_raw, 0)
        sig_tables = decode_tables(sig_raw, se.tables_start, se.public_end)
        sig = PrimarySignature.from_json(sig_tables[tables.SIGNATURES][tables.SINGLETON_KEY] or b"")
        cose_sig = decode_cose_signature_value(sig_tables[tables.COSE_SIGNATURES][tables.SINGLETON_KEY] or b"")
        leaf = LeafComponents(
            write_set_digest=hashlib.sha256(raw).digest(),
            commit_evidence=commit_evidence_from_commit_secret(self._key(txid.seqno).commit_secret, txid),
            claims_digest=e.claims_digest,
        )
        with self._tree_lock:
            path = self._tree.path(txid.seqno, sig.seqno)
        return leaf, path, sig, cose_sig

    def receipt(self, txid: TxId) -> Receipt | None:
        """The ACL JSON receipt of a committed transaction, verified before it is returned.

        ``None`` if the transaction is not committed, or if it is the newest signature
        transaction: that one is proven by the next signature, which this call then requests
        (it follows within one flush).
        """
        parts = self._proof_parts(txid)
        if parts is None:
            return None
        leaf, path, sig, _cose = parts
        node_cert = sig.cert or self._node_cert_pem
        try:
            endorsements = self._chain.endorsements(self._chain.depth(node_cert))
        except VerificationError as exc:
            raise ServiceError(f"receipt for {txid}: {exc}; run `notarium audit`") from None
        body = build_json_receipt(leaf, path, sig.sig, node_cert, sig.node, endorsements)
        claims = None
        entry = self.get_entry(txid)
        if entry is not None:
            claims = entry.application_claims()
        try:
            verify_json_receipt(body, self.identity.service_cert, application_claims=claims)
        except VerificationError as exc:
            raise ServiceError(f"receipt for {txid} does not verify ({exc}); run `notarium audit`") from None
        return Receipt(txid, body, claims)

    def cose_receipt(self, txid: TxId) -> bytes | None:
        """The RFC 9942 COSE receipt (CCF profile) of a committed transaction, verified.

        A transaction signed under a previous service identity gets a receipt signed by that
        identity's key (verified here against it, as endorsed by the current identity): COSE
        receipts carry no endorsements (docs/design/recovery.md)."""
        parts = self._proof_parts(txid)
        if parts is None:
            return None
        leaf, path, sig, cose_sig = parts
        receipt = build_cose_receipt(cose_sig, leaf, path)
        try:
            service = self._chain.certs[self._chain.depth(sig.cert or self._node_cert_pem)]
            verify_cose_receipt(receipt, ec_public_key(service, "service identity"), claims_digest=leaf.claims_digest)
        except VerificationError as exc:
            raise ServiceError(f"COSE receipt for {txid} does not verify ({exc}); run `notarium audit`") from None
        return receipt

    def signed_root(self, txid: TxId | None = None) -> SignedRoot:
        """The root signed by the committed signature transaction ``txid`` (``None``: the newest),
        with the service's COSE signature over it; verified before it is returned.

        Raises :class:`LedgerError` if ``txid`` is not a committed signature transaction.
        """
        if txid is None:
            txid = self.committed
            if txid.seqno == 0:
                raise LedgerError("the ledger holds no committed signature transaction yet")
        found = self._read_committed(txid)
        if found is None:
            raise LedgerError(f"transaction {txid} is not a committed transaction")
        raw, e, kind = found
        if kind != KIND_SIGNATURE:
            raise LedgerError(
                f"transaction {txid} is not a signature transaction: signed roots exist only at signature transactions"
            )
        sig_tables = decode_tables(raw, e.tables_start, e.public_end)
        sig = PrimarySignature.from_json(sig_tables[tables.SIGNATURES][tables.SINGLETON_KEY] or b"")
        cose_sig = decode_cose_signature_value(sig_tables[tables.COSE_SIGNATURES][tables.SINGLETON_KEY] or b"")
        signed = SignedRoot(txid, sig.root, cose_sig)
        try:
            verify_signed_root(signed, self._chain.certs[self._chain.depth(sig.cert or self._node_cert_pem)])
        except VerificationError as exc:
            raise ServiceError(f"signed root at {txid} does not verify ({exc}); run `notarium audit`") from None
        return signed

    def consistency(self, first: TxId, second: TxId | None = None) -> tuple[SignedRoot, SignedRoot, list[bytes]]:
        """The signed roots at the committed signature transactions ``first`` and ``second`` (``None``:
        the newest) and the consistency proof that the ledger signed at ``second`` extends the one
        signed at ``first`` (:mod:`notarium.verify.consistency`); verified before it is returned.

        Raises :class:`LedgerError` if either is not a committed signature transaction, or if
        ``first`` comes after ``second``.
        """
        old = self.signed_root(first)
        new = self.signed_root(second)
        if old.tree_size > new.tree_size:
            raise LedgerError(
                f"transaction {old.txid} comes after {new.txid}: a proof goes from an earlier root to a later one"
            )
        with self._tree_lock:
            proof = consistency_proof(old.tree_size, new.tree_size, self._tree.perfect_root)
        try:
            verify_extension(old, new, proof, self.identity.service_cert)
        except VerificationError as exc:
            raise ServiceError(
                f"consistency proof from {old.txid} to {new.txid} does not verify ({exc}); run `notarium audit`"
            ) from None
        return old, new, proof
