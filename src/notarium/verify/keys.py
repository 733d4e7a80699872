"""Identifiers and certificate checks (ccf-ledger-format.md §8.2; acl-rest-api.md §8.2 step 5)."""

from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from notarium.errors import VerificationError

PublicKey = ec.EllipticCurvePublicKey


def spki_der(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_id(key: PublicKey) -> str:
    """Lower-case hex H(DER SPKI): the node id, and the COSE kid of the service key."""
    return hashlib.sha256(spki_der(key)).hexdigest()


def cert_fingerprint(cert: x509.Certificate) -> str:
    """Lower-case hex H(DER certificate): CCF's member and user ids."""
    return cert.fingerprint(hashes.SHA256()).hex()


def acl_user_id(cert: x509.Certificate) -> str:
    """ACL's certificate user id: the SHA-256 fingerprint, upper-case hex with colons."""
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


# what cryptography raises on malformed or unsupported certificates
_CERT_ERRORS = (ValueError, TypeError, UnicodeError, UnsupportedAlgorithm, x509.InvalidVersion)


def load_pem_cert(pem: bytes | str, what: str = "certificate") -> x509.Certificate:
    """Load one PEM certificate; any failure is a :class:`VerificationError`."""
    try:
        data = pem.encode() if isinstance(pem, str) else pem
        return x509.load_pem_x509_certificate(data)
    except _CERT_ERRORS as exc:
        raise VerificationError(f"{what} is not a PEM X.509 certificate") from exc


def ec_public_key(cert: x509.Certificate, what: str = "certificate") -> PublicKey:
    try:
        key = cert.public_key()
    except _CERT_ERRORS as exc:  # unsupported key type or curve
        raise VerificationError(f"{what} has an unusable public key") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise VerificationError(f"{what} does not hold an elliptic-curve key")
    return key


def check_endorsement(cert: x509.Certificate, issuer: x509.Certificate, what: str = "certificate") -> None:
    """Require that ``issuer``'s key signed ``cert`` (its TBS bytes, with its own hash)."""
    key = ec_public_key(issuer, "endorsing certificate")
    try:
        algo = cert.signature_hash_algorithm
    except _CERT_ERRORS as exc:
        raise VerificationError(f"{what} has an unsupported signature algorithm") from exc
    if algo is None:
        raise VerificationError(f"{what} has no signature hash algorithm")
    try:
        key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(algo))
    except InvalidSignature as exc:
        raise VerificationError(f"{what} is not endorsed by the service identity") from exc
