"""Signed roots and consistency proofs: proof that a later ledger extends an earlier one.

A **signed root** is what a signature transaction at seqno S commits to: the Merkle root over
leaves 0 … S−1 (tree size S) and the service key's COSE_Sign1 over that root, whose protected
header names the signature transaction's TxId (ccf-ledger-format.md §5.4). A **consistency proof**
between tree sizes m ≤ n shows that the first m leaves of the tree of size n are exactly the tree
of size m: the ledger was extended, not rewritten. Together they let a client that kept
yesterday's signed root check that today's ledger extends it (no fork, no rollback).

The proofs are RFC 9162 §2.1.4 consistency proofs over CCF's tree (:mod:`notarium.verify.merkle`):
the same shape and the same order of nodes, but internal nodes are SHA-256(left ‖ right), without
RFC 9162's 0x01 prefix.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from notarium.errors import VerificationError
from notarium.types import MAX_SEQNO, TxId
from notarium.verify import cose
from notarium.verify.keys import ec_public_key
from notarium.verify.merkle import HASH_SIZE
from notarium.verify.signature import check_cose_root_header

# a consistency proof between trees of at most 2**64 leaves has at most 2 * 64 nodes
MAX_CONSISTENCY_PROOF = 128
# a tree has at least leaf 0 and at most one leaf per seqno
MAX_TREE_SIZE = MAX_SEQNO

_sha256 = hashlib.sha256


def _fail(message: str) -> VerificationError:
    return VerificationError(message, check="consistency")


def _hash32(value: object, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise _fail(f"{what} must be a {HASH_SIZE}-byte hash")
    return value


def verify_consistency(m: int, old_root: bytes, n: int, new_root: bytes, proof: Sequence[bytes]) -> None:
    """Check that ``proof`` shows the tree of size ``m`` with root ``old_root`` to be the first ``m``
    leaves of the tree of size ``n`` with root ``new_root`` (RFC 9162 §2.1.4.2, CCF hashing).

    Raises :class:`VerificationError` (``check="consistency"``) on any failure: sizes that are not
    ``0 < m <= n``, roots or proof nodes that are not 32 bytes, a proof of the wrong length, or
    roots the proof does not rebuild. ``m == n`` requires equal roots and an empty proof.
    """
    for size, what in ((m, "old tree size"), (n, "new tree size")):
        if type(size) is not int or not 0 < size <= MAX_TREE_SIZE:
            raise _fail(f"{what} must be an integer from 1 to {MAX_TREE_SIZE}")
    if m > n:
        raise _fail(f"the old tree ({m} leaves) is larger than the new one ({n} leaves)")
    old_root = _hash32(old_root, "old root")
    new_root = _hash32(new_root, "new root")
    given: object = proof  # untrusted: checked, not assumed, to be a sequence of hashes
    if isinstance(given, str | bytes | bytearray) or not isinstance(given, Sequence):
        raise _fail("the proof must be a sequence of hashes")
    if len(given) > MAX_CONSISTENCY_PROOF:
        raise _fail(f"the proof has {len(given)} nodes; no consistency proof has more than {MAX_CONSISTENCY_PROOF}")
    nodes = [_hash32(node, f"proof node {i}") for i, node in enumerate(given)]
    if m == n:
        if nodes:
            raise _fail("a proof between trees of the same size must be empty")
        if old_root != new_root:
            raise _fail(f"two different roots for the same tree size {m}")
        return
    if not nodes:
        raise _fail(f"empty proof from tree size {m} to {n}")
    if m & (m - 1) == 0:  # the old tree is a perfect subtree: its root is the proof's first node
        nodes.insert(0, old_root)
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = nodes[0]
    for c in nodes[1:]:
        if sn == 0:
            raise _fail(f"the proof from tree size {m} to {n} is too long")
        if fn & 1 or fn == sn:
            fr = _sha256(c + fr).digest()
            sr = _sha256(c + sr).digest()
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = _sha256(sr + c).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise _fail(f"the proof from tree size {m} to {n} is too short")
    if fr != old_root:
        raise _fail(f"the proof does not rebuild the old root of tree size {m}")
    if sr != new_root:
        raise _fail(f"the proof does not rebuild the new root of tree size {n}")


def proof_to_json(proof: Sequence[bytes]) -> list[str]:
    """A consistency proof as JSON: its nodes as lower-case hex strings, in order."""
    return [node.hex() for node in proof]


def _hex32(value: object, what: str, check: str) -> bytes:
    if not isinstance(value, str):
        raise VerificationError(f"{what} must be a hex string", check=check)
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise VerificationError(f"{what} is not hex", check=check) from None
    if len(raw) != HASH_SIZE or value != raw.hex():
        raise VerificationError(f"{what} must be {2 * HASH_SIZE} lower-case hex digits", check=check)
    return raw


def proof_from_json(obj: object) -> list[bytes]:
    """Parse the JSON form of a consistency proof (a list of 64-digit lower-case hex strings)."""
    if not isinstance(obj, list) or len(obj) > MAX_CONSISTENCY_PROOF:
        raise _fail(f"a consistency proof must be a list of at most {MAX_CONSISTENCY_PROOF} hex strings")
    return [_hex32(node, f"proof node {i}", "consistency") for i, node in enumerate(obj)]


# --------------------------------------------------------------------------- signed roots

_SIGNED_ROOT_FIELDS = frozenset({"transactionId", "treeSize", "root", "signature"})


@dataclass(frozen=True, slots=True)
class SignedRoot:
    """The root signed by the signature transaction ``txid``: the tree of its first ``txid.seqno``
    leaves, and the service's COSE_Sign1 over it (``signature``, the raw COSE bytes)."""

    txid: TxId
    root: bytes
    signature: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.txid, TxId) or self.txid.seqno < 1:
            raise ValueError("a signed root needs the TxId of a signature transaction (seqno >= 1)")
        if not isinstance(self.root, bytes) or len(self.root) != HASH_SIZE:
            raise ValueError(f"a signed root is {HASH_SIZE} bytes")
        if not isinstance(self.signature, bytes) or not self.signature:
            raise ValueError("a signed root needs its COSE_Sign1 signature")

    @property
    def tree_size(self) -> int:
        """The number of leaves the root covers: leaves 0 … seqno−1."""
        return self.txid.seqno

    def to_json(self) -> dict[str, Any]:
        return {
            "transactionId": str(self.txid),
            "treeSize": self.tree_size,
            "root": self.root.hex(),
            "signature": base64.b64encode(self.signature).decode("ascii"),
        }

    @classmethod
    def from_json(cls, obj: object) -> SignedRoot:
        """Parse :meth:`to_json`'s form strictly; anything else is a :class:`VerificationError`."""
        check = "signed-root"
        if not isinstance(obj, Mapping):
            raise VerificationError("a signed root must be a JSON object", check=check)
        keys = set(obj)
        if keys != _SIGNED_ROOT_FIELDS:
            missing = sorted(_SIGNED_ROOT_FIELDS - keys)
            extra = sorted(str(k)[:40] for k in keys - _SIGNED_ROOT_FIELDS)
            raise VerificationError(
                f"a signed root has exactly {sorted(_SIGNED_ROOT_FIELDS)}; missing {missing}, unknown {extra}",
                check=check,
            )
        text, size, root, signature = obj["transactionId"], obj["treeSize"], obj["root"], obj["signature"]
        if not isinstance(text, str):
            raise VerificationError("signed root transactionId must be a string", check=check)
        try:
            txid = TxId.parse(text)
        except ValueError:
            raise VerificationError(
                f"signed root transactionId {text[:40]!r} is not <view>.<seqno>", check=check
            ) from None
        if type(size) is not int:
            raise VerificationError("signed root treeSize must be an integer", check=check)
        if txid.seqno < 1 or size != txid.seqno:
            raise VerificationError(
                f"signed root treeSize is not the seqno of its signature transaction {txid}", check=check
            )
        if not isinstance(signature, str) or len(signature) > 2 * cose.MAX_COSE_SIZE:
            raise VerificationError("signed root signature must be a base64 string", check=check)
        try:
            sig_bytes = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            raise VerificationError("signed root signature is not valid base64", check=check) from None
        if not sig_bytes:
            raise VerificationError("signed root signature is empty", check=check)
        try:
            cose.Sign1.decode(sig_bytes)
        except VerificationError as exc:
            raise VerificationError(f"signed root signature: {exc}", check=check) from None
        return cls(txid, _hex32(root, "signed root", check), sig_bytes)


