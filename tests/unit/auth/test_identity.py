"""User ids (notarium.auth.identity): one rule for the API, governance and tokens; certificate
principals and the validity periods of users' certificates."""

from __future__ import annotations

import datetime
import json
import tracemalloc

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from notarium.auth.identity import (
    CertificateRefusedError,
    CertificateWindows,
    bind_unbound,
    check_user_id,
    find_user_key,
    new_user_key,
    principal_from_certificate,
    token_key,
)

A = "https://login.microsoftonline.com/tenant/v2.0"
B = "https://dex.example.com"
FP = ":".join(["5F"] * 32)
OID = "4f1b2c3d-0000-4000-8000-1234567890ab"


@pytest.mark.parametrize(
    "user_id", ["0" * 36, "auth0|abc", "CgVhbGljZRIFbG9jYWw", "alice", "a/b", "..", "x" * 256, "AB" * 31, "Ä"]
)
def test_any_id_acl_accepts_is_a_user_id(user_id: str) -> None:
    assert check_user_id(user_id) == user_id
    key, issuer = new_user_key(user_id, None, [])
    assert (key, issuer) == (token_key(None, user_id), None)  # no issuer trusted yet: unbound


@pytest.mark.parametrize("user_id", ["", "x" * 257, "a\nb", "a\x00", "a\x7f", "\x85", "a\udcff", 5, None])
def test_what_is_not_a_user_id(user_id: object) -> None:
    with pytest.raises(ValueError, match="user id"):
        check_user_id(user_id)


@pytest.mark.parametrize("near", [":".join(["AB"] * 31) + ":A", "AB:" * 32, "AB:CD"])
def test_hex_and_colons_that_are_not_a_fingerprint_name_a_token_user(near: str) -> None:
    """One rule (issue #16): any id ACL accepts is accepted; only a fingerprint is a certificate user."""
    assert new_user_key(near, None, [A]) == (token_key(A, near), A)
    assert new_user_key(near, None, []) == (token_key(None, near), None)
    assert find_user_key(near, None, [], [A]) is None
    assert find_user_key(near, None, [token_key(A, near)], [A]) == token_key(A, near)
    assert new_user_key(near, A, [A]) == (token_key(A, near), A)


def test_fingerprints_name_certificate_users_only_without_an_issuer() -> None:
    assert new_user_key(FP, None, [A]) == ("5f" * 32, None)
    assert new_user_key(FP.lower().replace(":", ""), None, [A, B]) == ("5f" * 32, None)
    assert new_user_key(FP, A, [A])[0] == token_key(A, FP) != "5f" * 32


def test_new_token_users_belong_to_the_named_or_only_issuer() -> None:
    assert new_user_key("alice", None, [A]) == (token_key(A, "alice"), A)
    assert new_user_key("alice", B, [A, B]) == (token_key(B, "alice"), B)
    with pytest.raises(ValueError, match="several token issuers"):
        new_user_key("alice", None, [A, B])
    with pytest.raises(ValueError, match="not trusted"):
        new_user_key("alice", B, [A])


def test_guids_compare_without_case_other_ids_exactly() -> None:
    assert token_key(A, OID.upper()) == token_key(A, OID)
    assert token_key(A, "Alice") != token_key(A, "alice")
    assert token_key(A, "alice") != token_key(B, "alice") != token_key(None, "alice")


def test_finding_users_by_plain_id() -> None:
    keys = {"5f" * 32, token_key(A, "alice"), token_key(B, "alice"), token_key(A, "bob"), OID}  # OID: a legacy row
    assert find_user_key(FP, None, keys, [A, B]) == "5f" * 32
    assert find_user_key("bob", None, keys, [A, B]) == token_key(A, "bob")
    assert find_user_key(OID.upper(), None, keys, [A, B]) == OID
    assert find_user_key("alice", B, keys, [A, B]) == token_key(B, "alice")
    assert find_user_key("carol", None, keys, [A, B]) is None
    with pytest.raises(ValueError, match="several token users"):
        find_user_key("alice", None, keys, [A, B])
    # an unbound user is the only issuer's, also when that issuer is named
    assert find_user_key(OID, A, keys, [A]) == OID
    assert find_user_key(OID, A, keys, [A, B]) is None


