"""Principals (a caller authenticated by a client certificate or a bearer token) and user ids.

One rule for every user id: the ``{userId}`` of ``/app/users`` and ``/app/ledgerUsers``, the
``user_id`` of governance's ``set_user``/``remove_user``, the host's first users, and the user-id
claim of a token (docs/design/trust-model.md, "User ids").

- A user id is a string of 1 to :data:`MAX_USER_ID` characters without control characters.
- A SHA-256 certificate fingerprint (64 hex digits, optionally as colon-separated pairs, any case)
  names a **certificate user**. Its key is the lower-case hex digest (CCF's user id).
- Any other id names a **token user of one issuer**: the value of that issuer's user-id claim,
  compared exactly, except that an object id (GUID) is compared without case. Its key is
  ``jwt:<SHA-256 of the issuer, hex>:<id>``, so a token can only ever be a user of *its* issuer
  and never a certificate user (a certificate key has no ``jwt:`` prefix), whatever its claim says.
- A token user recorded while the ledger trusted no issuer (or by a ledger from before issuers
  scoped user ids: a bare lower-case GUID) is **unbound**, ``jwt::<id>``: it belongs to the
  ledger's only issuer, and only while the ledger trusts exactly one. Any change of the trusted
  issuers first binds the unbound users to the one issuer trusted until then (:func:`bind_unbound`),
  so adding a second issuer never hands them to it.
- Nothing else is refused: any id ACL accepts (``"0" * 36`` in its own tests, ``AB:CD``) is accepted
  wherever a user id is written, the same as a token's claim may carry it.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from cryptography import x509

_FINGERPRINT = re.compile(r"^[0-9A-Fa-f]{2}(:?[0-9A-Fa-f]{2}){31}$")
_GUID = re.compile(r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$")
_LEGACY_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MAX_USER_ID = 256
JWT_USER_PREFIX = "jwt:"  # the keys of token users (a certificate user's key is 64 hex digits)


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. ``key`` is the key of the user it is (see the module's rule)."""

    key: str
    display_id: str  # the fingerprint, or the token's user-id claim as the issuer wrote it
    kind: str  # "certificate" or "token"
    issuer: str | None = None  # a token's issuer


def check_user_id(user_id: object) -> str:
    """``user_id`` if it is a user id at all (``ValueError`` saying why otherwise)."""
    if not isinstance(user_id, str) or not user_id:
        raise ValueError("a user id is a non-empty string")
    if len(user_id) > MAX_USER_ID:
        raise ValueError(f"a user id is at most {MAX_USER_ID} characters")
    if _CONTROL.search(user_id):
        raise ValueError("a user id has no control characters")
    try:
        user_id.encode()
    except UnicodeEncodeError:
        raise ValueError("a user id is Unicode text (UTF-8)") from None
    return user_id


def check_user_ref(user_id: object, issuer: object = None) -> tuple[str, str | None]:
    """(user id, issuer) if they can name a user (``ValueError`` saying why otherwise): a user id,
    and an issuer that is an ``iss`` value."""
    user_id = check_user_id(user_id)
    if issuer is not None and (not isinstance(issuer, str) or not 0 < len(issuer) <= 2048):
        raise ValueError("an issuer is its iss value, a string of at most 2048 characters")
    return user_id, issuer


def is_fingerprint(user_id: str) -> bool:
    return bool(_FINGERPRINT.match(user_id))


def certificate_key(fingerprint: str) -> str:
    """The key of the certificate user a fingerprint names: lower-case hex, no colons."""
    return fingerprint.replace(":", "").lower()


def token_subject(user_id: str) -> str:
    """How a token user id is compared: exactly, but an object id (GUID) without case."""
    return user_id.lower() if _GUID.match(user_id) else user_id


def issuer_digest(issuer: str) -> str:
    return hashlib.sha256(issuer.encode()).hexdigest()


def token_key(issuer: str | None, user_id: str) -> str:
    """The key of ``issuer``'s token user ``user_id`` (``issuer`` None: an unbound token user)."""
    return f"{JWT_USER_PREFIX}{issuer_digest(issuer) if issuer is not None else ''}:{token_subject(user_id)}"


def unbound_keys(user_id: str) -> tuple[str, ...]:
    """The keys an unbound token user ``user_id`` may have: ``jwt::<id>``, or, recorded by a ledger
    from before issuers scoped user ids, the bare lower-case object id."""
    subject = token_subject(user_id)
    return (token_key(None, subject), subject) if _LEGACY_GUID.match(subject) else (token_key(None, subject),)


def parse_token_key(key: str) -> tuple[str | None, str] | None:
    """(issuer digest or None if unbound, id as compared) of a token user's key; None for a certificate user."""
    if key.startswith(JWT_USER_PREFIX):
        digest, _, subject = key[len(JWT_USER_PREFIX) :].partition(":")
        return digest or None, subject
    if _LEGACY_GUID.match(key):
        return None, key
    return None


