"""COSE_Sign1-signed governance requests (ccf-ledger-format.md §9.3): parse, verify, sign.

A request is a tagged COSE_Sign1 with an embedded payload and the protected headers ``alg``,
``kid`` (the member id: SHA-256 fingerprint of the member's certificate, hex), ``ccf.gov.msg.type``,
``ccf.gov.msg.created_at`` (integer seconds since the epoch) and, for ballots and withdrawals,
``ccf.gov.msg.proposal_id``. Bytes come from anyone: every failure to parse or verify is a
:class:`RequestRefusedError` with a 4xx status and a code saying why.

A request's *digest* is SHA-256 of what its signature covers (the COSE ``Sig_structure``), not of
its bytes: an ECDSA signature can be re-encoded into another valid one (``s`` → ``n - s``), so the
bytes of a replayed request may differ while its digest cannot.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from notarium.errors import VerificationError
from notarium.ledger.signing import sign_detached
from notarium.verify import cose
from notarium.verify.keys import cert_fingerprint, ec_public_key, load_pem_cert

MSG_TYPE = "ccf.gov.msg.type"
MSG_PROPOSAL_ID = "ccf.gov.msg.proposal_id"
MSG_CREATED_AT = "ccf.gov.msg.created_at"
TYPES = frozenset({"proposal", "ballot", "withdrawal", "ack", "state_digest"})
MAX_REQUEST_BYTES = 1 << 20
MAX_PROPOSAL_ID = 128


class RequestRefusedError(Exception):
    """A governance request refused: ``status`` (4xx) and ``code`` for the caller, ``message`` says why."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def malformed(message: str) -> RequestRefusedError:
    return RequestRefusedError(400, "InvalidGovernanceRequest", message)


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """A request whose signature verified against a member's certificate."""

    member_id: str
    msg_type: str
    created_at: int
    proposal_id: str | None
    payload: bytes
    digest: str  # hex SHA-256 of the Sig_structure (see the module docstring)
    raw: bytes  # the COSE_Sign1 as received, recorded in the ledger


@dataclass(frozen=True, slots=True)
class _Parsed:
    sign1: cose.Sign1
    payload: bytes
    kid: str
    msg_type: str
    created_at: int
    proposal_id: str | None


def _parse(data: bytes) -> _Parsed:
    if not isinstance(data, bytes) or not data:
        raise malformed("The body must be a COSE_Sign1 (application/cose).")
    if len(data) > MAX_REQUEST_BYTES:
        raise malformed("The governance request is too large.")
    try:
        sign1 = cose.Sign1.decode_attached(data)
    except VerificationError as exc:
        raise malformed(f"The body is not a COSE_Sign1 with its payload: {exc}.") from None
    protected, payload = sign1.protected, sign1.payload
    if payload is None:  # decode_attached guarantees it; this keeps the type checker informed
        raise malformed("A governance request carries its payload.")
    kid = protected.get(cose.HDR_KID)
    if isinstance(kid, bytes):
        try:
            kid = kid.decode("ascii")
        except UnicodeDecodeError:
            raise malformed("The kid header must be the member id (hex).") from None
    if not isinstance(kid, str) or len(kid) != 64 or any(c not in "0123456789abcdefABCDEF" for c in kid):
        raise malformed("The kid header must be the member id (64 hex digits).")
    msg_type = protected.get(MSG_TYPE)
    if not isinstance(msg_type, str) or msg_type not in TYPES:
        raise malformed(f"The {MSG_TYPE} header must be one of {', '.join(sorted(TYPES))}.")
    created_at = protected.get(MSG_CREATED_AT)
    if type(created_at) is not int or not 0 <= created_at < 1 << 40:
        raise malformed(f"The {MSG_CREATED_AT} header must be an integer number of seconds.")
    proposal_id = protected.get(MSG_PROPOSAL_ID)
    if proposal_id is not None and (not isinstance(proposal_id, str) or not 0 < len(proposal_id) <= MAX_PROPOSAL_ID):
        raise malformed(f"The {MSG_PROPOSAL_ID} header must be a proposal id.")
    if not isinstance(protected.get(cose.HDR_ALG), int):
        raise malformed("The alg header must be a COSE algorithm number.")
    return _Parsed(sign1, payload, kid.lower(), msg_type, created_at, proposal_id)


