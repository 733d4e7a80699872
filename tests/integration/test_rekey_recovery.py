"""Several ledger secrets, rekey, recovery shares and recovery from shares, at engine level (real files)."""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key

from integration.oracle import ccf_validate
from leaks import files_holding
from notarium.auditing import audit, find_target
from notarium.cli import main
from notarium.errors import LedgerError, ServiceError
from notarium.ledger import EngineConfig, Ledger, init_service, open_ledger
from notarium.ledger.identity import load_cert
from notarium.ledger.layout import Layout
from notarium.ledger.restore import DirectoryRecovery
from notarium.ledger.service import load_identity
from notarium.recovery.chain import LedgerSecrets
from notarium.recovery.records import scan_recovery_records
from notarium.recovery.sealing import SealedSecretsMissingError, VirtualFileSealer, unseal_secrets
from notarium.recovery.shares import RecoverySharesRecord, decrypt_share
from notarium.types import TxId, TxStatus
from notarium.verify import tables
from notarium.verify.keys import cert_fingerprint
from notarium.verify.secrets import commit_evidence

FAST = EngineConfig(signature_interval_ms=5)


@pytest.fixture
def service(tmp_path: Path) -> Path:
    d = tmp_path / "svc"
    init_service(d)
    return d


def _sealed(service: Path) -> LedgerSecrets:
    return unseal_secrets(VirtualFileSealer(service / "secrets" / "ledger_secret.sealed"))


