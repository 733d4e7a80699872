"""Bearer tokens: JWTs from OIDC issuers the ledger trusts (Entra ID, Keycloak, Dex, Auth0, ...).

The JOSE work is PyJWT's. This module decides what is acceptable:

- only the issuers configured in the ledger (``iss`` must be one of them, exactly);
- only keys recorded in the ledger for that issuer, found by the token's ``kid``;
- asymmetric signatures only (RS*, PS*, ES*), with the key type the algorithm needs; ``none``
  and HMAC are refused;
- ``aud`` one of the issuer's audiences (ACL's ``https://confidential-ledger.azure.com`` by
  default), ``exp`` required, ``nbf``/``exp`` with a small leeway, tokens of at most 6 KiB;
- the user id is the issuer's user-id claim (``oid`` as in ACL, configurable): any user id
  (:func:`notarium.auth.identity.check_user_id`), naming a token user *of that issuer*
  (:func:`notarium.auth.identity.token_key`), never a certificate user or another issuer's user.

Results are cached by the token's exact text until it expires; any change of issuers or keys
empties the cache.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard
from urllib.parse import urlsplit

import jwt
from cryptography import x509

from notarium.auth.identity import Principal, check_user_id, token_key

DEFAULT_AUDIENCE = "https://confidential-ledger.azure.com"
ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"})
MAX_TOKEN_BYTES = 6144  # Entra tokens are 1–3 KiB; the whole header line is bounded by the server (8190)
LEEWAY_S = 60
MAX_CACHED = 10_000
MAX_KEYS = 64


class TokenError(Exception):
    """A token was refused; the message says why (never the token itself)."""


class UnknownKeyError(TokenError):
    """The token names a key id the ledger has no key for (yet): the issuer may have rotated."""

    def __init__(self, issuer: str, kid: str | None) -> None:
        super().__init__(f"the token's key id {str(kid)[:64]!r} is not among the keys of its issuer")
        self.issuer = issuer
        self.kid = kid


def _https_url(value: object, what: str) -> str:
    if not isinstance(value, str) or len(value) > 2048:
        raise ValueError(f"{what} must be a URL")
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.netloc:
        raise ValueError(f"{what} must be an https:// URL")
    return value


@dataclass(frozen=True)
class IssuerConfig:
    """One trusted issuer, as recorded in ``public:notarium.jwt.issuers``."""

    issuer: str
    audiences: tuple[str, ...] = (DEFAULT_AUDIENCE,)
    user_id_claim: str = "oid"
    jwks_uri: str | None = None  # keys fetched (and re-fetched) from here; else given inline
    ca_certificate: str | None = None  # PEM trusted when fetching jwks_uri (default: the system's)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "issuer": self.issuer,
            "audiences": list(self.audiences),
            "userIdClaim": self.user_id_claim,
        }
        if self.jwks_uri is not None:
            body["jwksUri"] = self.jwks_uri
        if self.ca_certificate is not None:
            body["caCertificate"] = self.ca_certificate
        return body

    @classmethod
    def from_json(cls, obj: object) -> IssuerConfig:
        """Validated; ``ValueError`` with a message for the caller otherwise."""
        if not isinstance(obj, Mapping):
            raise ValueError("an issuer is a JSON object")
        unknown = set(obj) - {"issuer", "audiences", "userIdClaim", "jwksUri", "caCertificate", "jwks"}
        if unknown:
            raise ValueError(f"unknown issuer fields: {', '.join(sorted(unknown))}")
        issuer = obj.get("issuer")
        if not isinstance(issuer, str) or not 0 < len(issuer) <= 2048:
            raise ValueError("issuer must be the issuer's identifier (its iss claim)")
        audiences = obj.get("audiences", [DEFAULT_AUDIENCE])
        if (
            not isinstance(audiences, list)
            or not audiences
            or len(audiences) > 16
            or not all(isinstance(a, str) and 0 < len(a) <= 1024 for a in audiences)
        ):
            raise ValueError("audiences must be a non-empty list of strings")
        claim = obj.get("userIdClaim", "oid")
        if not isinstance(claim, str) or not 0 < len(claim) <= 64:
            raise ValueError("userIdClaim must be a claim name")
        jwks_uri = obj.get("jwksUri")
        if jwks_uri is not None:
            jwks_uri = _https_url(jwks_uri, "jwksUri")
        ca = obj.get("caCertificate")
        if ca is not None:
            if not isinstance(ca, str):
                raise ValueError("caCertificate must be a PEM certificate")
            try:
                x509.load_pem_x509_certificates(ca.encode())
            except ValueError:
                raise ValueError("caCertificate must be a PEM certificate") from None
        return cls(issuer, tuple(dict.fromkeys(audiences)), claim, jwks_uri, ca)


def parse_jwks(data: object) -> dict[str, dict[str, Any]]:
    """The usable signing keys of a JWK set, by ``kid`` (``ValueError`` if there are none or it is malformed).

    Keys for encryption (``use: enc``), symmetric keys and keys without a ``kid`` are left out.
    """
    if isinstance(data, bytes | str):
        try:
            data = json.loads(data)
        except ValueError:
            raise ValueError("the JWK set is not JSON") from None
    keys = data.get("keys") if isinstance(data, Mapping) else None
    if not isinstance(keys, list):
        raise ValueError("a JWK set is an object with a list of keys")
    out: dict[str, dict[str, Any]] = {}
    for k in keys:
        if not isinstance(k, Mapping) or k.get("use", "sig") != "sig" or k.get("kty") not in ("RSA", "EC"):
            continue
        kid = k.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > 256:
            continue
        try:
            jwt.PyJWK.from_dict(dict(k))
        except jwt.PyJWTError:
            continue
        out[kid] = dict(k)
        if len(out) > MAX_KEYS:
            raise ValueError(f"a JWK set of more than {MAX_KEYS} keys")
    if not out:
        raise ValueError("the JWK set holds no usable signing key (RSA or EC, with a kid)")
    return out


def _number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _family(alg: str) -> str:
    return "EC" if alg.startswith("ES") else "RSA"


@dataclass
class _Cached:
    principal: Principal
    expires: float


@dataclass
class TokenValidator:
    """Validates tokens against the issuers and keys in force (those recorded in the ledger)."""

    clock: Callable[[], float] = time.time
    issuers: dict[str, IssuerConfig] = field(default_factory=dict)
    _keys: dict[str, dict[str, jwt.PyJWK]] = field(default_factory=dict)
    _cache: dict[str, _Cached] = field(default_factory=dict)

    def configure(self, issuers: Mapping[str, IssuerConfig], keys: Mapping[str, Mapping[str, dict[str, Any]]]) -> None:
        """Put new issuers and keys in force; every cached result is forgotten."""
        self.issuers = dict(issuers)
        self._keys = {iss: {kid: jwt.PyJWK.from_dict(k) for kid, k in ks.items()} for iss, ks in keys.items()}
        self._cache = {}

    def validate(self, token: str) -> Principal:
        now = self.clock()
        cached = self._cache.get(token)
        if cached is not None and now < cached.expires:
            return cached.principal
        principal, expires = self._validate(token, now)
        if len(self._cache) >= MAX_CACHED:
            self._cache = {t: c for t, c in self._cache.items() if now < c.expires}
            if len(self._cache) >= MAX_CACHED:
                self._cache = {}
        self._cache[token] = _Cached(principal, expires)
        return principal

    def _validate(self, token: str, now: float) -> tuple[Principal, float]:
        if len(token) > MAX_TOKEN_BYTES:
            raise TokenError(f"the token is larger than {MAX_TOKEN_BYTES} bytes")
        if not token.isascii():  # a JWT is base64url and dots; HTTP headers may carry any byte
            raise TokenError("the bearer token is not a well-formed JWT")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except (jwt.PyJWTError, ValueError, TypeError):
            raise TokenError("the bearer token is not a well-formed JWT") from None
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise TokenError(f"tokens signed with {str(alg)[:16]!r} are not accepted")
        iss = unverified.get("iss")
        issuer = self.issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise TokenError("the token's issuer is not trusted by this ledger")
        kid = header.get("kid")
        key = self._keys.get(issuer.issuer, {}).get(kid) if isinstance(kid, str) else None
        if key is None:
            raise UnknownKeyError(issuer.issuer, kid if isinstance(kid, str) else None)
        if key.key_type != _family(alg):
            raise TokenError(f"the token's algorithm {alg} does not fit its key")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=list(issuer.audiences),
                issuer=issuer.issuer,
                # times are checked below against this validator's clock (PyJWT would use its own)
                options={
                    "require": ["exp", "iss", "aud"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidAudienceError:
            raise TokenError("the token is not for this ledger (audience)") from None
        except jwt.InvalidIssuerError:
            raise TokenError("the token's issuer is not trusted by this ledger") from None
        except jwt.InvalidSignatureError:
            raise TokenError("the token's signature does not verify") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenError(f"the token lacks the {exc.claim} claim") from None
        except jwt.PyJWTError:
            raise TokenError("the bearer token is invalid") from None
        exp, nbf = claims.get("exp"), claims.get("nbf", 0)
        if not _number(exp) or not _number(nbf):
            raise TokenError("the token's exp and nbf must be numbers")
        if now > exp + LEEWAY_S:
            raise TokenError("the token has expired")
        if now < nbf - LEEWAY_S:
            raise TokenError("the token is not valid yet")
        user = claims.get(issuer.user_id_claim)
        if not isinstance(user, str):
            raise TokenError(f"the token has no {issuer.user_id_claim} claim naming the user")
        try:
            check_user_id(user)
        except ValueError as exc:
            raise TokenError(f"the token's {issuer.user_id_claim} claim is not a user id ({exc})") from None
        principal = Principal(key=token_key(issuer.issuer, user), display_id=user, kind="token", issuer=issuer.issuer)
        # cached until it expires (not into the leeway), an hour at most
        return principal, min(float(exp), now + 3600)
