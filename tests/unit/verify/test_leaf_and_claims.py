"""Leaves, claims digests (acl-rest-api.md §8.3, §8.4) and commit evidence (ccf-ledger-format.md §3.4)."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import re
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notarium.types import MAX_SEQNO, MAX_VIEW, TxId
from notarium.verify.leaf import (
    ZERO_CLAIMS,
    commit_evidence_digest,
    compute_claims_digest,
    leaf_hash,
    ledger_entry_claim_inner,
    ledger_entry_claims_digest,
)
from notarium.verify.secrets import commit_evidence, commit_evidence_from_commit_secret, commit_secret

CLAIMS = json.loads((Path(__file__).resolve().parent / "vectors" / "acl-sdk" / "claims.json").read_text("utf-8"))
LEDGER_ENTRY_CLAIMS: list[dict[str, Any]] = CLAIMS["ledger_entry"]["claims"]
CLAIM_DIGEST_CLAIMS: list[dict[str, Any]] = CLAIMS["claim_digest"]["claims"]

# acl-rest-api.md §8.4
INNER = "feb516ef1f903c64f1e388d9ee9fde11f64d1e2bc170248828c9eab9894f9ab9"
CLAIMS_DIGEST = "d08d8764437d09b2d4d07d52293cddaf40f44a3ea2176a0528819a80002df9f6"
CLAIM_KEY_B64 = "Jde/VvaIfyrjQ/B19P+UJCBwmcrgN7sERStoyHnYO0M="


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def independent_claims_digest(claims: list[dict[str, Any]]) -> bytes:
    """acl-rest-api.md §8.3, written out again from the text."""
    parts = []
    for claim in claims:
        if claim["kind"] == "LedgerEntry":
            e = claim["ledgerEntry"]
            k = base64.b64decode(e["secretKey"])
            inner = sha256(
                hmac.new(k, e["collectionId"].encode(), hashlib.sha256).digest()
                + hmac.new(k, e["contents"].encode(), hashlib.sha256).digest()
            )
            parts.append(sha256(b"LedgerEntryV1" + inner))
        else:
            d = claim["digest"]
            parts.append(sha256(d["protocol"].encode() + bytes.fromhex(d["value"])))
    return sha256(len(claims).to_bytes(4, "little") + b"".join(parts))


# --- the SDK claims vectors ---


def test_ledger_entry_claim_inner_vector() -> None:
    assert ledger_entry_claim_inner("subledger:0", "Hello world", base64.b64decode(CLAIM_KEY_B64)).hex() == INNER


def test_ledger_entry_claims_digest_vector() -> None:
    digest = ledger_entry_claims_digest("subledger:0", "Hello world", base64.b64decode(CLAIM_KEY_B64))
    assert digest.hex() == CLAIMS_DIGEST


def test_compute_claims_digest_ledger_entry_form() -> None:
    assert compute_claims_digest(LEDGER_ENTRY_CLAIMS).hex() == CLAIMS_DIGEST


def test_compute_claims_digest_claim_digest_form_is_the_same() -> None:
    assert CLAIM_DIGEST_CLAIMS[0]["digest"]["value"] == INNER
    assert compute_claims_digest(CLAIM_DIGEST_CLAIMS).hex() == CLAIMS_DIGEST


def test_fixture_matches_the_documented_claim() -> None:
    entry = LEDGER_ENTRY_CLAIMS[0]["ledgerEntry"]
    assert entry == {
        "collectionId": "subledger:0",
        "contents": "Hello world",
        "protocol": "LedgerEntryV1",
        "secretKey": CLAIM_KEY_B64,
    }


def test_independent_digest_agrees_on_the_vectors() -> None:
    assert independent_claims_digest(LEDGER_ENTRY_CLAIMS).hex() == CLAIMS_DIGEST
    assert independent_claims_digest(CLAIM_DIGEST_CLAIMS).hex() == CLAIMS_DIGEST


def test_several_claims_count_and_order() -> None:
    both = [*LEDGER_ENTRY_CLAIMS, *CLAIM_DIGEST_CLAIMS]
    d = sha256(b"LedgerEntryV1" + bytes.fromhex(INNER))
    assert compute_claims_digest(both) == sha256(struct.pack("<I", 2) + d + d)
    other = {"kind": "ClaimDigest", "digest": {"protocol": "Other", "value": "00ff"}}
    assert compute_claims_digest([*both, other]) != compute_claims_digest([other, *both])
    assert compute_claims_digest([*both, other]) == independent_claims_digest([*both, other])


def test_claim_digest_protocol_is_not_validated() -> None:
    """Like the SDK: a ClaimDigest's protocol is only hashed, never checked."""
    claims = [{"kind": "ClaimDigest", "digest": {"protocol": "AnythingV9", "value": INNER}}]
    assert compute_claims_digest(claims) == independent_claims_digest(claims)
    assert compute_claims_digest(claims).hex() != CLAIMS_DIGEST


