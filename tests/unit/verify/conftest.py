"""Shared fixtures for the verification-core tests: a throwaway PKI and the ACL SDK vectors."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from notarium.verify.keys import key_id

VECTORS = Path(__file__).resolve().parent / "vectors"
NOT_BEFORE = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
NOT_AFTER = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True)
class Identity:
    """A key and the certificate that holds its public half."""

    key: PrivateKey
    cert: x509.Certificate

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def node_id(self) -> str:
        key = self.key.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        return key_id(key)


class Pki:
    """Makes service (self-signed CA) and node (service-endorsed) identities."""

    _serial = 1000

    def _name(self, cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def _sign(
        self,
        subject: str,
        public_key: Any,
        issuer: Identity | None,
        issuer_key: PrivateKey,
        *,
        ca: bool,
        algorithm: hashes.HashAlgorithm | None,
    ) -> x509.Certificate:
        Pki._serial += 1
        builder = (
            x509.CertificateBuilder()
            .subject_name(self._name(subject))
            .issuer_name(issuer.cert.subject if issuer else self._name(subject))
            .public_key(public_key)
            .serial_number(Pki._serial)
            .not_valid_before(NOT_BEFORE)
            .not_valid_after(NOT_AFTER)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        return builder.sign(issuer_key, algorithm)

    def service(
        self,
        curve: ec.EllipticCurve | None = None,
        cn: str = "CCF Network",
        *,
        key: PrivateKey | None = None,
        algorithm: hashes.HashAlgorithm | None = None,
    ) -> Identity:
        """A self-signed service identity (EC P-384 unless told otherwise)."""
        key = key or ec.generate_private_key(curve or ec.SECP384R1())
        if algorithm is None and not isinstance(key, ed25519.Ed25519PrivateKey):
            algorithm = hashes.SHA384()
        return Identity(key, self._sign(cn, key.public_key(), None, key, ca=True, algorithm=algorithm))

    def node(
        self,
        issuer: Identity,
        curve: ec.EllipticCurve | None = None,
        *,
        key: PrivateKey | None = None,
        algorithm: hashes.HashAlgorithm | None = None,
        cn: str = "CCF Node",
    ) -> Identity:
        key = key or ec.generate_private_key(curve or ec.SECP384R1())
        if algorithm is None and not isinstance(issuer.key, ed25519.Ed25519PrivateKey):
            algorithm = hashes.SHA384()
        cert = self._sign(cn, key.public_key(), issuer, issuer.key, ca=False, algorithm=algorithm)
        return Identity(key, cert)

    def endorse(self, previous_service: Identity, new_service: Identity) -> x509.Certificate:
        """The new service key certifies the previous service identity (ccf-ledger-format.md §6.4)."""
        return self._sign(
            "CCF Network (previous)",
            previous_service.key.public_key(),
            new_service,
            new_service.key,
            ca=True,
            algorithm=hashes.SHA384(),
        )


@pytest.fixture(scope="session")
def pki() -> Pki:
    return Pki()


@pytest.fixture(scope="session")
def service(pki: Pki) -> Identity:
    return pki.service()


@pytest.fixture(scope="session")
def node(pki: Pki, service: Identity) -> Identity:
    return pki.node(service)


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


@pytest.fixture(scope="session")
def acl_receipts() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((VECTORS / "acl-sdk" / "receipts.json").read_text("utf-8"))
    return doc


@pytest.fixture(scope="session")
def acl_claims() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((VECTORS / "acl-sdk" / "claims.json").read_text("utf-8"))
    return doc
