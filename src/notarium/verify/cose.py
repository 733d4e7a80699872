"""COSE_Sign1 as CCF uses it for root signatures and receipts (RFC 9052; ccf-ledger-format.md §5.4, §6.3).

Only what CCF needs: ECDSA (ES256/ES384/ES512) with raw r‖s signatures and detached payloads.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    encode_dss_signature,
)

from notarium.errors import VerificationError

COSE_SIGN1_TAG = 18
HDR_ALG = 1
HDR_KID = 4
HDR_CWT = 15
HDR_VDS = 395
HDR_VDP = 396
HDR_CCF = "ccf.v1"
VDS_CCF_LEDGER_SHA256 = 2
VDP_INCLUSION = -1
CWT_ISS, CWT_SUB, CWT_IAT = 1, 2, 6
MAX_COSE_SIZE = 1 << 20

# alg id -> (curve name, hash, coordinate size in bytes)
ALGS: dict[int, tuple[str, type[hashes.HashAlgorithm], int]] = {
    -7: ("secp256r1", hashes.SHA256, 32),
    -35: ("secp384r1", hashes.SHA384, 48),
    -36: ("secp521r1", hashes.SHA512, 66),
}


def alg_for_key(key: ec.EllipticCurvePublicKey) -> int:
    for alg, (curve, _h, _n) in ALGS.items():
        if key.curve.name == curve:
            return alg
    raise ValueError(f"no COSE algorithm for curve {key.curve.name}")


def loads_exact(data: bytes, what: str) -> Any:
    """Decode exactly one CBOR item; trailing bytes, bad CBOR or excessive nesting fail."""
    stream = io.BytesIO(data)
    try:
        obj = cbor2.CBORDecoder(stream).decode()
    except Exception as exc:  # cbor2 raises several types (and RecursionError) on bad input
        raise VerificationError(f"{what} is not valid CBOR") from exc
    if stream.tell() != len(data):
        raise VerificationError(f"{what} has trailing bytes after its CBOR item")
    return obj


def sig_structure(protected: bytes, payload: bytes) -> bytes:
    return cbor2.dumps(["Signature1", protected, b"", payload])


@dataclass(frozen=True, slots=True)
class Sign1:
    """A decoded COSE_Sign1: CCF's signatures and receipts detach their payload (``payload`` is
    None); governance requests carry theirs (:meth:`decode_attached`)."""

    protected_bytes: bytes
    protected: Mapping[Any, Any]
    unprotected: Mapping[Any, Any]
    signature: bytes
    payload: bytes | None = None

    @classmethod
    def decode_attached(cls, data: bytes) -> Sign1:
        """Decode untrusted bytes of a COSE_Sign1 that carries its payload (a byte string)."""
        return cls._decode(data, attached=True)

    @classmethod
    def decode(cls, data: bytes) -> Sign1:
        """Decode untrusted bytes of a COSE_Sign1 with a detached payload; every failure is a
        :class:`VerificationError`."""
        return cls._decode(data, attached=False)

    @classmethod
    def _decode(cls, data: bytes, *, attached: bool) -> Sign1:
        if len(data) > MAX_COSE_SIZE:
            raise VerificationError("COSE_Sign1 is too large")
        obj = loads_exact(data, "COSE_Sign1")
        if not isinstance(obj, cbor2.CBORTag) or obj.tag != COSE_SIGN1_TAG:
            raise VerificationError("not a tagged COSE_Sign1 (CBOR tag 18)")
        items = obj.value
        if not isinstance(items, list | tuple) or len(items) != 4:
            raise VerificationError("COSE_Sign1 must be an array of four items")
        protected_bytes, unprotected, payload, signature = items
        if not isinstance(protected_bytes, bytes) or not isinstance(signature, bytes):
            raise VerificationError("COSE_Sign1 protected header and signature must be byte strings")
        if not isinstance(unprotected, Mapping):
            raise VerificationError("COSE_Sign1 unprotected header must be a map")
        if attached and not isinstance(payload, bytes):
            raise VerificationError("this COSE_Sign1 must carry its payload (a byte string, not detached)")
        if not attached and payload is not None:
            raise VerificationError("CCF COSE_Sign1 payloads are detached (nil)")
        protected = loads_exact(protected_bytes, "COSE_Sign1 protected header")
        if not isinstance(protected, Mapping):
            raise VerificationError("COSE_Sign1 protected header must be a map")
        return cls(protected_bytes, protected, unprotected, signature, payload)

    def verify_detached(self, key: ec.EllipticCurvePublicKey, payload: bytes) -> None:
        """Verify the signature over ``payload`` with ``key``; the alg must match the key's curve."""
        alg = self.protected.get(HDR_ALG)
        if type(alg) is not int or alg not in ALGS:
            raise VerificationError(f"unsupported COSE algorithm {alg!r}")
        curve, hash_cls, size = ALGS[alg]
        if key.curve.name != curve:
            raise VerificationError("COSE algorithm does not match the signing key's curve")
        if len(self.signature) != 2 * size:
            raise VerificationError("COSE signature has the wrong length")
        der = encode_dss_signature(
            int.from_bytes(self.signature[:size], "big"),
            int.from_bytes(self.signature[size:], "big"),
        )
        try:
            key.verify(der, sig_structure(self.protected_bytes, payload), ec.ECDSA(hash_cls()))
        except InvalidSignature as exc:
            raise VerificationError("COSE signature does not verify") from exc