def test_extra_keys_at_claim_level_are_ignored_like_the_sdk() -> None:
    claims = [{**CLAIM_DIGEST_CLAIMS[0], "note": "ignored"}]
    assert compute_claims_digest(claims).hex() == CLAIMS_DIGEST


@given(
    st.lists(
        st.one_of(
            st.builds(
                lambda cid, contents, key: {
                    "kind": "LedgerEntry",
                    "ledgerEntry": {
                        "collectionId": cid,
                        "contents": contents,
                        "protocol": "LedgerEntryV1",
                        "secretKey": base64.b64encode(key).decode(),
                    },
                },
                st.text(max_size=20),
                st.text(max_size=50),
                st.binary(max_size=40),
            ),
            st.builds(
                lambda proto, value: {"kind": "ClaimDigest", "digest": {"protocol": proto, "value": value.hex()}},
                st.text(max_size=20),
                st.binary(max_size=40),
            ),
        ),
        min_size=1,
        max_size=5,
    )
)
@settings(max_examples=60, deadline=None)
def test_claims_digest_matches_independent_computation(claims: list[dict[str, Any]]) -> None:
    assert compute_claims_digest(claims) == independent_claims_digest(claims)


@given(st.text(max_size=30), st.text(max_size=60), st.binary(min_size=1, max_size=64))
@settings(max_examples=40, deadline=None)
def test_ledger_entry_digest_equals_compute_and_claim_digest_form(cid: str, contents: str, key: bytes) -> None:
    le = [
        {
            "kind": "LedgerEntry",
            "ledgerEntry": {
                "collectionId": cid,
                "contents": contents,
                "protocol": "LedgerEntryV1",
                "secretKey": base64.b64encode(key).decode(),
            },
        }
    ]
    inner = ledger_entry_claim_inner(cid, contents, key)
    cd = [{"kind": "ClaimDigest", "digest": {"protocol": "LedgerEntryV1", "value": inner.hex()}}]
    expected = ledger_entry_claims_digest(cid, contents, key)
    assert compute_claims_digest(le) == expected
    assert compute_claims_digest(cd) == expected


# --- malformed claims: always ValueError ---


def _le(**changes: Any) -> list[dict[str, Any]]:
    claims = copy.deepcopy(LEDGER_ENTRY_CLAIMS)
    claims[0]["ledgerEntry"].update(changes)
    return claims


def _cd(**changes: Any) -> list[dict[str, Any]]:
    claims = copy.deepcopy(CLAIM_DIGEST_CLAIMS)
    claims[0]["digest"].update(changes)
    return claims


def _without(claims: list[dict[str, Any]], inner: str, key: str) -> list[dict[str, Any]]:
    claims = copy.deepcopy(claims)
    del claims[0][inner][key]
    return claims


