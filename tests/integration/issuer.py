"""A test OIDC issuer: its own keys, its JWK set served over real HTTPS (a certificate of its own,
which the ledger is told to trust), tokens minted with PyJWT, and key rotation."""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

AUDIENCE = "https://confidential-ledger.azure.com"


def _self_signed(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test issuer")])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )


class Issuer:
    """Keys by kid; ``published`` are the kids its JWK set shows."""

    def __init__(self, name: str = "test-issuer") -> None:
        self.keys: dict[str, Any] = {}
        self.algs: dict[str, str] = {}
        self.published: list[str] = []
        self.fetches = 0
        self.add_key("rsa-1", rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256")
        self.add_key("ec-1", ec.generate_private_key(ec.SECP256R1()), "ES256")
        tls_key = ec.generate_private_key(ec.SECP256R1())
        cert = _self_signed(tls_key)
        self.ca_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        self._dir = Path(tempfile.mkdtemp(prefix="issuer-"))
        (self._dir / "cert.pem").write_text(self.ca_pem)
        (self._dir / "key.pem").write_bytes(
            tls_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                issuer.fetches += 1
                body = json.dumps(issuer.jwks()).encode()
                self.send_response(200 if self.path == "/keys" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self._dir / "cert.pem"), str(self._dir / "key.pem"))
        self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
        self.jwks_uri = f"https://127.0.0.1:{self._server.server_address[1]}/keys"
        self.iss = f"https://127.0.0.1:{self._server.server_address[1]}/{name}/v2.0"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add_key(self, kid: str, key: Any, alg: str, publish: bool = True) -> None:
        self.keys[kid] = key
        self.algs[kid] = alg
        if publish:
            self.published.append(kid)

    def rotate(self) -> str:
        """A new RSA key replaces every published key."""
        kid = f"rsa-{uuid.uuid4().hex[:8]}"
        self.add_key(kid, rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256", publish=False)
        self.published = [kid]
        return kid

    def jwk(self, kid: str) -> dict[str, Any]:
        key = self.keys[kid].public_key()
        algo = jwt.algorithms.RSAAlgorithm if isinstance(key, rsa.RSAPublicKey) else jwt.algorithms.ECAlgorithm
        body: dict[str, Any] = algo.to_jwk(key, as_dict=True)
        body.update({"kid": kid, "use": "sig", "alg": self.algs[kid]})
        return body

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.jwk(k) for k in self.published]}

    def config(self) -> dict[str, Any]:
        """What an Administrator PUTs to /app/jwtIssuers."""
        return {"issuer": self.iss, "jwksUri": self.jwks_uri, "caCertificate": self.ca_pem}

    def token(self, user: str, *, kid: str | None = None, lifetime: float = 3600, **overrides: Any) -> str:
        """A token for ``user`` (its oid and sub), signed by ``kid`` (default: the first published key)."""
        kid = kid or self.published[0]
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.iss,
            "aud": AUDIENCE,
            "oid": user,
            "iat": now,
            "nbf": now - 5,
            "exp": now + int(lifetime),
            "sub": user,
        }
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, self.keys[kid], algorithm=self.algs[kid], headers={"kid": kid})
