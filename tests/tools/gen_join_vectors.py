"""Generate the sealing test vectors in ``tests/vectors/join/`` (notarium.cluster.join, format 1).

This generator implements the format from its description (docs/design/ha.md §Joining) with the
``cryptography`` primitives only, independently of ``notarium.cluster.join``::

    blob     = 0x01 ‖ E ‖ AES-256-GCM(key, iv, plaintext, aad = 0x01 ‖ E)
    E, R     = ephemeral and recipient P-384 public keys, uncompressed SEC 1 points (97 bytes)
    info     = "notarium/seal-to-node/v1" ‖ 0x00 ‖ len(context) (4 bytes, big-endian) ‖ context ‖ E ‖ R
    key ‖ iv = HKDF-SHA256(ECDH(e, R), salt = none, info), 32 + 12 bytes

Private keys are fixed scalars: SHA-384 of a label, reduced modulo the P-384 group order.

Usage::

    python tests/tools/gen_join_vectors.py           # (re)write the vector file
    python tests/tools/gen_join_vectors.py --check   # exit 1 if the committed file differs
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

OUT = Path(__file__).resolve().parent.parent / "vectors" / "join" / "seal.json"
ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973

CASES = [
    ("recipient-1", "ephemeral-1", b"notarium-join-secrets/1 service=aa node=bb", b'{"hello": "node"}'),
    ("recipient-1", "ephemeral-2", b"", b""),
    ("recipient-2", "ephemeral-3", b"another purpose", bytes(range(256)) * 4),
]


def scalar(label: str) -> int:
    return int.from_bytes(hashlib.sha384(f"notarium join vector {label}".encode()).digest(), "big") % ORDER


def point(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def seal(
    recipient: ec.EllipticCurvePublicKey, ephemeral: ec.EllipticCurvePrivateKey, context: bytes, text: bytes
) -> bytes:
    e, r = point(ephemeral.public_key()), point(recipient)
    info = b"notarium/seal-to-node/v1" + b"\x00" + len(context).to_bytes(4, "big") + context + e + r
    okm = HKDF(hashes.SHA256(), 44, salt=None, info=info).derive(ephemeral.exchange(ec.ECDH(), recipient))
    header = b"\x01" + e
    return header + AESGCM(okm[:32]).encrypt(okm[32:], text, header)


def vectors() -> dict[str, object]:
    cases = []
    for recipient_label, ephemeral_label, context, text in CASES:
        recipient = ec.derive_private_key(scalar(recipient_label), ec.SECP384R1())
        ephemeral = ec.derive_private_key(scalar(ephemeral_label), ec.SECP384R1())
        cases.append(
            {
                "recipientPrivateScalar": f"{scalar(recipient_label):096x}",
                "recipientPublicPoint": point(recipient.public_key()).hex(),
                "ephemeralPrivateScalar": f"{scalar(ephemeral_label):096x}",
                "context": context.hex(),
                "plaintext": text.hex(),
                "blob": seal(recipient.public_key(), ephemeral, context, text).hex(),
            }
        )
    return {
        "format": "notarium seal-to-node version 1 (notarium.cluster.join)",
        "generator": "tests/tools/gen_join_vectors.py",
        "cases": cases,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true")
    text = json.dumps(vectors(), indent=2) + "\n"
    if parser.parse_args().check:
        return 0 if OUT.read_text() == text else 1
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
