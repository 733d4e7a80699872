"""The console's step-by-step receipt check against the SDK vectors (tests/unit/verify/vectors/acl-sdk) and their
alterations: the same verdict as notarium's verify_json_receipt on every case, and the failed step
named after what was altered."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from notarium.console.steps import FAILED, OK, SKIPPED, verify_steps
from notarium.errors import VerificationError
from notarium.types import TxId
from notarium.verify import verify_json_receipt
from unit.verify.test_receipts import EXPECTED_FAILURES, STRICT_FAILURES, Mutation

VECTORS = Path(__file__).resolve().parents[1] / "verify" / "vectors" / "acl-sdk"
V: dict[str, Any] = json.loads((VECTORS / "receipts.json").read_text())
CLAIMS: dict[str, Any] = json.loads((VECTORS / "claims.json").read_text())


def cert(n: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(V["service_certificates"][n]["pem"].encode())


def receipt(n: str) -> dict[str, Any]:
    return copy.deepcopy(V["receipts"][n]["receipt"])


@pytest.mark.parametrize("n", ["1", "2", "3"])
def test_vectors_verify_with_every_step_shown(n: str) -> None:
    result = verify_steps(receipt(n), cert(n))
    assert result.verified
    keys = [s.key for s in result.steps]
    assert keys[:5] == ["format", "write_set_digest", "claims", "commit_evidence", "leaf"]
    assert keys[-5:-3] == [keys[-5], "root"]
    assert keys[-3:] == ["node_cert", "signature", "endorsement"]
    paths = [k for k in keys if k.startswith("path-")]
    assert len(paths) == len(receipt(n)["proof"])
    assert all(s.status == OK for s in result.steps if s.key != "claims")
    assert next(s for s in result.steps if s.key == "claims").status == SKIPPED  # no claims given
    root = next(s for s in result.steps if s.key == "root").values[0][1]
    assert root == verify_json_receipt(receipt(n), cert(n)).root.hex()


def test_claims_are_checked_when_given() -> None:
    good = verify_steps(receipt("3"), cert("3"), application_claims=CLAIMS["ledger_entry"]["claims"])
    assert good.verified
    assert next(s for s in good.steps if s.key == "claims").status == OK
    bad = verify_steps(receipt("1"), cert("1"), application_claims=CLAIMS["ledger_entry"]["claims"])
    assert not bad.verified
    assert bad.failed is not None
    assert bad.failed.key == "claims"


def test_the_expected_transaction_is_checked() -> None:
    result = verify_steps(receipt("1"), cert("1"), expected_txid=TxId(2, 36))
    assert not result.verified
    assert result.failed is not None
    assert result.failed.key == "commit_evidence"
    assert verify_steps(receipt("1"), cert("1"), expected_txid=TxId(2, 35)).verified


@pytest.mark.parametrize(
    ("name", "step"),
    [
        ("writeSetDigest changed", "signature"),
        ("proof element side flipped", "signature"),
        ("proof element non-hex", "path"),
        ("cert of vector 2", "node_cert"),
        ("nodeId garbage", "node_cert"),
        ("signature of vector 2", "signature"),
        ("serviceEndorsements [service cert 2]", "endorsement"),
        ("leafComponents null", "format"),
        ("commitEvidence without ce: prefix", "commit_evidence"),
    ],
)
def test_the_failed_step_is_the_altered_one(name: str, step: str) -> None:
    r = receipt("1")
    {**EXPECTED_FAILURES, **STRICT_FAILURES}[name](r, V)
    result = verify_steps(r, cert("1"))
    assert not result.verified
    assert result.failed is not None
    assert result.failed.key == step
    assert result.failed.status == FAILED


def test_another_service_fails_at_the_endorsement() -> None:
    result = verify_steps(receipt("1"), cert("2"))
    assert result.failed is not None
    assert result.failed.key == "endorsement"
    assert next(s for s in result.steps if s.key == "signature").status == OK  # independent checks still run


ALL: dict[str, Mutation] = {**EXPECTED_FAILURES, **STRICT_FAILURES}


@pytest.mark.parametrize("name", list(ALL))
def test_same_verdict_as_verify_json_receipt(name: str) -> None:
    r = receipt("1")
    ALL[name](r, V)
    result = verify_steps(r, cert("1"))
    with pytest.raises(VerificationError):
        verify_json_receipt(r, cert("1"))
    assert not result.verified
    assert result.failed is not None


@pytest.mark.parametrize("value", [None, [], "receipt", 1])
def test_not_an_object(value: Any) -> None:
    result = verify_steps(value, cert("1"))
    assert not result.verified
    assert result.failed is not None
    assert result.failed.key == "format"
