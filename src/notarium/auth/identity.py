"""Principals: a caller authenticated by a client certificate (or, later, a token)."""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass

_FINGERPRINT = re.compile(r"^[0-9A-Fa-f]{2}(:?[0-9A-Fa-f]{2}){31}$")
_GUID = re.compile(r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$")
MAX_USER_ID = 256


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. ``key`` is the normalised user id used for lookups."""

    key: str
    display_id: str
    kind: str  # "certificate" or "token"


def normalise_user_id(user_id: str) -> str:
    """The lookup key of a user id: certificate fingerprints lose colons and case, GUIDs lose case.

    ACL writes certificate users as upper-case colon-separated SHA-256 fingerprints and Entra
    users as object ids (GUIDs); both forms are accepted however they are spelled.
    Raises ``ValueError`` for anything else.
    """
    if not isinstance(user_id, str) or not 0 < len(user_id) <= MAX_USER_ID:
        raise ValueError("a user id is a certificate fingerprint or an object id")
    if _FINGERPRINT.match(user_id):
        return user_id.replace(":", "").lower()
    if _GUID.match(user_id):
        return user_id.lower()
    raise ValueError(
        "a user id is a SHA-256 certificate fingerprint (64 hex digits, optionally colon-separated) "
        "or an object id (GUID)"
    )


def acl_fingerprint(der: bytes) -> str:
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


@functools.lru_cache(maxsize=4096)
def principal_from_certificate(der: bytes) -> Principal:
    """The principal of a client certificate (cached: a connection presents the same bytes each time)."""
    digest = hashlib.sha256(der).hexdigest()
    return Principal(key=digest, display_id=acl_fingerprint(der), kind="certificate")
