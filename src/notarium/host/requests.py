"""The body of an ARM create (PUT) or update (PATCH) of a ``ConfidentialLedger``, parsed and
checked (:func:`parse_ledger`), and how an update's principals merge with the ledger's."""

from __future__ import annotations

from dataclasses import dataclass

from notarium.host.names import (
    AadPrincipal,
    CertPrincipal,
    InvalidRequestError,
    aad_principals,
    cert_principals,
)
from notarium.ledger.layout import LEDGER_TYPES


@dataclass(frozen=True, slots=True)
class LedgerRequest:
    """A parsed create or update request."""

    location: str
    ledger_type: str
    tags: dict[str, str]
    tags_given: bool
    certs: list[CertPrincipal]
    aad: list[AadPrincipal]


MAX_TAGS = 50


def parse_ledger(body: dict[str, object], default_location: str) -> LedgerRequest:
    """The ARM ``ConfidentialLedger`` body of a create (PUT) or update (PATCH)."""
    location = body.get("location", default_location)
    if not isinstance(location, str) or not 0 < len(location) <= 64:
        raise InvalidRequestError("location must be a non-empty string of at most 64 characters.")
    tags = body.get("tags")
    if tags is not None and (
        not isinstance(tags, dict)
        or len(tags) > MAX_TAGS
        or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= 512 and len(v) <= 256 for k, v in tags.items()
        )
    ):
        raise InvalidRequestError(f"tags must be an object of at most {MAX_TAGS} string values.")
    props = body.get("properties", {})
    if not isinstance(props, dict):
        raise InvalidRequestError("properties must be an object.")
    ledger_type = props.get("ledgerType", "Private")
    if not isinstance(ledger_type, str) or ledger_type.capitalize() not in LEDGER_TYPES:
        raise InvalidRequestError("properties.ledgerType must be Public or Private.")
    return LedgerRequest(
        location,
        ledger_type.capitalize(),
        dict(tags) if tags is not None else {},
        tags is not None,
        cert_principals(props.get("certBasedSecurityPrincipals")),
        aad_principals(props.get("aadBasedSecurityPrincipals")),
    )


def merge_principals(old: list[dict[str, str]], new: list[dict[str, str]], key: str) -> list[dict[str, str]]:
    merged = {p[key]: p for p in old}
    merged.update({p[key]: p for p in new})
    return list(merged.values())
