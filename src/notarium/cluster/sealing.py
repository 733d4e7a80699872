"""Sealing a secret to a node's key, and carrying new ledger secrets to the nodes of a replicated
service through the log (:class:`NodeCourier`; docs/design/ha.md).

Pure: no I/O. A blob that does not open is a :class:`~notarium.errors.VerificationError` with
``check`` :data:`CHECK_SEALED`; a key of the wrong curve is a ``ValueError``.

**Sealing to a node key** (:func:`seal_to_node`, :func:`open_from_node`), format version 1::

    blob     = 0x01 ‖ E ‖ C
    E        = the ephemeral P-384 public key, uncompressed SEC 1 point (97 bytes)
    C        = AES-256-GCM(key, iv, plaintext, aad = 0x01 ‖ E): ciphertext ‖ 16-byte tag
    Z        = ECDH(ephemeral private key, recipient public key R)      (48 bytes)
    info     = "notarium/seal-to-node/v1" ‖ 0x00 ‖ len(context) (4 bytes, big-endian) ‖ context
               ‖ E ‖ R (uncompressed SEC 1 point, 97 bytes)
    key ‖ iv = HKDF-SHA256(Z, salt = none, info), 44 bytes: a 32-byte key, a 12-byte IV

A blob is at least 114 bytes. Each blob has its own ephemeral key, hence its own AES key: the IV
is derived with it (as HPKE derives its base nonce) and never repeats under a key. ``context``
says what the blob is for and for whom (:func:`secrets_context`: the service's and the node's key
ids), so a blob cannot be replayed as another kind of blob or to another service.
"""

from __future__ import annotations

import json

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from notarium.errors import VerificationError
from notarium.ledger.config import LedgerState
from notarium.verify import tables
from notarium.verify.keys import ec_public_key, load_pem_cert

SEAL_VERSION = 1
_SEAL_LABEL = b"notarium/seal-to-node/v1"
_POINT = 97  # uncompressed P-384 point: 0x04 ‖ x ‖ y
_TAG = 16
_KEY, _IV = 32, 12
SEAL_MIN_BYTES = 1 + _POINT + _TAG

CHECK_SEALED = "join-sealed"


def _point(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def require_p384(key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey, what: str) -> None:
    if not isinstance(key.curve, ec.SECP384R1):
        raise ValueError(f"{what} must be a P-384 key, not {key.curve.name}")


def _derive(shared: bytes, context: bytes, ephemeral: bytes, recipient: bytes) -> tuple[bytes, bytes]:
    info = _SEAL_LABEL + b"\x00" + len(context).to_bytes(4, "big") + context + ephemeral + recipient
    okm = HKDF(hashes.SHA256(), _KEY + _IV, salt=None, info=info).derive(shared)
    return okm[:_KEY], okm[_KEY:]


def _seal_with(
    ephemeral: ec.EllipticCurvePrivateKey, node_public_key: ec.EllipticCurvePublicKey, plaintext: bytes, context: bytes
) -> bytes:
    """:func:`seal_to_node` with a given ephemeral key: for test vectors only (reusing an
    ephemeral key for two blobs to the same node would reuse the AES key and IV)."""
    require_p384(node_public_key, "the node key")
    require_p384(ephemeral, "the ephemeral key")
    header = bytes([SEAL_VERSION]) + _point(ephemeral.public_key())
    shared = ephemeral.exchange(ec.ECDH(), node_public_key)
    key, iv = _derive(shared, context, header[1:], _point(node_public_key))
    return header + AESGCM(key).encrypt(iv, plaintext, header)


def seal_to_node(node_public_key: ec.EllipticCurvePublicKey, plaintext: bytes, *, context: bytes) -> bytes:
    """Encrypt ``plaintext`` so that only the holder of ``node_public_key``'s private key can read
    it, for the purpose ``context`` names (format in the module docstring)."""
    return _seal_with(ec.generate_private_key(ec.SECP384R1()), node_public_key, plaintext, context)


def open_from_node(node_private_key: ec.EllipticCurvePrivateKey, blob: bytes, *, context: bytes) -> bytes:
    """The plaintext of a :func:`seal_to_node` blob; :class:`VerificationError` if the blob is
    malformed, altered, sealed to another key or for another context."""
    require_p384(node_private_key, "the node key")
    blob = bytes(blob)
    if len(blob) < SEAL_MIN_BYTES:
        raise VerificationError(f"the sealed blob is too short ({len(blob)} bytes)", check=CHECK_SEALED)
    if blob[0] != SEAL_VERSION:
        raise VerificationError(f"unknown sealed blob version {blob[0]}", check=CHECK_SEALED)
    header, ciphertext = blob[: 1 + _POINT], blob[1 + _POINT :]
    if header[1] != 0x04:
        raise VerificationError("the sealed blob's ephemeral key is not an uncompressed point", check=CHECK_SEALED)
    try:
        ephemeral = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP384R1(), header[1:])
    except ValueError:
        raise VerificationError("the sealed blob's ephemeral key is not a P-384 point", check=CHECK_SEALED) from None
    shared = node_private_key.exchange(ec.ECDH(), ephemeral)
    key, iv = _derive(shared, context, header[1:], _point(node_private_key.public_key()))
    try:
        return AESGCM(key).decrypt(iv, ciphertext, header)
    except InvalidTag:
        raise VerificationError(
            "the sealed blob does not open: altered, or sealed to another key or for another purpose",
            check=CHECK_SEALED,
        ) from None


class NodeCourier:
    """A replicated service's new ledger secret, through the log (``Ledger(courier=...)``): the
    primary seals it in the rekey to each trusted node's key (``public:notarium.nodes.ledger_secrets``);
    each follower opens its own blob when it reaches the rekey. The context binds the ledger and the
    secret's first seqno."""

    @staticmethod
    def _context(ledger: LedgerState, start: int) -> bytes:
        return b"notarium/ledger-secret/1|%s|%d" % (ledger.service.ledger_id.encode(), start)

    def seal_for_nodes(self, ledger: LedgerState, secret: bytes, start: int) -> dict[bytes, bytes]:
        sealed = {}
        for node, raw in ledger.state(tables.NODES_INFO).items():
            try:
                trusted = json.loads(raw).get("status") == "Trusted"
            except (ValueError, AttributeError):
                trusted = False
            cert = ledger.state_get(tables.NODES_ENDORSED_CERTS, node)
            if not trusted or cert is None or node.decode() == ledger.node_id:
                continue
            key = ec_public_key(load_pem_cert(cert, "node certificate"), "node certificate")
            sealed[node] = seal_to_node(key, secret, context=self._context(ledger, start))
        return sealed

    def open_for_node(self, ledger: LedgerState, sealed: bytes, start: int) -> bytes:
        return open_from_node(ledger.identity.node_key, sealed, context=self._context(ledger, start))