def find_user_key(user_id: str, issuer: str | None, keys: Collection[str], trusted: Collection[str]) -> str | None:
    """The key of the existing user that ``user_id`` (of ``issuer``, if named) refers to, or None.

    ``keys``: the users' keys; ``trusted``: the issuers the ledger trusts. ``ValueError`` if the id
    is malformed, or names token users of several issuers (the caller must name one).
    """
    check_user_id(user_id)
    if issuer is not None:
        exact = token_key(issuer, user_id)
        if exact in keys:
            return exact
        if list(trusted) == [issuer]:  # unbound token users belong to the only issuer
            return next((k for k in unbound_keys(user_id) if k in keys), None)
        return None
    if is_fingerprint(user_id):
        key = certificate_key(user_id)
        return key if key in keys else None
    subject = token_subject(user_id)
    found = [k for k in keys if (parsed := parse_token_key(k)) is not None and parsed[1] == subject]
    if len(found) > 1:
        raise ValueError(
            f"several token users, of different issuers, have the id {_shown(user_id)}: "
            "name the user's issuer with ?issuer=<its iss>"
        )
    return found[0] if found else None


def new_user_key(user_id: str, issuer: str | None, trusted: Collection[str]) -> tuple[str, str | None]:
    """(key, issuer it is bound to) of a new user ``user_id``: ``ValueError`` saying why it cannot be.

    A fingerprint is a certificate user; anything else a token user of ``issuer`` (which must be
    trusted), else of the ledger's only issuer, else (no issuer trusted yet) an unbound one. With
    several issuers trusted and none named, the id is refused: it could be any of theirs.
    """
    check_user_id(user_id)
    if issuer is not None:
        if issuer not in trusted:
            raise ValueError(f"the issuer {_shown(issuer)} is not trusted by this ledger (PUT /app/jwtIssuers first)")
        return token_key(issuer, user_id), issuer
    if is_fingerprint(user_id):
        return certificate_key(user_id), None
    if len(trusted) == 1:
        only = next(iter(trusted))
        return token_key(only, user_id), only
    if not trusted:
        return token_key(None, user_id), None
    raise ValueError(
        "this ledger trusts several token issuers: name the user's issuer with ?issuer=<its iss> "
        "(a certificate user's id is its SHA-256 fingerprint)"
    )


def bind_unbound(
    users: Mapping[bytes, bytes], info: Mapping[bytes, bytes], issuer: str
) -> tuple[dict[bytes, bytes | None], dict[bytes, bytes | None]]:
    """The writes (to the users table and to ``public:ccf.gov.users.info``) that make every unbound
    token user a user of ``issuer``: done in the transaction that changes the trusted issuers, while
    ``issuer`` is the only one. A user of ``issuer`` recorded under the same id stays as it is."""
    user_writes: dict[bytes, bytes | None] = {}
    info_writes: dict[bytes, bytes | None] = {}
    for raw, value in users.items():
        parsed = parse_token_key(raw.decode())
        if parsed is None or parsed[0] is not None:
            continue
        bound = token_key(issuer, parsed[1]).encode()
        user_writes[raw] = None
        info_writes[raw] = None
        if bound in users or bound in user_writes:
            continue
        record = json.loads(value)
        record["issuer"] = issuer
        user_writes[bound] = json.dumps(record, separators=(",", ":")).encode()
        if raw in info:
            info_writes[bound] = info[raw]
    return user_writes, info_writes


def _shown(text: str) -> str:
    return repr(text[:100] + ("…" if len(text) > 100 else ""))


def normalise_user_id(user_id: str) -> str:
    """The key of a certificate user's fingerprint or of an unbound token user (no issuer known)."""
    check_user_id(user_id)
    return certificate_key(user_id) if is_fingerprint(user_id) else token_key(None, user_id)


def acl_fingerprint(der: bytes) -> str:
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def principal_from_certificate(der: bytes) -> Principal:
    """The principal of a client certificate. Nothing is kept: a server must not hold on to what
    any client presents (only :class:`CertificateWindows` keeps anything, and only for users)."""
    digest = hashlib.sha256(der).digest()
    return Principal(key=digest.hex(), display_id=":".join(f"{b:02X}" for b in digest), kind="certificate")


class CertificateRefusedError(Exception):
    """A user's certificate cannot be used now (expired, not yet valid, unreadable): the message says why."""


class CertificateWindows:
    """The validity periods of users' certificates, by SHA-256 digest: parsed once, kept small
    (a digest and two dates each, at most ``max_entries``), and only for certificates of users."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._max = max_entries
        self._windows: dict[str, tuple[datetime.datetime, datetime.datetime]] = {}

    def __len__(self) -> int:
        return len(self._windows)

    def check(self, key: str, der: bytes, now: datetime.datetime) -> None:
        """Refuse (``CertificateRefusedError``) the certificate ``der`` (whose digest is ``key``)
        outside its validity period, as TLS peers and CCF do; no leeway."""
        window = self._windows.get(key)
        if window is None:
            try:
                cert = x509.load_der_x509_certificate(der)
                window = (cert.not_valid_before_utc, cert.not_valid_after_utc)
            except ValueError:
                raise CertificateRefusedError("The client certificate cannot be read.") from None
            if len(self._windows) >= self._max:
                self._windows.clear()
            self._windows[key] = window
        start, end = window
        if now > end:
            raise CertificateRefusedError(f"The client certificate expired on {_utc(end)}; present a valid one.")
        if now < start:
            raise CertificateRefusedError(f"The client certificate is not valid yet (from {_utc(start)}).")


def _utc(when: datetime.datetime) -> str:
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