def verify_request(
    data: bytes,
    member_cert: Callable[[str], bytes | None],
    *,
    expected_type: str,
    now: float | None = None,
    window_s: int,
    proposal_id: str | None = None,
    member_id: str | None = None,
) -> SignedRequest:
    """Verify ``data`` as a request of ``expected_type`` by a member.

    ``member_cert(id)`` is the PEM certificate of member ``id`` (None: not a member). The request
    must be signed by that certificate's key with a matching ``alg``, created within ``window_s``
    seconds of ``now``, carry ``proposal_id`` when one is given, and come from ``member_id`` when
    one is given (the path's member). Replays are the caller's check (:attr:`SignedRequest.digest`).
    """
    parsed = _parse(data)
    pem = member_cert(parsed.kid)
    if pem is None:
        raise RequestRefusedError(401, "UnknownMember", "The request is not signed by a member of this ledger.")
    try:
        key = ec_public_key(load_pem_cert(pem, "member certificate"), "member certificate")
        parsed.sign1.verify_detached(key, parsed.payload)
    except VerificationError as exc:
        raise RequestRefusedError(401, "InvalidSignature", f"The request's signature is refused: {exc}.") from None
    if parsed.msg_type != expected_type:
        raise malformed(f"This endpoint takes a {expected_type!r} request, not {parsed.msg_type!r}.")
    if member_id is not None and member_id.lower() != parsed.kid:
        raise RequestRefusedError(403, "MemberIdMismatch", "The request is signed by another member than named.")
    if proposal_id is not None and parsed.proposal_id != proposal_id:
        message = "The request is signed for another proposal than the path names."
        raise RequestRefusedError(403, "ProposalIdMismatch", message)
    current = time.time() if now is None else now
    if abs(current - parsed.created_at) > window_s:
        raise RequestRefusedError(
            403, "RequestExpired", f"The request was not created within {window_s} s of the service's clock."
        )
    digest = hashlib.sha256(cose.sig_structure(parsed.sign1.protected_bytes, parsed.payload)).hexdigest()
    return SignedRequest(
        parsed.kid, parsed.msg_type, parsed.created_at, parsed.proposal_id, parsed.payload, digest, data
    )


def signer_id(data: bytes) -> str:
    """The member id a request names (``kid``), unverified: the one certificate to check it with
    (:func:`verify_request`), looked up before anything else is read. Malformed: 400."""
    return _parse(data).kid


def request_header(data: bytes) -> tuple[str, str, int]:
    """(member id, type, created_at) of a request, unverified: for display only."""
    p = _parse(data)
    return p.kid, p.msg_type, p.created_at


def sign_request(
    key: ec.EllipticCurvePrivateKey,
    cert: x509.Certificate,
    msg_type: str,
    payload: bytes,
    *,
    proposal_id: str | None = None,
    created_at: int | None = None,
) -> bytes:
    """A governance request signed by a member (``cert`` is the member's certificate, ``key`` its key)."""
    if msg_type not in TYPES:
        raise ValueError(f"unknown governance message type {msg_type!r}")
    headers: dict[Any, Any] = {
        cose.HDR_ALG: cose.alg_for_key(key.public_key()),
        cose.HDR_KID: cert_fingerprint(cert).encode(),
        MSG_TYPE: msg_type,
        MSG_CREATED_AT: int(time.time()) if created_at is None else created_at,
    }
    if proposal_id is not None:
        headers[MSG_PROPOSAL_ID] = proposal_id
    protected = cbor2.dumps(headers)
    signature = sign_detached(key, protected, payload)
    return cbor2.dumps(cbor2.CBORTag(cose.COSE_SIGN1_TAG, [protected, {}, payload, signature]))


def recent_after(entries: Mapping[str, int], oldest: int) -> dict[str, int]:
    """The remembered request digests (digest -> created_at) still inside the window."""
    return {d: t for d, t in entries.items() if t >= oldest}
