"""Validate a ledger directory with the `ccf` package (run ONLY inside .venv-ccf, never with -O).

Usage: ccf_validate.py LEDGER_DIR SERVICE_CERT_PEM_PATH

Runs ``ccf.ledger.LedgerValidator`` over every transaction of ``ccf.ledger.Ledger([LEDGER_DIR])``
(``committed_only`` default: only ``*.committed`` chunks are read), then checks every node
certificate the ledger records with ``ccf.receipt.check_endorsement`` against the pinned service
certificate (or by a previous service identity whose endorsement, recorded in
``public:notarium.service.previous_identity_endorsement``, chains to it), and compares the
service certificate in ``public:ccf.gov.service.info`` with it.

Prints one JSON object::

    {"ok": bool, "error": str | null, "transactions": n, "signature_count": n,
     "last_verified_txid": "v.s", "service_cert_matches": bool,
     "signature_txids": ["v.s", ...], "node_certificates": n, "chunks": [names]}

``ok`` is false if the validator or an endorsement check raised; the caller must still assert
the signature count and the last verified TxId (a ledger with no signature passes the validator).
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Any

from ccf.ledger import SIGNATURE_TX_TABLE_NAME, Ledger, LedgerValidator
from ccf.receipt import check_endorsement
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import load_pem_x509_certificate

MAX_ERROR = 2000


class EndorsementError(Exception):
    """A node certificate recorded in the ledger is not signed by the pinned service key."""


def _der(pem: str | bytes) -> bytes:
    data = pem.encode() if isinstance(pem, str) else pem
    return load_pem_x509_certificate(data).public_bytes(Encoding.DER)


PREVIOUS_IDENTITY_ENDORSEMENT = "public:notarium.service.previous_identity_endorsement"


def _endorses(issuer: Any, cert: Any) -> bool:
    try:
        check_endorsement(cert, issuer)
    except InvalidSignature:
        return False
    return True


def validate(ledger_dir: str, service_cert_path: str) -> dict[str, object]:
    service_pem = Path(service_cert_path).read_bytes()
    service_cert = load_pem_x509_certificate(service_pem)
    # The validator keeps node state in class attributes shared by every instance (§12.6 pitfall 2).
    LedgerValidator.node_certificates = {}
    LedgerValidator.node_activity_status = {}
    validator = LedgerValidator()
    result: dict[str, object] = {
        "ok": False,
        "error": None,
        "transactions": 0,
        "signature_count": 0,
        "last_verified_txid": "0.0",
        "service_cert_matches": False,
        "signature_txids": [],
        "node_certificates": 0,
        "chunks": [],
    }
    node_certs: dict[bytes, bytes] = {}  # DER -> PEM, every node certificate seen
    endorsements: list[bytes] = []  # recorded endorsements of previous service identities (PEM)
    signature_txids: list[str] = []
    count = 0
    try:
        ledger = Ledger([ledger_dir])
        result["chunks"] = [Path(c.filename()).name for c in ledger]
        for tx in ledger.transactions():
            validator.add_transaction(tx)
            count += 1
            tables = tx.get_public_domain().get_tables()
            if SIGNATURE_TX_TABLE_NAME in tables:
                signature_txids.append(tx.get_txid())
            for value in tables.get(PREVIOUS_IDENTITY_ENDORSEMENT, {}).values():
                if value is not None:
                    endorsements.append(value.encode() if isinstance(value, str) else bytes(value))
            for pem in validator.node_certificates.values():
                raw = pem.encode() if isinstance(pem, str) else pem
                node_certs.setdefault(_der(raw), raw)
        trusted = [service_cert]  # the pinned identity, then previous ones it (transitively) endorsed
        pending = [load_pem_x509_certificate(pem) for pem in endorsements]
        while pending:
            found = [e for e in pending if any(_endorses(t, e) for t in trusted)]
            if not found:
                break
            trusted += found
            pending = [e for e in pending if e not in found]
        for raw in node_certs.values():
            node_cert = load_pem_x509_certificate(raw)
            if not any(_endorses(t, node_cert) for t in trusted):
                raise EndorsementError(
                    f"node certificate {node_cert.subject.rfc4514_string()} (serial {node_cert.serial_number:x}) "
                    "is not endorsed by the pinned service certificate"
                ) from None
        result["ok"] = True
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, AssertionError) and not str(exc):
            text += " " + traceback.format_exc(limit=-1).strip().splitlines()[-2].strip()
        result["error"] = text[:MAX_ERROR]
    result["transactions"] = count
    result["signature_count"] = validator.signature_count
    result["last_verified_txid"] = str(validator.last_verified_txid())
    result["signature_txids"] = signature_txids
    result["node_certificates"] = len(node_certs)
    if validator.service_cert is not None:
        try:
            result["service_cert_matches"] = _der(validator.service_cert) == _der(service_pem)
        except ValueError:
            result["service_cert_matches"] = False
    return result


def main(argv: list[str]) -> int:
    if sys.flags.optimize:
        print(json.dumps({"ok": False, "error": "refusing to run under python -O: ccf checks are asserts"}))
        return 2
    if len(argv) != 2:
        print("usage: ccf_validate.py LEDGER_DIR SERVICE_CERT_PEM", file=sys.stderr)
        return 2
    print(json.dumps(validate(argv[0], argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
