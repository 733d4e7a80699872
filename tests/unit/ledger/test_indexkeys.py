"""The index's keyed tokens and sealed collection ids (notarium.ledger.indexkeys): fixed vectors,
checked against an independent reading of the definitions (RFC 5869 HKDF and RFC 2104 HMAC
written out with hmac.digest, AES-256-GCM from the cryptography package)."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from notarium.ledger.indexkeys import IndexKeys

SECRET = bytes(range(32))
# pinned: a change to any derivation must be deliberate (and comes with a new index format)
LOOKUP_KEY = "308c5195b3ce42a03052dd25f1a7060257d4f6cb68fe92b27e13e1df0486a527"
NAME_KEY = "728ca861dab0c6537cdb7d573faf3f0d7655ca08e6626f2072f908466f47ae0f"
COLLECTION_GREETINGS = "df29dcba97b894ee62c1d411344249842ea8c7d8018c9077c95e91fefc445813"
TAG_OF_URGENT_IN_GREETINGS = "a048da4f282180c4e3033844d9968175cc982fb3705c7329668db453a9b54b83"
SEALED_GREETINGS_SHA256 = "0b940da26017fb9d22a46efa16d32b5dfd774a1a730ec937d30d8d9cd27eb9f2"


def _hkdf_sha256(ikm: bytes, info: bytes) -> bytes:
    """RFC 5869 with no salt (a string of HashLen zeros), 32 bytes out: one block."""
    prk = hmac.digest(bytes(32), ikm, "sha256")
    return hmac.digest(prk, info + b"\x01", "sha256")


def test_derived_keys_follow_rfc5869() -> None:
    assert _hkdf_sha256(SECRET, b"notarium/index-lookup-key/1").hex() == LOOKUP_KEY
    assert _hkdf_sha256(SECRET, b"notarium/index-name-key/1").hex() == NAME_KEY


def test_token_vectors() -> None:
    keys = IndexKeys(SECRET)
    lookup = bytes.fromhex(LOOKUP_KEY)
    assert keys.collection("greetings").hex() == COLLECTION_GREETINGS
    assert hmac.digest(lookup, b"collection\x00greetings", "sha256").hex() == COLLECTION_GREETINGS
    assert keys.tag("greetings", "urgent").hex() == TAG_OF_URGENT_IN_GREETINGS
    message = b"tag\x00" + (9).to_bytes(4, "big") + b"greetings" + b"urgent"
    assert hmac.digest(lookup, message, "sha256").hex() == TAG_OF_URGENT_IN_GREETINGS


def test_sealed_collection_id_vector() -> None:
    keys = IndexKeys(SECRET)
    token = bytes.fromhex(COLLECTION_GREETINGS)
    sealed = keys.seal("greetings")
    padded = b"greetings\x80" + bytes(256 - 10)
    assert sealed == AESGCM(bytes.fromhex(NAME_KEY)).encrypt(token[:12], padded, token)
    assert hashlib.sha256(sealed).hexdigest() == SEALED_GREETINGS_SHA256
    assert len(sealed) == 256 + 16
    assert b"greetings" not in sealed
    assert keys.open(token, sealed) == "greetings"


def test_tokens_separate_kinds_collections_and_secrets() -> None:
    keys = IndexKeys(SECRET)
    other = IndexKeys(bytes(32))
    # a tag is bound to its collection, and never equals a collection token
    assert keys.tag("a", "t") != keys.tag("b", "t")
    assert keys.tag("ab", "c") != keys.tag("a", "bc")  # the length prefix keeps the parts apart
    assert keys.tag("a", "t") != keys.collection("a")
    assert keys.collection("a") != keys.collection("b")
    # another ledger secret (after a rekey): unrelated tokens
    assert keys.collection("a") != other.collection("a")
    assert keys.tag("a", "t") != other.tag("a", "t")


@pytest.mark.parametrize("collection_id", ["", "x", "x" * 254, "x" * 255, "x" * 256, "日本語/α", "ends in nul\x00"])
def test_seal_round_trip_and_padding(collection_id: str) -> None:
    keys = IndexKeys(SECRET)
    sealed = keys.seal(collection_id)
    size = len(collection_id.encode()) + 1  # the 0x80 marker
    assert len(sealed) == -(-size // 256) * 256 + 16  # the length is revealed to 256 bytes only
    assert keys.open(keys.collection(collection_id), sealed) == collection_id
    assert keys.seal(collection_id) == sealed  # deterministic: one id, one sealed form


def test_open_refuses_what_these_keys_did_not_seal() -> None:
    keys = IndexKeys(SECRET)
    token, sealed = keys.collection("a"), keys.seal("a")
    with pytest.raises(ValueError, match="does not open"):
        IndexKeys(bytes(32)).open(token, sealed)  # another secret's keys
    with pytest.raises(ValueError, match="does not open"):
        keys.open(keys.collection("b"), sealed)  # moved under another token
    changed = bytearray(sealed)
    changed[3] ^= 1
    with pytest.raises(ValueError, match="does not open"):
        keys.open(token, bytes(changed))


def test_lone_surrogates_make_tokens_without_failing() -> None:
    """A lookup by an id no entry can have (not valid Unicode) finds nothing rather than failing."""
    keys = IndexKeys(SECRET)
    assert len(keys.collection("bad\udc80")) == 32
    assert len(keys.tag("c", "\ud800")) == 32
    assert repr(keys) == "IndexKeys(…)"
