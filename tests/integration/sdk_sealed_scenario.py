"""Run inside an Azure SDK venv (.venv-acl1/.venv-acl2): what an unmodified SDK user sees of
entries sealed end to end. Reads a JSON config on stdin ({endpoint, serviceCert, pem, entries:
[{transactionId, collectionId}]}) and prints, per entry, the contents the SDK returns for it
(get and list) and whether its receipt verifies with the SDK's own ``verify_receipt``."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

from azure.confidentialledger import ConfidentialLedgerCertificateCredential, ConfidentialLedgerClient
from azure.confidentialledger.receipt import verify_receipt


def plain(value: Any) -> Any:
    if hasattr(value, "as_dict"):
        return value.as_dict()
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    return value


def main() -> None:
    cfg = json.load(sys.stdin)
    client = ConfidentialLedgerClient(
        cfg["endpoint"],
        credential=ConfidentialLedgerCertificateCredential(cfg["pem"]),
        ledger_certificate_path=cfg["serviceCert"],
        retry_total=0,
    )
    cert = open(cfg["serviceCert"]).read()  # noqa: SIM115
    out: dict[str, Any] = {"get": {}, "list": {}, "receipt": {}}
    for e in cfg["entries"]:
        txid, collection = e["transactionId"], e["collectionId"]
        got = plain(client.begin_get_ledger_entry(txid, collection_id=collection, polling_interval=0).result())
        out["get"][txid] = got["entry"]["contents"]
        for item in client.list_ledger_entries(collection_id=collection):
            listed = plain(item)
            out["list"][listed["transactionId"]] = listed["contents"]
        receipt = plain(client.begin_get_receipt(txid, polling_interval=0).result())
        verify_receipt(receipt["receipt"], cert, application_claims=receipt.get("applicationClaims"))
        claims = receipt.get("applicationClaims") or []
        out["receipt"][txid] = claims[0]["ledgerEntry"]["contents"] if claims else None
    print(json.dumps(out))


if __name__ == "__main__":
    main()