MALFORMED: dict[str, Any] = {
    "empty list": [],
    "None": None,
    "a dict, not a list": LEDGER_ENTRY_CLAIMS[0],
    "a string": "LedgerEntry",
    "claim not an object": ["LedgerEntry"],
    "claim None": [None],
    "no kind": [{"ledgerEntry": LEDGER_ENTRY_CLAIMS[0]["ledgerEntry"]}],
    "unknown kind": [{"kind": "Ledgerentry", "ledgerEntry": LEDGER_ENTRY_CLAIMS[0]["ledgerEntry"]}],
    "kind not a string": [{"kind": 1, "ledgerEntry": LEDGER_ENTRY_CLAIMS[0]["ledgerEntry"]}],
    "LedgerEntry without ledgerEntry": [{"kind": "LedgerEntry"}],
    "LedgerEntry with a digest": [{"kind": "LedgerEntry", "digest": CLAIM_DIGEST_CLAIMS[0]["digest"]}],
    "ledgerEntry not an object": [{"kind": "LedgerEntry", "ledgerEntry": "x"}],
    "ledgerEntry extra key": _le(extra="x"),
    "ledgerEntry missing secretKey": _without(LEDGER_ENTRY_CLAIMS, "ledgerEntry", "secretKey"),
    "ledgerEntry missing collectionId": _without(LEDGER_ENTRY_CLAIMS, "ledgerEntry", "collectionId"),
    "ledgerEntry contents not a string": _le(contents=42),
    "ledgerEntry secretKey not a string": _le(secretKey=None),
    "unknown protocol": _le(protocol="LedgerEntryV2"),
    "protocol wrong case": _le(protocol="ledgerentryv1"),
    "bad base64 characters": _le(secretKey="Jde/VvaIfyrjQ/B19P+UJCBwmcrgN7sERStoyHnYO0M!"),
    "bad base64 padding": _le(secretKey="Jde/VvaIfyrjQ/B19P+UJCBwmcrgN7sERStoyHnYO0M"),
    "base64 with whitespace": _le(secretKey="Jde/VvaIfyrjQ/B19P+UJCBw mcrgN7sERStoyHnYO0M="),
    "non-ASCII base64": _le(secretKey="Jde/VvaIfyrjQ/B19P+UJCBwmcrgN7sERStoyHnYO0\u00e9="),
    "ClaimDigest without digest": [{"kind": "ClaimDigest"}],
    "ClaimDigest with a ledgerEntry": [{"kind": "ClaimDigest", "ledgerEntry": LEDGER_ENTRY_CLAIMS[0]["ledgerEntry"]}],
    "digest not an object": [{"kind": "ClaimDigest", "digest": [INNER]}],
    "digest extra key": _cd(extra="x"),
    "digest missing value": _without(CLAIM_DIGEST_CLAIMS, "digest", "value"),
    "digest missing protocol": _without(CLAIM_DIGEST_CLAIMS, "digest", "protocol"),
    "digest value not a string": _cd(value=b"\xfe\xb5"),
    "digest protocol not a string": _cd(protocol=1),
    "non-hex digest value": _cd(value="zz" + INNER[2:]),
    "odd-length digest value": _cd(value=INNER[:-1]),
    "one good claim and one bad": [*CLAIM_DIGEST_CLAIMS, {"kind": "Unknown"}],
}


