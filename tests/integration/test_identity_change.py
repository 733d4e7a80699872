"""A disaster recovery's service identity change at engine level (real files, no HTTP): the new
identity endorses the previous one in the ledger, old receipts verify against the new service
certificate (notarium and the Azure SDK), the audit follows the recorded chain, CCF accepts."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from integration.oracle import JsonCase, ccf_validate, sdk_verify_receipts
from notarium.auditing import audit, find_target
from notarium.errors import LedgerAuditError, ServiceError, VerificationError
from notarium.ledger import EngineConfig, init_service, open_ledger
from notarium.ledger.identity import (
    cert_pem,
    endorse_previous_identity,
    load_cert,
    new_ec_key,
    service_certificate,
)
from notarium.ledger.restore import DirectoryRecovery
from notarium.ledger.service import recover_service_identity
from notarium.recovery.shares import decrypt_share
from notarium.types import TxId, TxStatus
from notarium.verify import tables, verify_json_receipt
from notarium.verify.keys import cert_fingerprint

FAST = EngineConfig(signature_interval_ms=5)
NOW = datetime.datetime.now(datetime.UTC)


def _write(directory: Path, texts: list[str]) -> list[TxId]:
    with open_ledger(directory, FAST) as led:
        txids = [led.append_entry(t) for t in texts]
        public = led.append({"public:notarium.test": {b"k": b"public " + texts[0].encode()}})
        assert led.wait_committed(public, timeout=10) == TxStatus.COMMITTED
        return [*txids, public]


def _receipt(directory: Path, txid: TxId) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    with open_ledger(directory, FAST) as led:
        for _ in range(200):
            r = led.receipt(txid)
            if r is not None:
                return r.receipt, r.application_claims
            led.wait_committed(led.sign(), timeout=10)
    raise AssertionError(f"no receipt for {txid}")


def _restore_secrets(directory: Path) -> None:
    """Lose the sealed ledger secret and restore it from member0's share."""
    (directory / "secrets" / "ledger_secret.sealed").unlink()
    recovery = DirectoryRecovery(directory)
    member_id = cert_fingerprint(load_cert(directory / "member0_cert.pem"))
    key = load_pem_private_key((directory / "member0_enc_privk.pem").read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    recovery.submit_share(member_id, decrypt_share(recovery.encrypted_share(member_id), key))
    recovery.restore()


@pytest.fixture
def recovered(tmp_path: Path) -> dict[str, Any]:
    d = tmp_path / "svc"
    init_service(d)
    old_cert = load_cert(d / "service_cert.pem")
    (tmp_path / "old_service_cert.pem").write_bytes(cert_pem(old_cert))
    old = _write(d, ["private 1", "private 2"])
    old_receipt, old_claims = _receipt(d, old[0])
    _restore_secrets(d)
    (d / "secrets" / "service_privk.pem").unlink()  # the old service key is lost in the disaster
    new_cert = recover_service_identity(d)
    return {"dir": d, "old": old, "old_cert": old_cert, "new_cert": new_cert, "old_receipt": (old_receipt, old_claims)}


def test_identity_change_keeps_history_and_receipts(recovered: dict[str, Any], tmp_path: Path) -> None:
    d: Path = recovered["dir"]
    old_cert: x509.Certificate = recovered["old_cert"]
    new_cert: x509.Certificate = recovered["new_cert"]
    assert new_cert != old_cert
    assert load_cert(d / "service_cert.pem") == new_cert
    assert load_cert(d / "previous_service_identities" / "0000.service_cert.pem") == old_cert

    new = _write(d, ["private 3"])
    with open_ledger(d, FAST) as led:
        assert [e.contents for e in led.entries()] == ["private 1", "private 2", "private 3"]
        assert led.state_get("public:notarium.test", b"k") == b"public private 3"
        info = json.loads(led.state_get(tables.SERVICE_INFO, tables.SINGLETON_KEY) or b"")
        assert info["cert"] == cert_pem(new_cert).decode()
        assert info["recovery_count"] == 1
        assert info["previous_service_identity_version"] == 1
        assert info["status"] == "Open"
        assert led.state_get(tables.PREVIOUS_SERVICE_IDENTITY, tables.SINGLETON_KEY) == cert_pem(old_cert)
        endorsement = x509.load_pem_x509_certificate(
            led.state_get(tables.PREVIOUS_IDENTITY_ENDORSEMENT, tables.SINGLETON_KEY) or b""
        )
        assert endorsement.public_key() == old_cert.public_key()
        nodes = {k: json.loads(v)["status"] for k, v in led.state(tables.NODES_INFO).items()}
        assert sorted(nodes.values()) == ["Retired", "Trusted"]
        # COSE receipts and signed roots of the old identity verify (against its endorsed key)
        assert led.cose_receipt(recovered["old"][0]) is not None
        assert led.signed_root(TxId(recovered["old"][-1].view, recovered["old"][-1].seqno + 1)) is not None

    cases: list[JsonCase] = []
    for txid in [*recovered["old"], *new]:
        receipt, claims = _receipt(d, txid)
        expected = 1 if txid in recovered["old"] else 0
        assert len(receipt["serviceEndorsements"]) == expected, txid
        verify_json_receipt(receipt, new_cert, application_claims=claims)
        cases.append(JsonCase(receipt, claims))
    # the receipt issued before the recovery still verifies against the old identity only
    old_receipt, old_claims = recovered["old_receipt"]
    verify_json_receipt(old_receipt, old_cert, application_claims=old_claims)
    with pytest.raises(VerificationError):
        verify_json_receipt(old_receipt, new_cert, application_claims=old_claims)
    new_cert_file = tmp_path / "new_service_cert.pem"
    new_cert_file.write_bytes(cert_pem(new_cert))
    for oracle in ("acl1", "acl2"):
        verdicts = sdk_verify_receipts(oracle, cases, new_cert_file)
        assert all(v.ok for v in verdicts), (oracle, verdicts)

    report = audit(find_target(d))
    assert report.service_cert_pinned
    assert report.signatures >= 3
    validation = ccf_validate(d / "ledger", d / "service_cert.pem")
    assert validation.ok, validation.error
    assert validation.signature_count >= 3


def test_second_identity_change_chains(recovered: dict[str, Any]) -> None:
    d: Path = recovered["dir"]
    _write(d, ["private 3"])
    newest = recover_service_identity(d)
    _write(d, ["private 4"])
    receipt, claims = _receipt(d, recovered["old"][0])
    assert len(receipt["serviceEndorsements"]) == 2
    verify_json_receipt(receipt, newest, application_claims=claims)
    with open_ledger(d, FAST) as led:
        info = json.loads(led.state_get(tables.SERVICE_INFO, tables.SINGLETON_KEY) or b"")
        assert info["recovery_count"] == 2
        assert [e.contents for e in led.entries()] == ["private 1", "private 2", "private 3", "private 4"]
    assert audit(find_target(d)).signatures >= 4
    assert ccf_validate(d / "ledger", d / "service_cert.pem").ok


def test_audit_pinned_to_the_old_identity_fails(recovered: dict[str, Any], tmp_path: Path) -> None:
    d: Path = recovered["dir"]
    with pytest.raises(LedgerAuditError) as failure:
        audit(find_target(d, tmp_path / "old_service_cert.pem"))
    assert failure.value.check == "service-identity"


def _stranger(name: str) -> tuple[Any, x509.Certificate]:
    key = new_ec_key()
    return key, service_certificate(key, now=NOW, name=name)


def test_forged_endorsement_fails_the_audit(recovered: dict[str, Any]) -> None:
    d: Path = recovered["dir"]
    new_cert: x509.Certificate = recovered["new_cert"]
    _key, claimed = _stranger("claimed identity")
    forger_key, forger_cert = _stranger("forger")
    forged = endorse_previous_identity(new_cert, forger_key, forger_cert, now=NOW)  # not by `claimed`
    with open_ledger(d, FAST) as led:
        info = json.loads(led.state_get(tables.SERVICE_INFO, tables.SINGLETON_KEY) or b"")
        txid = led.append(
            {
                tables.SERVICE_INFO: {
                    tables.SINGLETON_KEY: json.dumps({**info, "cert": cert_pem(claimed).decode()}).encode()
                },
                tables.PREVIOUS_SERVICE_IDENTITY: {tables.SINGLETON_KEY: cert_pem(new_cert)},
                tables.PREVIOUS_IDENTITY_ENDORSEMENT: {tables.SINGLETON_KEY: cert_pem(forged)},
            }
        )
        led.wait_committed(txid, timeout=10)
    with pytest.raises(LedgerAuditError) as failure:
        audit(find_target(d, d / "service_cert.pem"))
    assert failure.value.check == "service-identity-endorsement"
    assert failure.value.txid == str(txid)


def test_unrecorded_identity_fails_the_audit(recovered: dict[str, Any]) -> None:
    d: Path = recovered["dir"]
    _key, claimed = _stranger("unrecorded identity")
    with open_ledger(d, FAST) as led:
        info = json.loads(led.state_get(tables.SERVICE_INFO, tables.SINGLETON_KEY) or b"")
        txid = led.append(
            {
                tables.SERVICE_INFO: {
                    tables.SINGLETON_KEY: json.dumps({**info, "cert": cert_pem(claimed).decode()}).encode()
                }
            }
        )
        led.wait_committed(txid, timeout=10)
    with pytest.raises(LedgerAuditError) as failure:
        audit(find_target(d))
    assert failure.value.check == "service-identity-endorsement"


def test_engine_refuses_a_tampered_endorsement_file(recovered: dict[str, Any]) -> None:
    d: Path = recovered["dir"]
    forger_key, forger_cert = _stranger("forger")
    forged = endorse_previous_identity(recovered["old_cert"], forger_key, forger_cert, now=NOW)
    (d / "previous_service_identities" / "0000.endorsement.pem").write_bytes(cert_pem(forged))
    with pytest.raises(ServiceError, match="does not continue the service identity chain"):
        open_ledger(d, FAST)
