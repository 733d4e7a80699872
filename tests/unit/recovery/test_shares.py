"""Issuing recovery shares, checking them at once, and rebuilding the ledger secret chain."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from functools import cache

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from notarium.recovery import shamir
from notarium.recovery.chain import ChainRecord, LedgerSecrets, unchain
from notarium.recovery.shares import (
    RecoverySharesRecord,
    ShareCollector,
    decrypt_share,
    issue_shares,
    share_commitment,
    wrapping_key,
)


@cache
def _rsa(n: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


def _members(n: int) -> tuple[dict[str, str], dict[str, rsa.RSAPrivateKey]]:
    keys = {f"m{i:02d}" + "a" * 62: _rsa(i) for i in range(n)}
    return {m: _pem(k) for m, k in keys.items()}, keys


def _decrypted(record: RecoverySharesRecord, keys: dict[str, rsa.RSAPrivateKey]) -> dict[str, bytes]:
    return {m: decrypt_share(record.members[m].encrypted_share, k) for m, k in keys.items()}


def test_vectors_wrapping_key_and_commitment() -> None:
    # the documented derivations, recomputed independently of the module
    w = 0x1234
    assert wrapping_key(w) == HKDF(
        hashes.SHA256(), 32, salt=None, info=b"notarium/ledger-secret-wrapping-key/1"
    ).derive(w.to_bytes(32, "big"))
    issuance, share = bytes(range(16)), bytes(35)
    expected = hashlib.sha256(
        b"notarium/recovery-share-commitment/1\x00" + issuance + b"member-x" + b"\x00" + share
    ).digest()
    assert share_commitment(issuance, "member-x", share) == expected


def test_issue_then_two_of_three_recover_the_latest_secret() -> None:
    pems, keys = _members(3)
    secret = os.urandom(32)
    record = issue_shares((1, secret), pems, 2)
    again = RecoverySharesRecord.from_json(record.to_json())
    assert again == record
    doc = json.loads(record.to_json())
    assert doc["threshold"] == 2
    assert doc["wrapped_latest_ledger_secret"]["start_seqno"] == 1
    assert secret.hex() not in record.to_json().decode()
    # the wrapped secret is AES-GCM with a zero IV under the key derived from the combined shares
    shares = _decrypted(record, keys)
    w = shamir.combine([shamir.Share.from_bytes(s) for s in list(shares.values())[:2]])
    aad = b"notarium/wrapped-ledger-secret/1" + (1).to_bytes(8, "big")
    wrapped = base64.b64decode(doc["wrapped_latest_ledger_secret"]["encrypted_data"])
    assert AESGCM(wrapping_key(w)).decrypt(bytes(12), wrapped, aad) == secret
    for pair in [("m00", "m01"), ("m01", "m02"), ("m02", "m00")]:
        collector = ShareCollector(RecoverySharesRecord.from_json(record.to_json()))
        for m in pair:
            member = m + "a" * 62
            collector.submit(member, shares[member])
        assert collector.ready
        assert collector.recover(lambda s: pytest.fail("no chain for a single secret")) == LedgerSecrets.single(secret)


def test_a_wrong_share_is_refused_when_submitted() -> None:
    pems, keys = _members(3)
    record = issue_shares((1, os.urandom(32)), pems, 2)
    shares = _decrypted(record, keys)
    a, b, c = sorted(shares)
    collector = ShareCollector(record)
    with pytest.raises(ValueError, match="not the one issued"):
        collector.submit(a, shares[b])  # another member's share
    flipped = bytearray(shares[a])
    flipped[-1] ^= 1
    with pytest.raises(ValueError, match="not the one issued"):
        collector.submit(a, bytes(flipped))
    with pytest.raises(ValueError, match="not the one issued"):
        collector.submit(a, shares[a][:-1])
    other_issue = issue_shares((1, os.urandom(32)), pems, 2)
    with pytest.raises(ValueError, match="not the one issued"):
        collector.submit(a, _decrypted(other_issue, {a: keys[a]})[a])
    with pytest.raises(ValueError, match="no recovery share"):
        collector.submit("stranger", shares[a])
    assert collector.submitted == []  # nothing wrong was kept
    assert collector.submit(a, shares[a]) == 1
    with pytest.raises(ValueError, match="already submitted"):
        collector.submit(a, shares[a])
    with pytest.raises(ValueError, match="1 recovery shares submitted, 2 needed"):
        collector.recover(lambda s: pytest.fail("not reached"))
    assert collector.submit(c, shares[c]) == 2


def test_the_member_key_must_be_rsa_2048_and_thresholds_in_range() -> None:
    pems, _keys = _members(2)
    with pytest.raises(ValueError, match="between 1 and 2"):
        issue_shares((1, os.urandom(32)), pems, 3)
    with pytest.raises(ValueError, match="between 1 and 2"):
        issue_shares((1, os.urandom(32)), pems, 0)
    with pytest.raises(ValueError, match="at least one"):
        issue_shares((1, os.urandom(32)), {}, 1)
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ValueError, match="RSA"):
        issue_shares((1, os.urandom(32)), {"m": ec_pem}, 1)
    with pytest.raises(ValueError, match="not a PEM"):
        issue_shares((1, os.urandom(32)), {"m": "junk"}, 1)
    # the share really is RSA-OAEP(SHA-256) to the member's key
    record = issue_shares((1, os.urandom(32)), pems, 1)
    m, key = next(iter(_keys.items()))
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    assert len(key.decrypt(record.members[m].encrypted_share, oaep)) == shamir.SHARE_SIZE
    with pytest.raises(ValueError, match="does not decrypt"):
        decrypt_share(record.members[m].encrypted_share, _rsa(99))


def test_chain_of_three_secrets_unlocks_all_history() -> None:
    s1, s2, s3 = (os.urandom(32) for _ in range(3))
    chain = {
        9: ChainRecord.seal((1, s1), (10, s2), os.urandom(12)),
        24: ChainRecord.seal((10, s2), (25, s3), os.urandom(12)),
    }
    records = {seqno: ChainRecord.from_json(r.to_json()) for seqno, r in chain.items()}
    assert records[24].previous_secret_stored_version == 9
    assert records[9].previous_secret_stored_version is None
    expected = LedgerSecrets([(1, s1), (10, s2), (25, s3)])
    assert unchain((25, s3), records.__getitem__) == expected
    assert expected.for_seqno(1) == s1
    assert expected.for_seqno(24) == s2
    assert expected.for_seqno(25) == s3
    assert expected.for_seqno(10**9) == s3
    # the newest secret, through shares, then the chain
    pems, keys = _members(2)
    record = issue_shares((25, s3), pems, 2)
    collector = ShareCollector(record)
    for m, share in _decrypted(record, keys).items():
        collector.submit(m, share)
    assert collector.recover(records.__getitem__) == expected
    # a record decrypted under the wrong successor, or not linking, is refused
    with pytest.raises(ValueError, match="does not decrypt"):
        records[24].open(s2)
    with pytest.raises(ValueError, match="does not link"):
        unchain((26, s3), {25: records[24]}.__getitem__)
    tampered = ChainRecord(records[9].start_seqno, 10, records[9].iv, records[9].ciphertext[:-1] + b"\0")
    with pytest.raises(ValueError, match="does not decrypt"):
        unchain((25, s3), {9: tampered, 24: records[24]}.__getitem__)


def test_sealed_form_and_no_secret_in_repr() -> None:
    s1, s2 = os.urandom(32), os.urandom(32)
    one = LedgerSecrets.single(s1)
    assert one.seal_bytes() == s1  # one secret: the raw 32 bytes notarium always sealed
    two = one.with_new(7, s2)
    assert LedgerSecrets.from_sealed(two.seal_bytes()) == two
    assert LedgerSecrets.from_sealed(s1) == one
    assert two.up_to(6) == one
    for text in (repr(two), repr(ShareCollector(issue_shares((7, s2), _members(1)[0], 1)))):
        assert s1.hex() not in text
        assert s2.hex() not in text
    with pytest.raises(ValueError, match="malformed") as exc:
        LedgerSecrets.from_sealed(b'{"format":"x","secrets":[]}')
    assert s1.hex() not in str(exc.value)
    with pytest.raises(ValueError, match="start at seqno 1"):
        LedgerSecrets([(2, s1)])
    with pytest.raises(ValueError, match="increase"):
        LedgerSecrets([(1, s1), (1, s2)])
