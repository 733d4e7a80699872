"""Ledger names and first users, as ARM requests carry them.

A ledger name follows ACL's rule (the ``NamePattern`` of ``Microsoft.ConfidentialLedger/ledgers`` in
Azure's resource-manager specification): 3 to 35 characters, letters, digits and hyphens, starting
with a letter and ending with a letter or a digit. In ACL the name is a DNS label
(``{name}.confidential-ledger.azure.com``), so it is unique regardless of case; here too
(:func:`name_key`).

The first users come from the ARM properties ``certBasedSecurityPrincipals`` (a PEM certificate,
with or without line breaks, and a ``ledgerRoleName``) and ``aadBasedSecurityPrincipals`` (an
object id, a tenant id and a ``ledgerRoleName``).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from notarium.auth.identity import acl_fingerprint

NAME_RULE = "3 to 35 letters, digits or hyphens, starting with a letter and ending with a letter or digit"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,33}[A-Za-z0-9]$")
_GUID = re.compile(r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$")
_PEM_BODY = re.compile(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.DOTALL)
LEDGER_ROLES = ("Administrator", "Contributor", "Reader")
MAX_PRINCIPALS = 100


class InvalidRequestError(ValueError):
    """A management request is malformed; ``code`` is the ARM error code to answer with."""

    def __init__(self, message: str, code: str = "InvalidRequestContent") -> None:
        super().__init__(message)
        self.code = code


def valid_name(name: str) -> bool:
    return bool(_NAME.match(name))


def check_name(name: str) -> str:
    if not valid_name(name):
        raise InvalidRequestError(
            f"The ledger name {name[:64]!r} is invalid: use {NAME_RULE}.", code="InvalidResourceName"
        )
    return name


def name_key(name: str) -> str:
    """The key a name is unique under (names are DNS labels: case does not matter)."""
    return name.lower()


@dataclass(frozen=True, slots=True)
class CertPrincipal:
    cert_pem: str  # normalised PEM
    role: str

    @property
    def user_id(self) -> str:
        """ACL's id of a certificate user: the SHA-256 fingerprint, upper-case, colon-separated."""
        return acl_fingerprint(load_cert(self.cert_pem).public_bytes(Encoding.DER))

    def to_arm(self) -> dict[str, str]:
        return {"cert": self.cert_pem, "ledgerRoleName": self.role}


@dataclass(frozen=True, slots=True)
class AadPrincipal:
    principal_id: str
    tenant_id: str | None
    role: str

    def to_arm(self) -> dict[str, str]:
        body = {"principalId": self.principal_id, "ledgerRoleName": self.role}
        if self.tenant_id is not None:
            body["tenantId"] = self.tenant_id
        return body


def load_cert(text: str) -> x509.Certificate:
    """A certificate from a PEM, tolerating the single-line PEMs ARM examples and the portal use."""
    match = _PEM_BODY.search(text)
    body = match.group(1) if match else text
    try:
        der = base64.b64decode("".join(body.split()), validate=True)
        return x509.load_der_x509_certificate(der)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequestError(f"A certificate is not a valid PEM or base64 DER certificate: {exc}.") from None


def _role(item: dict[str, Any], where: str) -> str:
    role = item.get("ledgerRoleName")
    if not isinstance(role, str):
        raise InvalidRequestError(f"{where}.ledgerRoleName is required: one of {', '.join(LEDGER_ROLES)}.")
    for known in LEDGER_ROLES:
        if role.lower() == known.lower():
            return known
    raise InvalidRequestError(f"{where}.ledgerRoleName {role[:40]!r} is not one of {', '.join(LEDGER_ROLES)}.")


def cert_principals(value: object) -> list[CertPrincipal]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_PRINCIPALS:
        raise InvalidRequestError(f"certBasedSecurityPrincipals must be an array of at most {MAX_PRINCIPALS}.")
    found: dict[str, CertPrincipal] = {}
    for i, item in enumerate(value):
        where = f"certBasedSecurityPrincipals[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("cert"), str):
            raise InvalidRequestError(f"{where}.cert is required: a PEM certificate.")
        cert = load_cert(item["cert"])
        pem = cert.public_bytes(Encoding.PEM).decode()
        principal = CertPrincipal(pem, _role(item, where))
        found[principal.user_id] = principal  # the same certificate twice: the last role wins
    return list(found.values())


def aad_principals(value: object) -> list[AadPrincipal]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_PRINCIPALS:
        raise InvalidRequestError(f"aadBasedSecurityPrincipals must be an array of at most {MAX_PRINCIPALS}.")
    found: dict[str, AadPrincipal] = {}
    for i, item in enumerate(value):
        where = f"aadBasedSecurityPrincipals[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("principalId"), str):
            raise InvalidRequestError(f"{where}.principalId is required: an object id (GUID).")
        principal_id, tenant = item["principalId"], item.get("tenantId")
        if not _GUID.match(principal_id):
            raise InvalidRequestError(f"{where}.principalId must be a GUID.")
        if tenant is not None and (not isinstance(tenant, str) or not _GUID.match(tenant)):
            raise InvalidRequestError(f"{where}.tenantId must be a GUID.")
        found[principal_id.lower()] = AadPrincipal(principal_id, tenant, _role(item, where))
    return list(found.values())
