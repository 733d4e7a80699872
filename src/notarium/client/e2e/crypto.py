"""The three standard objects of end-to-end encryption, made and opened with ``joserfc``.

- **Envelope** (an entry's contents): JWE compact serialization (RFC 7516), ``alg`` A256KW,
  ``enc`` A256GCM: a fresh content key per entry, wrapped under the collection's data key. The
  protected header (authenticated as GCM's AAD) names the data key (``kid``) and binds the
  collection (``collection``), so an envelope moved to another collection fails to open.
- **Wrapped key** (a data key for one reader): JWE compact, ``alg`` ECDH-ES+A256KW to the
  reader's P-256 ``enc`` key, ``enc`` A256GCM; the payload is the data key as an ``oct`` JWK
  (``cty`` jwk+json, RFC 7517 §7); the header binds the collection and the reader id.
- **Grant** (what a writer records): JWS compact (RFC 7515), ES256, signed by the writer's
  ``sig`` key, which the header carries (``jwk``); the payload is JSON (see ``ring.py``).

Each object has its own ``typ`` and algorithm allow-list, so one cannot be taken for another.
Everything read is untrusted: any failure raises :class:`VerificationError`.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from joserfc import jwe, jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OctKey
from joserfc.registry import HeaderParameter

from notarium.client.e2e.keys import ReaderKey, public_ec_key
from notarium.errors import VerificationError

ENTRY_TYPE = "notarium-e2e-entry+jwe"
WRAP_TYPE = "notarium-e2e-key+jwe"
GRANT_TYPE = "notarium-e2e-grant+jws"
COLLECTION = "collection"  # the private header parameter binding the collection id
KEY_BYTES = 32
MAX_ENVELOPE_BYTES = 64 << 20  # far above any ledger's entry limit; bounds what joserfc accepts

_BOUND = {COLLECTION: HeaderParameter("the collection the object is bound to", "str", True)}


def _jwe_registry(algorithms: list[str]) -> jwe.JWERegistry:
    registry = jwe.JWERegistry(header_registry=dict(_BOUND), algorithms=algorithms)
    registry.max_ciphertext_length = MAX_ENVELOPE_BYTES
    return registry


_ENTRY_REGISTRY = _jwe_registry(["A256KW", "A256GCM"])
_WRAP_REGISTRY = _jwe_registry(["ECDH-ES+A256KW", "A256GCM"])
_GRANT_REGISTRY = jws.JWSRegistry(algorithms=["ES256"])
_GRANT_REGISTRY.max_payload_length = 1 << 20


@dataclass(frozen=True)
class DataKey:
    """A collection's data key: 256 random bits and their id. Never printed (``repr`` hides it)."""

    kid: str
    secret: bytes = field(repr=False)

    @classmethod
    def generate(cls) -> DataKey:
        return cls(b64url(secrets.token_bytes(16)), secrets.token_bytes(KEY_BYTES))

    def jwk(self) -> OctKey:
        return OctKey.import_key(self.secret, {"kid": self.kid})


