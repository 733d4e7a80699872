"""Governance request verification: vectors built independently, and every way a request is refused."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from notarium.governance.request import RequestRefusedError, sign_request, verify_request
from notarium.ledger.identity import cert_pem, self_signed_identity
from notarium.verify.keys import cert_fingerprint

VECTORS = json.loads((Path(__file__).parents[2] / "vectors" / "governance" / "requests.json").read_text())
NOW = 1750000000
MEMBER = VECTORS["member_id"]


def certs(mid: str) -> bytes | None:
    return VECTORS["member_cert"].encode() if mid == MEMBER else None


def vector(name: str) -> bytes:
    return bytes.fromhex(VECTORS["requests"][name]["cose_hex"])


def verify(data: bytes, msg_type: str, **kwargs: Any) -> Any:
    kwargs.setdefault("now", NOW)
    kwargs.setdefault("window_s", 300)
    return verify_request(data, certs, expected_type=msg_type, **kwargs)


def refused(data: bytes, msg_type: str, **kwargs: Any) -> RequestRefusedError:
    with pytest.raises(RequestRefusedError) as info:
        verify(data, msg_type, **kwargs)
    return info.value


@pytest.mark.parametrize("name", sorted(VECTORS["requests"]))
def test_vectors_verify(name: str) -> None:
    v = VECTORS["requests"][name]
    request = verify(vector(name), v["type"], proposal_id=v["proposal_id"])
    assert request.member_id == MEMBER
    assert request.msg_type == v["type"]
    assert request.created_at == NOW
    assert request.proposal_id == v["proposal_id"]
    assert request.payload == v["payload"].encode()
    assert request.digest == v["sig_structure_sha256"]


def test_member_id_in_the_path_must_be_the_signer() -> None:
    assert verify(vector("ballot"), "ballot", member_id=MEMBER.upper()).member_id == MEMBER
    e = refused(vector("ballot"), "ballot", member_id="0" * 64)
    assert (e.status, e.code) == (403, "MemberIdMismatch")


def test_proposal_id_must_match() -> None:
    e = refused(vector("ballot"), "ballot", proposal_id="cd" * 32)
    assert (e.status, e.code) == (403, "ProposalIdMismatch")


def test_wrong_type_for_the_endpoint() -> None:
    e = refused(vector("ballot"), "proposal")
    assert (e.status, e.code) == (400, "InvalidGovernanceRequest")


@pytest.mark.parametrize("skew", [-301, 301, -(10**6)])
def test_outside_the_window(skew: int) -> None:
    e = refused(vector("proposal"), "proposal", now=NOW + skew)
    assert (e.status, e.code) == (403, "RequestExpired")


def test_inside_the_window() -> None:
    assert verify(vector("proposal"), "proposal", now=NOW + 300).member_id == MEMBER
    assert verify(vector("proposal"), "proposal", now=NOW - 300).member_id == MEMBER


def _mutate(name: str, index: int, value: Any) -> bytes:
    tag = cbor2.loads(vector(name))
    items = list(tag.value)
    items[index] = value
    return cbor2.dumps(cbor2.CBORTag(18, items))


def test_tampered_payload_or_signature() -> None:
    e = refused(_mutate("ballot", 2, b'{"ballot": false}'), "ballot")
    assert (e.status, e.code) == (401, "InvalidSignature")
    sig = bytearray(cbor2.loads(vector("ballot")).value[3])
    sig[5] ^= 1
    e = refused(_mutate("ballot", 3, bytes(sig)), "ballot")
    assert (e.status, e.code) == (401, "InvalidSignature")
    e = refused(_mutate("ballot", 3, bytes(sig[:-1])), "ballot")
    assert (e.status, e.code) == (401, "InvalidSignature")


def test_malleated_signature_has_the_same_digest() -> None:
    """(r, n - s) verifies too: the replay digest is over what is signed, not the bytes."""
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973
    sig = cbor2.loads(vector("ballot")).value[3]
    r, s = sig[:48], int.from_bytes(sig[48:], "big")
    other = _mutate("ballot", 3, r + (n - s).to_bytes(48, "big"))
    assert other != vector("ballot")
    assert verify(other, "ballot").digest == verify(vector("ballot"), "ballot").digest


def test_protected_header_changes_break_the_signature() -> None:
    protected = cbor2.loads(cbor2.loads(vector("ballot")).value[0])
    protected["ccf.gov.msg.created_at"] = NOW + 1
    e = refused(_mutate("ballot", 0, cbor2.dumps(protected)), "ballot")
    assert (e.status, e.code) == (401, "InvalidSignature")
    protected = cbor2.loads(cbor2.loads(vector("ballot")).value[0])
    protected[1] = -7  # ES256 does not match the member's P-384 key
    e = refused(_mutate("ballot", 0, cbor2.dumps(protected)), "ballot")
    assert (e.status, e.code) == (401, "InvalidSignature")


def test_unknown_member() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = self_signed_identity(key, "stranger", now=datetime.datetime.now(datetime.UTC), days=1)
    data = sign_request(key, cert, "proposal", b"{}", created_at=NOW)
    e = refused(data, "proposal")
    assert (e.status, e.code) == (401, "UnknownMember")


def test_signed_with_another_key_than_the_kid_names() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    impostor = self_signed_identity(key, "impostor", now=datetime.datetime.now(datetime.UTC), days=1)
    data = sign_request(key, impostor, "ballot", b'{"ballot": true}', created_at=NOW)
    protected = cbor2.loads(cbor2.loads(data).value[0])
    protected[4] = MEMBER.encode()
    tag = cbor2.loads(data)
    items = list(tag.value)
    items[0] = cbor2.dumps(protected)
    e = refused(cbor2.dumps(cbor2.CBORTag(18, items)), "ballot")
    assert (e.status, e.code) == (401, "InvalidSignature")


def test_sign_request_round_trip() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = self_signed_identity(key, "m", now=datetime.datetime.now(datetime.UTC), days=1)
    data = sign_request(key, cert, "withdrawal", b"", proposal_id="p1", created_at=NOW)
    pem = cert_pem(cert)
    request = verify_request(
        data,
        lambda mid: pem if mid == cert_fingerprint(cert) else None,
        expected_type="withdrawal",
        now=NOW,
        window_s=5,
    )
    assert (request.member_id, request.proposal_id, request.payload) == (cert_fingerprint(cert), "p1", b"")


GARBAGE: list[bytes] = [
    b"",
    b"{}",
    b"\xff",
    cbor2.dumps([1, 2, 3, 4]),
    cbor2.dumps(cbor2.CBORTag(18, [b"", {}, b"", b""])),
    cbor2.dumps(cbor2.CBORTag(18, [b"\xa0", {}, None, b"x"])),  # detached payload
    cbor2.dumps(cbor2.CBORTag(18, [b"\xa0", {}, b"", b"x"])),  # no headers
    cbor2.dumps(cbor2.CBORTag(18, [b"\xa0", [], b"", b"x"])),
    cbor2.dumps(cbor2.CBORTag(18, [cbor2.dumps({1: -7, 4: b"zz"}), {}, b"", b"x"])),
    cbor2.dumps(cbor2.CBORTag(18, [cbor2.dumps({1: -7, 4: MEMBER, "ccf.gov.msg.type": "nope"}), {}, b"", b"x"])),
    cbor2.dumps(
        cbor2.CBORTag(
            18,
            [
                cbor2.dumps({1: -7, 4: MEMBER, "ccf.gov.msg.type": "ballot", "ccf.gov.msg.created_at": "now"}),
                {},
                b"",
                b"x",
            ],
        )
    ),
    vector("ballot") + b"\x00",  # trailing bytes
    b"\x9f" * 100000,  # deep nesting
]


@pytest.mark.parametrize("data", GARBAGE, ids=range(len(GARBAGE)))
def test_malformed_is_400(data: bytes) -> None:
    e = refused(data, "ballot")
    assert (e.status, e.code) == (400, "InvalidGovernanceRequest")
    assert e.message