def _member0(service: Path) -> tuple[str, rsa.RSAPrivateKey]:
    member_id = cert_fingerprint(load_cert(service / "member0_cert.pem"))
    key = load_pem_private_key((service / "member0_enc_privk.pem").read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return member_id, key


def _new_members(n: int) -> tuple[dict[str, str], dict[str, rsa.RSAPrivateKey]]:
    keys = {f"{i:064x}": rsa.generate_private_key(public_exponent=65537, key_size=2048) for i in range(1, n + 1)}
    pems = {
        m: k.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
        for m, k in keys.items()
    }
    return pems, keys


def _write(led: Ledger, texts: list[str]) -> list[TxId]:
    txids = [led.append_entry(t) for t in texts]
    assert led.wait_committed(txids[-1], 10) == TxStatus.COMMITTED
    return txids


def _receipt_ce(led: Ledger, txid: TxId) -> str:
    for _ in range(100):
        r = led.receipt(txid)
        if r is not None:
            return str(r.receipt["leafComponents"]["commitEvidence"])
        led.wait_committed(TxId(led.view, led.last_sequenced), 5)
    raise AssertionError(f"no receipt for {txid}")


def test_genesis_shares_decrypt_with_member0_key_and_recover_the_secret(service: Path) -> None:
    member_id, key = _member0(service)
    with open_ledger(service, FAST) as led:
        record = led.recovery_shares()
        assert record is not None
        assert led.state_get(tables.RECOVERY_SHARES, tables.SINGLETON_KEY) == record.to_json()
    assert record.threshold == 1
    assert list(record.members) == [member_id]
    assert record.members[member_id].encryption_public_key == (service / "member0_enc_pubk.pem").read_text()
    share = decrypt_share(record.members[member_id].encrypted_share, key)
    assert record.unwrap([record.check_share(member_id, share)]) == (1, _sealed(service).latest[1])
    # the record is in the genesis transaction, public, and found by the secret-less scan
    found, chain = scan_recovery_records(service / "ledger")
    assert found == record
    assert chain == {}


def test_rekey_across_restarts_reads_receipts_and_audit(service: Path) -> None:
    with open_ledger(service, FAST) as led:
        before = _write(led, ["before 1", "before 2"])
        r1 = led.rekey()
        after = _write(led, ["after 1"])
        assert led.ledger_secret_starts == [1, r1.seqno + 1]
        assert led.wait_committed(r1, 10) == TxStatus.COMMITTED
    secrets = _sealed(service)
    assert secrets.starts == [1, r1.seqno + 1]
    assert json.loads((service / "secrets" / "ledger_secret.sealed").read_bytes())["format"].startswith("notarium-")
    with open_ledger(service, FAST) as led:
        assert led.ledger_secret_starts == [1, r1.seqno + 1]
        assert [e.contents for e in led.entries()] == ["before 1", "before 2", "after 1"]
        r2 = led.rekey()
        later = _write(led, ["after 2"])
        # each transaction's commit evidence derives from the secret in force at its seqno
        for txid in [*before, r1, *after, r2, *later]:
            ce = _receipt_ce(led, txid)
            secret = _sealed(service).for_seqno(txid.seqno)
            assert ce == commit_evidence(secret, txid)
        assert _receipt_ce(led, after[0]) != commit_evidence(secrets.for_seqno(1), after[0])
        assert led.cose_receipt(later[0]) is not None
        # the rekey transactions record the chain and fresh shares of the new secret
        record = RecoverySharesRecord.from_json(led.state_get(tables.RECOVERY_SHARES, tables.SINGLETON_KEY) or b"")
        assert record.ledger_secret_start == r2.seqno + 1
        assert record.previous_secret_stored_version == r2.seqno
    with open_ledger(service, FAST) as led:
        assert [e.contents for e in led.entries()] == ["before 1", "before 2", "after 1", "after 2"]
        assert led.ledger_secret_starts == [1, r1.seqno + 1, r2.seqno + 1]
    target = find_target(service)
    assert target.ledger_secret == _sealed(service)  # the auditor gets every secret
    report = audit(target)
    assert report.signatures >= 4
    _shares, chain = scan_recovery_records(service / "ledger")
    assert sorted(chain) == [r1.seqno, r2.seqno]
    # the ccf package's validator accepts a rekeyed ledger
    validation = ccf_validate(service / "ledger", service / "service_cert.pem")
    assert validation.ok, validation.error
    assert validation.service_cert_matches
    assert validation.transactions == report.transactions


def test_rekey_with_an_external_sequencer_and_without_a_sealer(service: Path) -> None:
    with open_ledger(service, EngineConfig(signature_interval_ms=5, auto_sign=False)) as led:
        nxt = led.last_sequenced + 1
        with pytest.raises(LedgerError, match="expected seqno"):
            led.rekey(seqno=nxt + 1)
        assert led.ledger_secret_starts == [1]
        assert led.rekey(seqno=nxt).seqno == nxt
        led.append_entry("x", seqno=nxt + 1)
        led.sign(seqno=nxt + 2)
    config, identity, secrets = load_identity(Layout(service))
    with Ledger(Layout(service), config, identity, secrets, FAST) as bare:
        assert bare.get_entry(TxId(bare.committed.view, nxt + 1)) is not None
        with pytest.raises(LedgerError, match="no sealer"):
            bare.rekey()


def test_reissue_validates_and_appends_nothing_on_error(service: Path) -> None:
    pems, _keys = _new_members(2)
    with open_ledger(service, FAST) as led:
        last = led.last_sequenced
        with pytest.raises(ValueError, match="between 1 and 2"):
            led.reissue_recovery_shares(pems, 3)
        with pytest.raises(ValueError, match="not a PEM"):
            led.reissue_recovery_shares({"m": "nope"}, 1)
        assert led.last_sequenced == last
        txid = led.reissue_recovery_shares(pems, 2)
        assert txid.seqno == last + 1
        record = led.recovery_shares()
        assert record is not None
        assert sorted(record.members) == sorted(pems)
        assert led.wait_committed(txid, 10) == TxStatus.COMMITTED


def test_a_rekey_lost_in_a_crash_drops_its_sealed_secret(service: Path, caplog: pytest.LogCaptureFixture) -> None:
    with open_ledger(service, FAST) as led:
        _write(led, ["a"])
        last = led.committed.seqno
    sealer = VirtualFileSealer(service / "secrets" / "ledger_secret.sealed")
    lost = os.urandom(32)
    # as if a rekey at last + 1 sealed its secret and the process died before the transaction was durable
    sealer.seal(_sealed(service).with_new(last + 2, lost).seal_bytes())
    with caplog.at_level(logging.DEBUG), open_ledger(service, FAST) as led:
        assert led.ledger_secret_starts == [1]
        _write(led, ["b"])
        assert [e.contents for e in led.entries()] == ["a", "b"]
    assert "rekey transaction was lost" in caplog.text
    assert _sealed(service).starts == [1]
    assert lost.hex() not in caplog.text


def _secret_texts(values: list[bytes]) -> list[str]:
    out = []
    for v in values:
        out += [v.hex(), v.hex().upper(), base64.b64encode(v).decode().rstrip("=")]
    return out


def test_disaster_recovery_from_two_of_three_shares(service: Path, caplog: pytest.LogCaptureFixture) -> None:
    pems, keys = _new_members(3)
    caplog.set_level(logging.DEBUG)
    with open_ledger(service, FAST) as led:
        led.reissue_recovery_shares(pems, 2)
        old = _write(led, ["private 1", "private 2"])
        led.append({"public:app.things": {b"k": b"public v"}})
        led.rekey()
        new = _write(led, ["private 3"])
        led.rekey()
        newest = _write(led, ["private 4"])
    before = _sealed(service)
    assert len(before) == 3
    (service / "secrets" / "ledger_secret.sealed").unlink()
    with pytest.raises(SealedSecretsMissingError, match="recovery shares"):
        open_ledger(service, FAST)

    recovery = DirectoryRecovery(service)
    assert recovery.threshold == 2
    assert recovery.members == sorted(pems)
    shares = {m: decrypt_share(recovery.encrypted_share(m), k) for m, k in keys.items()}
    a, b, c = sorted(shares)
    with pytest.raises(ValueError, match="not the one issued") as wrong:
        recovery.submit_share(a, shares[b])
    assert shares[b].hex() not in str(wrong.value)
    with pytest.raises(KeyError):
        recovery.encrypted_share("nobody")
    assert recovery.submit_share(c, shares[c]) == 1
    assert not recovery.ready
    with pytest.raises(ValueError, match="2 needed"):
        recovery.restore()
    assert recovery.submit_share(a, shares[a]) == 2
    restored = recovery.restore()
    assert restored == before
    assert _sealed(service) == before
    with pytest.raises(ServiceError, match="still has sealed"):
        recovery.restore()

    with open_ledger(service, FAST) as led:
        assert [e.contents for e in led.entries()] == ["private 1", "private 2", "private 3", "private 4"]
        for txid in [*old, *new, *newest]:
            assert _receipt_ce(led, txid) == commit_evidence(before.for_seqno(txid.seqno), txid)
        _write(led, ["private 5"])
    assert audit(find_target(service)).signatures >= 3
    leaked = [t for t in _secret_texts([s for _start, s in before] + list(shares.values())) if t in caplog.text]
    assert not leaked
    assert "accepted (2 of 2)" in caplog.text


def test_lookups_by_collection_and_tag_span_rekeys_and_survive_recovery(service: Path) -> None:
    """The index's tokens are made under the ledger secret in force at each entry (like its
    encryption): lookups by collection and tag cross every rekey, and work the same after the
    secrets are recovered from shares and after `notarium reindex`. No collection id or tag is in
    any file of the directory."""
    in_collection, in_tag = secrets.token_hex(8), secrets.token_hex(8)
    collection, tag = f"orders-{in_collection}", f"urgent-{in_tag}"
    markers = [in_collection.encode(), in_tag.encode()]

    def put(led: Ledger, n: int) -> list[TxId]:
        txs = [led.append_entry(f"e{i}", collection, tags=f"{tag},x" if i % 2 else "x") for i in range(n)]
        assert led.wait_committed(txs[-1], 10) == TxStatus.COMMITTED
        return txs

    def check(led: Ledger, every: list[TxId], epochs: list[list[TxId]]) -> None:
        tagged = [tx for epoch in epochs for tx in epoch[1::2]]
        assert led.collections() == [collection]
        assert [e.txid for e in led.entries(collection)] == every
        assert [e.txid for e in led.entries(collection, tag=tag)] == tagged
        # pages that cross a rekey, and bounds within one
        first_of_second = len(epochs[0])
        page = led.entries(collection, first=every[first_of_second - 2].seqno, limit=4)
        assert [e.txid for e in page] == every[first_of_second - 2 : first_of_second + 2]
        assert [e.txid for e in led.entries(collection, tag=tag, last=epochs[1][-1].seqno)] == tagged[:-2]
        assert [e.txid for e in led.entries(collection, tag="x", limit=5)] == every[:5]
        latest = led.latest_entry(collection)
        assert latest is not None
        assert latest.txid == every[-1]
        assert led.latest_entry("nothing") is None

    with open_ledger(service, FAST) as led:
        epochs = [put(led, 5)]
        for _ in range(2):
            led.rekey()
            epochs.append(put(led, 5))
        every = [tx for epoch in epochs for tx in epoch]
        assert len(led.ledger_secret_starts) == 3
        check(led, every, epochs)
    assert files_holding(service, markers) == []

    (service / "secrets" / "ledger_secret.sealed").unlink()
    recovery = DirectoryRecovery(service)
    member_id, key = _member0(service)
    recovery.submit_share(member_id, decrypt_share(recovery.encrypted_share(member_id), key))
    recovery.restore()
    with open_ledger(service, FAST) as led:
        check(led, every, epochs)
    assert main(["reindex", str(service)]) == 0
    with open_ledger(service, FAST) as led:
        check(led, every, epochs)
    assert files_holding(service, markers) == []