def verify_signed_root(sr: SignedRoot, service_cert: x509.Certificate) -> None:
    """The COSE_Sign1 of ``sr`` must be the service key's signature over ``sr.root`` naming ``sr.txid``.

    Checks the kid (the service key's id), vds (CCF_LEDGER_SHA256), ``ccf.v1.txid`` and the
    signature itself, with an ECDSA algorithm that matches the service key's curve (P-256/384/521
    only; anything else is refused). Raises :class:`VerificationError` (``check="signed-root"``).
    """
    try:
        key = ec_public_key(service_cert, "service certificate")
        sign1 = cose.Sign1.decode(sr.signature)
        check_cose_root_header(sign1, key, sr.txid)
        sign1.verify_detached(key, sr.root)
    except VerificationError as exc:
        raise VerificationError(f"signed root {sr.txid}: {exc}", check="signed-root") from None


def verify_extension(old: SignedRoot, new: SignedRoot, proof: Sequence[bytes], service_cert: x509.Certificate) -> None:
    """Check that the ledger signed at ``new`` extends the ledger signed at ``old``.

    Both signed roots must verify with the service certificate (``check="signed-root"``); ``new``
    must not be older (``check="rollback"``: a smaller tree, or a later tree in an earlier view);
    two different signature transactions or roots for the same tree size are a fork
    (``check="fork"``); and ``proof`` must be the consistency proof between them
    (``check="consistency"``).
    """
    verify_signed_root(old, service_cert)
    verify_signed_root(new, service_cert)
    if new.tree_size < old.tree_size:
        raise VerificationError(
            f"rollback: the new root {new.txid} covers {new.tree_size} transactions, the old {old.txid} "
            f"{old.tree_size}",
            check="rollback",
        )
    if new.txid.view < old.txid.view:
        raise VerificationError(
            f"rollback: the new root {new.txid} is in an earlier view than the old {old.txid}", check="rollback"
        )
    if new.tree_size == old.tree_size and (new.txid != old.txid or new.root != old.root):
        raise VerificationError(
            f"fork: two different signed roots for tree size {new.tree_size} ({old.txid} and {new.txid})",
            check="fork",
        )
    verify_consistency(old.tree_size, old.root, new.tree_size, new.root, proof)