def _row(user_id: str, *roles: str) -> bytes:
    return json.dumps({"assignedRoles": list(roles), "userId": user_id}).encode()


def test_binding_unbound_users_to_the_only_issuer() -> None:
    users = {
        ("5f" * 32).encode(): _row(FP, "Administrator"),
        token_key(None, "alice").encode(): _row("alice", "Reader"),
        OID.encode(): _row(OID.upper(), "Contributor"),  # recorded before issuers scoped ids
        token_key(None, "bob").encode(): _row("bob", "Reader"),
        token_key(A, "bob").encode(): _row("bob", "Administrator"),  # bound already: it stays
    }
    info = {token_key(None, "alice").encode(): b'{"user_data":{"data":1}}'}
    user_writes, info_writes = bind_unbound(users, info, A)
    assert user_writes == {
        token_key(None, "alice").encode(): None,
        token_key(A, "alice").encode(): json.dumps(
            {"assignedRoles": ["Reader"], "userId": "alice", "issuer": A}, separators=(",", ":")
        ).encode(),
        OID.encode(): None,
        token_key(A, OID).encode(): json.dumps(
            {"assignedRoles": ["Contributor"], "userId": OID.upper(), "issuer": A}, separators=(",", ":")
        ).encode(),
        token_key(None, "bob").encode(): None,
    }
    assert info_writes == {
        token_key(None, "alice").encode(): None,
        token_key(A, "alice").encode(): b'{"user_data":{"data":1}}',
        OID.encode(): None,
        token_key(None, "bob").encode(): None,
    }


# --- certificates ---------------------------------------------------------------------------------

KEY = ec.generate_private_key(ec.SECP256R1())
NOW = datetime.datetime(2030, 6, 1, tzinfo=datetime.UTC)


def _cert(start: datetime.datetime, end: datetime.datetime, padding: int = 0) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "user")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(KEY.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )
    if padding:
        oid = x509.ObjectIdentifier("1.3.6.1.4.1.55555.1")
        builder = builder.add_extension(x509.UnrecognizedExtension(oid, b"\x04" + b"p" * padding), critical=False)
    return builder.sign(KEY, hashes.SHA256()).public_bytes(Encoding.DER)


def test_certificates_outside_their_validity_are_refused() -> None:
    windows = CertificateWindows()
    day = datetime.timedelta(days=1)
    valid, expired, future = (
        _cert(NOW - day, NOW + day),
        _cert(NOW - 2 * day, NOW - day),
        _cert(NOW + day, NOW + 2 * day),
    )
    for der in (valid, expired, future):
        assert principal_from_certificate(der).kind == "certificate"
    windows.check(principal_from_certificate(valid).key, valid, NOW)
    with pytest.raises(CertificateRefusedError, match="expired on 2030-05-31T00:00:00Z"):
        windows.check(principal_from_certificate(expired).key, expired, NOW)
    with pytest.raises(CertificateRefusedError, match="not valid yet"):
        windows.check(principal_from_certificate(future).key, future, NOW)
    with pytest.raises(CertificateRefusedError, match="cannot be read"):
        windows.check("00" * 32, b"not a certificate", NOW)


def test_certificate_windows_stay_small() -> None:
    windows = CertificateWindows(max_entries=8)
    for _ in range(20):
        der = _cert(NOW, NOW + datetime.timedelta(days=1))
        windows.check(principal_from_certificate(der).key, der, NOW)
        assert len(windows) <= 8


def test_principals_of_certificates_keep_nothing() -> None:
    """Presenting many large certificates that belong to nobody holds no memory (issue 15, point 7:
    each connection hands over its own bytes; 200 of 60 KB were 12 MB kept)."""
    der = _cert(NOW, NOW + datetime.timedelta(days=1), padding=60_000)
    principal_from_certificate(der)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(200):
            principal_from_certificate(der + i.to_bytes(2, "big"))  # distinct bytes, as from distinct clients
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 1 << 20, kept