@pytest.mark.parametrize("claims", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_claims_raise_value_error(claims: Any) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - ValueError is the documented contract
        compute_claims_digest(claims)


# --- leaves ---


def test_leaf_hash_is_the_documented_concatenation() -> None:
    wsd, ced, claims = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32
    assert leaf_hash(wsd, ced, claims) == sha256(wsd + ced + claims)


def test_commit_evidence_digest_hashes_the_utf8_string() -> None:
    ce = "ce:2.35:fa08b4eae4a034971b97f0b21810951ec64b06fb2f4b5a1e80f6f4b83a23c719"
    assert commit_evidence_digest(ce) == sha256(ce.encode("utf-8"))
    # the string, not its hex decoding
    assert commit_evidence_digest(ce) != sha256(bytes.fromhex(ce.rsplit(":", 1)[1]))


@pytest.mark.parametrize(
    ("wsd", "ce", "claims", "leaf"),
    [
        pytest.param(
            "fef1aa22972daba05864a7e986c1bb94aa6b8fea43781cb48907c972e9761e71",
            "ce:2.35:fa08b4eae4a034971b97f0b21810951ec64b06fb2f4b5a1e80f6f4b83a23c719",
            "00" * 32,
            "52ce29a3663b093b34c34bda0e8714b83015429577c00078eb73fdb13bb6e9b7",
            id="receipt-vector-1",
        ),
        pytest.param(
            "4242b251a0800c9b6857b5da503d92a152e43da79f3da20758f9c5db65d8dd4c",
            "ce:16.7415:e718636e480d0ea56650406cece0abf6c010f58e6635dce8f404e2d2779fbc9d",
            "00" * 32,
            "69b8b4060ffe8c6fa639a70aeb7f9d1cad5a839a86282724fec2e498779b9d48",
            id="receipt-vector-2",
        ),
        pytest.param(
            "6637eddb8741ab54cc8a44725be67fd9be390e605f0537e5a278703860ace035",
            "ce:2.13:850a25da46643fa41392750b6ca03c7c7d117c27ae14e3322873de6322aa7cd3",
            CLAIMS_DIGEST,
            "ab64db6ebde6fa0427dd5b7d74e1ac3376f463648515a180adc2bb8cfaac4b4a",
            id="receipt-vector-3",
        ),
    ],
)
def test_leaf_vectors(wsd: str, ce: str, claims: str, leaf: str) -> None:
    """acl-rest-api.md §8.4: the leaves of the three SDK receipts."""
    assert leaf_hash(bytes.fromhex(wsd), commit_evidence_digest(ce), bytes.fromhex(claims)).hex() == leaf


def test_zero_claims_constant() -> None:
    assert bytes(32) == ZERO_CLAIMS


# --- commit evidence (ccf-ledger-format.md §3.4) ---

CE_RE = re.compile(r"^ce:(0|[1-9][0-9]*)\.(0|[1-9][0-9]*):([0-9a-f]{64})$")


def independent_commit_evidence(secret: bytes, view: int, seqno: int) -> str:
    commit_key = hmac.new(secret, b"Commit S", hashlib.sha256).digest()
    nonce = hmac.new(commit_key, f"{view}.{seqno}".encode("ascii"), hashlib.sha256).hexdigest()
    return f"ce:{view}.{seqno}:{nonce}"


@given(
    st.binary(min_size=32, max_size=32),
    st.integers(0, MAX_VIEW),
    st.integers(0, MAX_SEQNO),
)
@settings(max_examples=100, deadline=None)
def test_commit_evidence_matches_independent_hmac(secret: bytes, view: int, seqno: int) -> None:
    ce = commit_evidence(secret, TxId(view, seqno))
    m = CE_RE.match(ce)
    assert m is not None, ce
    assert (int(m.group(1)), int(m.group(2))) == (view, seqno)
    assert ce == independent_commit_evidence(secret, view, seqno)
    assert ce == commit_evidence_from_commit_secret(commit_secret(secret), TxId(view, seqno))


def test_commit_evidence_known_value() -> None:
    secret = bytes(range(32))
    ce = commit_evidence(secret, TxId(2, 35))
    assert ce.startswith("ce:2.35:")
    assert ce == independent_commit_evidence(secret, 2, 35)


def test_commit_secret_label_is_the_8_bytes_commit_s() -> None:
    secret = b"\x42" * 32
    assert commit_secret(secret) == hmac.new(secret, b"Commit S", hashlib.sha256).digest()
    assert commit_secret(secret) != hmac.new(secret, b"Commit Secret Label", hashlib.sha256).digest()


def test_commit_evidence_depends_on_secret_view_and_seqno() -> None:
    secret = b"\x01" * 32
    values = {
        commit_evidence(secret, TxId(2, 13)),
        commit_evidence(b"\x02" * 32, TxId(2, 13)),
        commit_evidence(secret, TxId(3, 13)),
        commit_evidence(secret, TxId(2, 14)),
        # "2.13" vs "21.3": the dot keeps them apart
        commit_evidence(secret, TxId(21, 3)),
    }
    assert len(values) == 5