@dataclass(frozen=True)
class EnvelopeHeader:
    kid: str
    collection: str


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str, what: str) -> bytes:
    if not text.isascii() or "=" in text:
        raise VerificationError(f"{what} is not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise VerificationError(f"{what} is not base64url") from None


def _protected_header(token: str, parts: int) -> dict[str, Any] | None:
    """The protected header of a compact JOSE object with ``parts`` parts, or ``None`` when the
    text is not one (it is then ordinary text)."""
    pieces = token.split(".")
    if len(pieces) != parts or not pieces[0]:
        return None
    try:
        header = json.loads(_b64url_decode(pieces[0], "the header"))
    except (VerificationError, ValueError):
        return None
    return header if isinstance(header, dict) else None


# --- envelopes ------------------------------------------------------------------------------------


def envelope_header(contents: str) -> EnvelopeHeader | None:
    """The header of an e2e envelope, or ``None`` when ``contents`` is not one (ordinary text).
    Text that claims to be an envelope (its ``typ``) but is malformed is a verification error."""
    header = _protected_header(contents, 5)
    if header is None or header.get("typ") != ENTRY_TYPE:
        return None
    kid, collection = header.get("kid"), header.get(COLLECTION)
    if header.get("alg") != "A256KW" or header.get("enc") != "A256GCM":
        raise VerificationError("an e2e envelope with other algorithms than A256KW and A256GCM", check="e2e-envelope")
    if not isinstance(kid, str) or not kid or not isinstance(collection, str):
        raise VerificationError("an e2e envelope without a key id or collection", check="e2e-envelope")
    return EnvelopeHeader(kid, collection)


def seal(plaintext: str, key: DataKey, collection: str) -> str:
    """The envelope of ``plaintext`` (UTF-8) for ``collection`` under the data key."""
    header = {"alg": "A256KW", "enc": "A256GCM", "typ": ENTRY_TYPE, "kid": key.kid, COLLECTION: collection}
    return jwe.encrypt_compact(header, plaintext.encode(), key.jwk(), registry=_ENTRY_REGISTRY)


def open_envelope(contents: str, key: DataKey, collection: str) -> str:
    """The plaintext of an envelope read from ``collection``; raises if it was sealed for another
    collection or another key, or was altered in any way."""
    header = envelope_header(contents)
    if header is None:
        raise VerificationError("not an e2e envelope", check="e2e-envelope")
    if header.collection != collection:
        raise VerificationError(
            f"the envelope was sealed for collection {header.collection[:80]!r}, found in {collection[:80]!r}",
            check="e2e-collection",
        )
    if header.kid != key.kid:
        raise VerificationError("the envelope names another data key", check="e2e-envelope")
    try:
        plaintext = jwe.decrypt_compact(contents, key.jwk(), registry=_ENTRY_REGISTRY).plaintext
    except (JoseError, ValueError, TypeError) as exc:
        raise VerificationError(
            f"the envelope does not open with its data key ({type(exc).__name__})", check="e2e-envelope"
        ) from None
    try:
        return (plaintext or b"").decode()
    except UnicodeDecodeError:
        raise VerificationError("the envelope's plaintext is not UTF-8", check="e2e-envelope") from None


# --- wrapped data keys ----------------------------------------------------------------------------


def wrap(key: DataKey, reader_enc: ECKey, collection: str) -> str:
    """The data key, encrypted to one reader's ``enc`` key (ECDH-ES+A256KW), bound to the
    collection and to the reader id (the key's thumbprint)."""
    header = {"alg": "ECDH-ES+A256KW", "enc": "A256GCM", "typ": WRAP_TYPE, "cty": "jwk+json"}
    header |= {"kid": reader_enc.thumbprint(), COLLECTION: collection}
    payload = json.dumps({"kty": "oct", "kid": key.kid, "k": b64url(key.secret)}, separators=(",", ":"))
    return jwe.encrypt_compact(header, payload, reader_enc, registry=_WRAP_REGISTRY)


def unwrap(wrapped: str, reader: ReaderKey, collection: str, kid: str) -> DataKey:
    """The data key ``kid`` of ``collection`` from a key wrapped to ``reader``."""
    header = _protected_header(wrapped, 5)
    if header is None or header.get("typ") != WRAP_TYPE:
        raise VerificationError("a wrapped key is not a notarium-e2e-key+jwe", check="e2e-grant")
    if header.get(COLLECTION) != collection or header.get("kid") != reader.reader_id:
        raise VerificationError("a wrapped key is bound to another collection or reader", check="e2e-grant")
    try:
        payload = jwe.decrypt_compact(wrapped, reader.enc, registry=_WRAP_REGISTRY).plaintext
        value = json.loads(payload or b"")
    except (JoseError, ValueError, TypeError) as exc:
        raise VerificationError(
            f"a wrapped key does not open with this key ({type(exc).__name__})", check="e2e-grant"
        ) from None
    if not isinstance(value, dict) or value.get("kty") != "oct" or value.get("kid") != kid:
        raise VerificationError("a wrapped key holds another key than its grant names", check="e2e-grant")
    k = value.get("k")
    secret = _b64url_decode(k, "the wrapped key") if isinstance(k, str) else b""
    if len(secret) != KEY_BYTES:
        raise VerificationError("a wrapped data key is not 256 bits", check="e2e-grant")
    return DataKey(kid, secret)


# --- signed grants --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signed:
    """A grant whose signature verified with the key its header names (who that is, is checked
    by the caller against the trusted writers)."""

    writer_id: str
    payload: dict[str, Any]


def sign_grant(payload: dict[str, Any], writer: ReaderKey) -> str:
    header = {"alg": "ES256", "typ": GRANT_TYPE, "jwk": writer.card.sig.as_dict(private=False)}
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    return jws.serialize_compact(header, body, writer.sig, registry=_GRANT_REGISTRY)


def is_grant(contents: str) -> bool:
    header = _protected_header(contents, 3)
    return header is not None and header.get("typ") == GRANT_TYPE


def read_grant(contents: str) -> Signed:
    """Verify a grant's signature with the key in its header; the payload must be a JSON object."""
    header = _protected_header(contents, 3)
    if header is None or header.get("typ") != GRANT_TYPE:
        raise VerificationError("not a notarium-e2e-grant+jws", check="e2e-grant")
    if header.get("alg") != "ES256":
        raise VerificationError("a grant not signed with ES256", check="e2e-grant")
    signer: ECKey = public_ec_key(header.get("jwk"), "the grant's signing key")
    try:
        payload = jws.deserialize_compact(contents, signer, registry=_GRANT_REGISTRY).payload
        value = json.loads(payload)
    except (JoseError, ValueError, TypeError) as exc:
        raise VerificationError(
            f"a grant's signature does not verify ({type(exc).__name__})", check="e2e-grant"
        ) from None
    if not isinstance(value, dict):
        raise VerificationError("a grant's payload is not a JSON object", check="e2e-grant")
    return Signed(signer.thumbprint(), value)
