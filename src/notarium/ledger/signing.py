"""Signing: the node's signature over a Merkle root, the service's COSE root signature, and COSE_Sign1
bytes (the producing side of :mod:`notarium.verify.signature` and :mod:`notarium.verify.cose`,
which verify what is made here; ccf-ledger-format.md §5)."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature

from notarium.ledger.identity import NodeIdentity
from notarium.types import TxId
from notarium.verify import cose, tables
from notarium.verify.keys import key_id
from notarium.verify.signature import PrimarySignature

_PREHASHED = ec.ECDSA(Prehashed(hashes.SHA256()))


def sign_root(private_key: ec.EllipticCurvePrivateKey, root: bytes) -> bytes:
    """DER ECDSA signature over the 32-byte root used directly as a SHA-256 digest."""
    return private_key.sign(root, _PREHASHED)


def cose_root_protected_header(
    service_key: ec.EllipticCurvePublicKey, txid: TxId, *, iat: int, issuer: str, subject: str
) -> bytes:
    """The protected header of a CCF COSE root signature (ccf-ledger-format.md §5.4)."""
    header = {
        cose.HDR_ALG: cose.alg_for_key(service_key),
        cose.HDR_KID: key_id(service_key).encode(),
        cose.HDR_CWT: {cose.CWT_ISS: issuer, cose.CWT_SUB: subject, cose.CWT_IAT: iat},
        cose.HDR_VDS: cose.VDS_CCF_LEDGER_SHA256,
        cose.HDR_CCF: {"txid": str(txid)},
    }
    return bytes(cbor2.dumps(header))


def sign_detached(private_key: ec.EllipticCurvePrivateKey, protected: bytes, payload: bytes) -> bytes:
    """Sign ``Sig_structure`` over a detached payload; return the raw r‖s signature."""
    alg = cose.alg_for_key(private_key.public_key())
    _curve, hash_cls, size = cose.ALGS[alg]
    der = private_key.sign(cose.sig_structure(protected, payload), ec.ECDSA(hash_cls()))
    r, s = decode_dss_signature(der)
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def encode_sign1(protected: bytes, unprotected: dict[Any, Any], signature: bytes) -> bytes:
    return cbor2.dumps(cbor2.CBORTag(cose.COSE_SIGN1_TAG, [protected, unprotected, None, signature]))


def signature_write_set(
    identity: NodeIdentity,
    node_id: str,
    node_cert_pem: str,
    service_key: ec.EllipticCurvePublicKey,
    txid: TxId,
    root: bytes,
    tree: bytes,
    *,
    iat: int,
    issuer: str,
    nonce: bytes,
) -> dict[str, dict[bytes, bytes | None]]:
    """The public tables of the signature transaction ``txid`` over ``root``: the node's signature
    (``signatures``), the service's COSE root signature (``cose_signatures``) and the serialised
    tree (``tree``, :func:`notarium.ledger.merkle.serialise_tree`)."""
    node_sig = PrimarySignature(
        sig=sign_root(identity.node_key, root),
        node=node_id,
        seqno=txid.seqno,
        view=txid.view,
        root=root,
        cert=node_cert_pem,
        hashed_nonce=hashlib.sha256(nonce).hexdigest(),
    )
    protected = cose_root_protected_header(service_key, txid, iat=iat, issuer=issuer, subject="ledger.signature")
    cose_sig = encode_sign1(protected, {}, sign_detached(identity.service_key, protected, root))
    return {
        tables.SIGNATURES: {tables.SINGLETON_KEY: node_sig.to_json()},
        tables.COSE_SIGNATURES: {tables.SINGLETON_KEY: json.dumps(base64.b64encode(cose_sig).decode()).encode()},
        tables.TREE: {tables.SINGLETON_KEY: tree},
    }
