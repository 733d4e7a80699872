"""After a disaster recovery the service has a new identity that endorses the previous one: a
receipt signed under the previous identity verifies against the new service certificate once the
endorsement certificate is in its ``serviceEndorsements`` — with notarium's verifier and with the
Azure SDK's ``verify_receipt`` (1.1.1 and 2.0.0b2); without it, or with a forged one, it does not."""

from __future__ import annotations

import copy
import datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from integration.oracle import JsonCase, sdk_verify_receipts
from notarium.errors import VerificationError
from notarium.ledger import init_service, open_ledger
from notarium.ledger.identity import cert_pem, endorse_previous_identity, new_ec_key, service_certificate
from notarium.verify import verify_json_receipt

NOW = datetime.datetime.now(datetime.UTC)


@pytest.fixture(scope="module")
def old_receipt(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], list[dict[str, Any]], Path]:
    directory = tmp_path_factory.mktemp("endorse") / "ledger"
    init_service(directory)
    with open_ledger(directory) as led:
        tx = led.append_entry("written under the first identity")
        led.wait_committed(tx, timeout=10)
        led.wait_committed(led.append_entry("and one more, so that a later signature exists"), timeout=10)
        r = led.receipt(tx)
        assert r is not None
        assert r.application_claims is not None
        return r.receipt, r.application_claims, directory / "service_cert.pem"


def new_identity() -> tuple[Any, x509.Certificate]:
    key = new_ec_key()
    return key, service_certificate(key, now=NOW, name="notarium Service (recovered)")


def test_endorsed_previous_identity_verifies_old_receipts(
    old_receipt: tuple[dict[str, Any], list[dict[str, Any]], Path], tmp_path: Path
) -> None:
    receipt, claims, old_cert_file = old_receipt
    old_cert = x509.load_pem_x509_certificate(old_cert_file.read_bytes())
    key, new_cert = new_identity()
    endorsement = endorse_previous_identity(old_cert, key, new_cert, now=NOW)
    assert endorsement.public_key() == old_cert.public_key()
    endorsed = {**copy.deepcopy(receipt), "serviceEndorsements": [cert_pem(endorsement).decode()]}

    verify_json_receipt(receipt, old_cert, application_claims=claims)  # as before
    verify_json_receipt(endorsed, new_cert, application_claims=claims)  # and now against the new identity
    with pytest.raises(VerificationError):
        verify_json_receipt(receipt, new_cert, application_claims=claims)  # not without the endorsement
    stranger_key, stranger_cert = new_identity()
    forged = endorse_previous_identity(old_cert, stranger_key, stranger_cert, now=NOW)
    with pytest.raises(VerificationError):
        verify_json_receipt(
            {**copy.deepcopy(receipt), "serviceEndorsements": [cert_pem(forged).decode()]},
            new_cert,
            application_claims=claims,
        )

    new_cert_file = tmp_path / "new_service_cert.pem"
    new_cert_file.write_bytes(cert_pem(new_cert))
    for oracle in ("acl1", "acl2"):
        verdicts = sdk_verify_receipts(
            oracle,
            [
                JsonCase(endorsed, claims),
                JsonCase(receipt, claims),
                JsonCase({**copy.deepcopy(receipt), "serviceEndorsements": [cert_pem(forged).decode()]}, claims),
            ],
            new_cert_file,
        )
        assert [v.ok for v in verdicts] == [True, False, False], (oracle, verdicts)
