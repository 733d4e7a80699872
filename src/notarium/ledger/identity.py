"""Keys and certificates of a service: service identity, node, members, users.

Certificate profiles follow ccf-ledger-format.md §8.3, plus keyUsage on the CA and EKU on the node
certificate so that strict TLS clients (Python ≥ 3.13) accept them (acl-rest-api.md §5.3).
Private keys are written with mode 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from notarium.durable import write_new
from notarium.errors import ServiceError

# Default validity, in days (documented in docs/design/identities.md).
SERVICE_CERT_DAYS = 3650
NODE_CERT_DAYS = 365
MEMBER_CERT_DAYS = 730
USER_CERT_DAYS = 730
_BACKDATE = datetime.timedelta(hours=1)  # tolerate small clock skew between machines

PEM = serialization.Encoding.PEM


def new_ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key_usage(**allowed: bool) -> x509.KeyUsage:
    flags = dict.fromkeys(
        (
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        ),
        False,
    )
    flags.update(allowed)
    return x509.KeyUsage(**flags)


def _window(now: datetime.datetime, days: int) -> tuple[datetime.datetime, datetime.datetime]:
    return now - _BACKDATE, now + datetime.timedelta(days=days)


def service_certificate(
    key: ec.EllipticCurvePrivateKey,
    *,
    now: datetime.datetime,
    days: int = SERVICE_CERT_DAYS,
    name: str = "notarium Service",
) -> x509.Certificate:
    """A self-signed CA certificate: the service identity and root of trust."""
    start, end = _window(now, days)
    pub = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(pub)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            _key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(pub), critical=False)
        .sign(key, hashes.SHA384())
    )


def node_certificate(
    node_key: ec.EllipticCurvePublicKey,
    service_key: ec.EllipticCurvePrivateKey,
    service_cert: x509.Certificate,
    *,
    hosts: list[str],
    now: datetime.datetime,
    days: int = NODE_CERT_DAYS,
) -> x509.Certificate:
    """The node certificate, endorsed (issued) by the service key; also the TLS server cert."""
    sans: list[x509.GeneralName] = []
    for host in dict.fromkeys(["localhost", "127.0.0.1", "::1", *hosts]):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    start, end = _window(now, days)
    return (
        x509.CertificateBuilder()
        .subject_name(_name("notarium Node"))
        .issuer_name(service_cert.subject)
        .public_key(node_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _key_usage(digital_signature=True, key_agreement=True),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(node_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(service_key.public_key()),
            critical=False,
        )
        .sign(service_key, hashes.SHA384())
    )


def endorse_previous_identity(
    previous: x509.Certificate,
    service_key: ec.EllipticCurvePrivateKey,
    service_cert: x509.Certificate,
    *,
    now: datetime.datetime,
) -> x509.Certificate:
    """After a disaster recovery: the new service identity certifies the previous one.

    The result has the previous service's subject and public key, is issued (signed) by the new
    service key, and is valid as long as the new service certificate. Receipts signed by nodes of
    the previous service then verify against the new service certificate with this certificate in
    their ``serviceEndorsements`` (node cert → endorsement → new service cert), as CCF does.
    """
    pub = previous.public_key()
    if not isinstance(pub, ec.EllipticCurvePublicKey):
        raise ValueError("a service identity has an EC key")
    return (
        x509.CertificateBuilder()
        .subject_name(previous.subject)
        .issuer_name(service_cert.subject)
        .public_key(pub)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(service_cert.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(digital_signature=True, key_cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(service_key.public_key()), critical=False)
        .sign(service_key, hashes.SHA384())
    )


def self_signed_identity(
    key: ec.EllipticCurvePrivateKey, cn: str, *, now: datetime.datetime, days: int
) -> x509.Certificate:
    """A self-signed client identity (members and users), as ACL and CCF users create them."""
    start, end = _window(now, days)
    pub = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(pub)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
        .sign(key, hashes.SHA384())
    )


# --- files ---


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(PEM)


def private_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def public_pem(key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def write_secret(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 (refusing to overwrite) and write ``data`` durably."""
    write_new(path, data, 0o600)


def write_public(path: Path, data: bytes) -> None:
    write_new(path, data, 0o644)


def load_private_ec(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise ServiceError(f"cannot load private key {path}: {type(exc).__name__}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ServiceError(f"{path} does not hold an elliptic-curve private key")
    return key


def load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ServiceError(f"cannot load certificate {path}: {exc}") from None


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """What a running node holds: its key and endorsed certificate, and the service identity."""

    node_key: ec.EllipticCurvePrivateKey
    node_cert: x509.Certificate
    service_key: ec.EllipticCurvePrivateKey
    service_cert: x509.Certificate
