"""Signature transactions: the node's JSON signature and the service's COSE root signature
(ccf-ledger-format.md §5)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from notarium.errors import VerificationError
from notarium.types import TxId
from notarium.verify import cose
from notarium.verify.keys import key_id
from notarium.verify.merkle import deserialise_tree

_PREHASHED = ec.ECDSA(Prehashed(hashes.SHA256()))
MAX_RECORD_SIZE = 1 << 20  # a signature record holds a certificate and a few fields


def verify_root_signature(key: ec.EllipticCurvePublicKey, root: bytes, signature_der: bytes) -> None:
    try:
        key.verify(signature_der, root, _PREHASHED)
    except InvalidSignature as exc:
        raise VerificationError("node signature over the Merkle root does not verify") from exc


def load_json_record(data: bytes, what: str) -> Any:
    """Parse one bounded JSON value from a ledger table; any failure is a VerificationError."""
    if len(data) > MAX_RECORD_SIZE:
        raise VerificationError(f"{what} is too large")
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise VerificationError(f"{what} is not JSON") from exc


def b64decode_strict(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise VerificationError(f"{what} is not valid base64") from exc


@dataclass(frozen=True, slots=True)
class PrimarySignature:
    """The JSON value of ``public:ccf.internal.signatures``."""

    sig: bytes
    node: str
    seqno: int
    view: int
    root: bytes
    cert: str | None
    hashed_nonce: str

    def to_json(self) -> bytes:
        obj: dict[str, Any] = {
            "commit_seqno": 0,
            "commit_view": 0,
            "hashed_nonce": self.hashed_nonce,
            "node": self.node,
            "root": self.root.hex(),
            "seqno": self.seqno,
            "sig": base64.b64encode(self.sig).decode(),
            "view": self.view,
        }
        if self.cert is not None:
            obj["cert"] = self.cert
        return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> PrimarySignature:
        obj = load_json_record(data, "signature record")
        if not isinstance(obj, dict):
            raise VerificationError("signature record is not a JSON object")
        try:
            sig, node, seqno, view, root = (
                obj["sig"],
                obj["node"],
                obj["seqno"],
                obj["view"],
                obj["root"],
            )
        except KeyError as exc:
            raise VerificationError(f"signature record lacks {exc.args[0]!r}") from exc
        cert = obj.get("cert")
        if not (
            isinstance(sig, str)
            and isinstance(node, str)
            and type(seqno) is int
            and type(view) is int
            and isinstance(root, str)
            and (cert is None or isinstance(cert, str))
        ):
            raise VerificationError("signature record has fields of the wrong type")
        try:
            root_bytes = bytes.fromhex(root)
        except ValueError as exc:
            raise VerificationError("signature root is not hex") from exc
        if len(root_bytes) != 32:
            raise VerificationError("signature root is not 32 bytes")
        return cls(
            sig=b64decode_strict(sig, "signature"),
            node=node,
            seqno=seqno,
            view=view,
            root=root_bytes,
            cert=cert,
            hashed_nonce=str(obj.get("hashed_nonce", "")),
        )


def check_cose_root_header(sign1: cose.Sign1, service_key: ec.EllipticCurvePublicKey, txid: TxId | None) -> None:
    """Check kid, vds and (if given) the ``ccf.v1`` txid of a COSE root signature or receipt."""
    if sign1.protected.get(cose.HDR_KID) != key_id(service_key).encode():
        raise VerificationError("COSE kid does not name the service key")
    if sign1.protected.get(cose.HDR_VDS) != cose.VDS_CCF_LEDGER_SHA256:
        raise VerificationError("COSE vds is not CCF_LEDGER_SHA256 (2)")
    if txid is not None:
        ccf = sign1.protected.get(cose.HDR_CCF)
        if not isinstance(ccf, Mapping) or ccf.get("txid") != str(txid):
            raise VerificationError(f"COSE ccf.v1.txid does not name transaction {txid}")


def decode_cose_signature_value(value: bytes) -> bytes:
    """The ``cose_signatures`` value is a JSON string of base64 COSE_Sign1 bytes."""
    text = load_json_record(value, "COSE signature record")
    if not isinstance(text, str):
        raise VerificationError("COSE signature record is not a JSON string")
    return b64decode_strict(text, "COSE signature")


SIGNATURE_TABLES = frozenset(
    {
        "public:ccf.internal.signatures",
        "public:ccf.internal.cose_signatures",
        "public:ccf.internal.tree",
    }
)
_SINGLETON = bytes(8)


def verify_signature_transaction(
    public: dict[str, dict[bytes, bytes | None]],
    *,
    txid: TxId,
    root: bytes,
    service_key: ec.EllipticCurvePublicKey,
    node_key: Callable[[PrimarySignature], ec.EllipticCurvePublicKey],
) -> PrimarySignature:
    """Check one signature transaction at ``txid`` against the root rebuilt over leaves 0 … S−1.

    ``node_key(sig)`` returns the key of the signing node, raising :class:`VerificationError`
    if that node may not sign (unknown, untrusted, not endorsed). Checks: exactly the three
    signature tables with singleton keys; the JSON signature's seqno/view and root; the node
    signature; the COSE root signature (kid, vds, ``ccf.v1.txid``, signature by the service
    key); the serialised tree rebuilds the same root over the same number of leaves.
    """
    if set(public) != SIGNATURE_TABLES or any(set(w) != {_SINGLETON} for w in public.values()):
        raise VerificationError(
            "a signature transaction must write exactly the signature, COSE signature and tree singletons",
            check="signature-format",
        )
    sig = PrimarySignature.from_json(public["public:ccf.internal.signatures"][_SINGLETON] or b"")
    if sig.seqno != txid.seqno or sig.view != txid.view:
        raise VerificationError(f"signature claims to be {sig.view}.{sig.seqno}", check="signature-txid")
    if sig.root != root:
        raise VerificationError("signed root does not match the root rebuilt from the ledger", check="signature-root")
    key = node_key(sig)
    try:
        verify_root_signature(key, root, sig.sig)
    except VerificationError as exc:
        raise VerificationError(str(exc), check="signature-node") from exc
    try:
        cose_bytes = decode_cose_signature_value(public["public:ccf.internal.cose_signatures"][_SINGLETON] or b"")
        sign1 = cose.Sign1.decode(cose_bytes)
        check_cose_root_header(sign1, service_key, txid)
        sign1.verify_detached(service_key, root)
    except VerificationError as exc:
        raise VerificationError(f"COSE root signature: {exc}", check="signature-cose") from exc
    try:
        size, tree_root = deserialise_tree(public["public:ccf.internal.tree"][_SINGLETON] or b"")
    except ValueError as exc:
        raise VerificationError(f"serialised tree: {exc}", check="signature-tree") from exc
    if size != txid.seqno or tree_root != root:
        raise VerificationError("serialised tree does not rebuild the signed root", check="signature-tree")
    return sig
