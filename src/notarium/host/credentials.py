"""The host's own credentials, kept in the host directory.

- ``tls/ca_cert.pem`` + ``tls/ca_privk.pem``: the host TLS CA (created on first start). Clients of
  the management API pin ``ca_cert.pem``; each ledger's identity document carries it after the
  ledger's service certificate, so that data-plane clients can verify the host's TLS
  (docs/design/host.md explains why, and what it means for trust).
- ``tls/server_cert.pem`` + ``tls/server_privk.pem``: the TLS server certificate, issued by the CA
  for ``localhost``, ``127.0.0.1``, ``::1`` and the names given with ``--host-name``; issued anew at
  every start (clients pin the CA, not it).
- ``host_token``: the management bearer token (mode 0600), created on first start. It is shown
  to nobody: commands read the file. Anyone who can read it manages the host's ledgers (but
  cannot read their entries: the data plane never accepts it).
- ``operators/*.pem``: optional operator client certificates, accepted instead of the token.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from notarium.durable import replace
from notarium.ledger import identity as ids

CA_NAME = "notarium Host CA"


@dataclass(frozen=True, slots=True)
class HostLayout:
    root: Path

    @property
    def ledgers(self) -> Path:
        return self.root / "ledgers"

    def ledger_dir(self, key: str) -> Path:
        return self.ledgers / key

    @property
    def token(self) -> Path:
        return self.root / "host_token"

    @property
    def ca_cert(self) -> Path:
        return self.root / "tls" / "ca_cert.pem"

    @property
    def ca_key(self) -> Path:
        return self.root / "tls" / "ca_privk.pem"

    @property
    def server_cert(self) -> Path:
        return self.root / "tls" / "server_cert.pem"

    @property
    def server_key(self) -> Path:
        return self.root / "tls" / "server_privk.pem"

    @property
    def operators(self) -> Path:
        return self.root / "operators"

    @property
    def store_key(self) -> Path:
        """``notarium host --store``: seals each ledger's identity in PostgreSQL (host/vault.py)."""
        return self.root / "store_key"

    @property
    def endpoint(self) -> Path:
        """Written at every start: the URL the host serves (what ``notarium ledgers`` calls)."""
        return self.root / "endpoint"


@dataclass(frozen=True, slots=True)
class HostCredentials:
    token: str
    ca_cert: x509.Certificate
    server_cert: x509.Certificate
    server_key: ec.EllipticCurvePrivateKey
    operator_fingerprints: frozenset[str]  # lower-case hex SHA-256 of the DER certificates

    @property
    def ca_pem(self) -> bytes:
        return self.ca_cert.public_bytes(Encoding.PEM)

    def token_matches(self, token: str) -> bool:
        return hmac.compare_digest(token.encode(), self.token.encode())

    def is_operator(self, cert_der: bytes) -> bool:
        return hashlib.sha256(cert_der).hexdigest() in self.operator_fingerprints


def prepare(layout: HostLayout, hosts: tuple[str, ...] = (), now: datetime.datetime | None = None) -> HostCredentials:
    """Load the host's credentials, creating what is missing; a new server certificate every time."""
    now = now or datetime.datetime.now(datetime.UTC)
    layout.root.mkdir(parents=True, exist_ok=True)
    layout.root.chmod(0o700)
    (layout.root / "tls").mkdir(mode=0o700, exist_ok=True)
    layout.ledgers.mkdir(mode=0o700, exist_ok=True)
    if not layout.token.exists():
        replace(layout.token, secrets.token_urlsafe(32).encode(), 0o600)
    token = layout.token.read_text().strip()
    if not layout.ca_cert.exists():
        ca_key = ids.new_ec_key()
        ca_cert = ids.service_certificate(ca_key, now=now, name=CA_NAME)
        replace(layout.ca_key, ids.private_pem(ca_key), 0o600)
        replace(layout.ca_cert, ids.cert_pem(ca_cert))
    ca_key = ids.load_private_ec(layout.ca_key)
    ca_cert = ids.load_cert(layout.ca_cert)
    server_key = ids.new_ec_key()
    server_cert = ids.node_certificate(server_key.public_key(), ca_key, ca_cert, hosts=list(hosts), now=now)
    replace(layout.server_key, ids.private_pem(server_key), 0o600)
    replace(layout.server_cert, ids.cert_pem(server_cert))
    operators = set()
    if layout.operators.is_dir():
        for pem in sorted(layout.operators.glob("*.pem")):
            cert = ids.load_cert(pem)
            operators.add(hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest())
    return HostCredentials(token, ca_cert, server_cert, server_key, frozenset(operators))
