"""The SDK against several nodes of one replicated service (run ONLY inside .venv-acl1/.venv-acl2, ``-I``).

Usage: sdk_ha_scenario.py < config.json   (config: nodes [url…], service_cert, admin_pem, per_node)

Through each node in turn, Microsoft's unmodified client writes ``per_node`` entries and waits for
each to be Committed (``begin_create_ledger_entry(...).result()`` polls the same node, which may be a
backup); then every entry is read back through every node: contents, status and the receipt,
verified with the SDK's own ``verify_receipt``. Prints one JSON report; errors are reported, never
raised.
"""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any

from azure.confidentialledger import ConfidentialLedgerCertificateCredential, ConfidentialLedgerClient
from azure.confidentialledger.receipt import verify_receipt


def plain(value: Any) -> Any:
    return value.as_dict() if hasattr(value, "as_dict") else value


def main() -> int:
    cfg = json.loads(sys.stdin.read())
    with open(cfg["service_cert"]) as f:
        cert_pem = f.read()
    clients = [
        ConfidentialLedgerClient(
            url,
            credential=ConfidentialLedgerCertificateCredential(cfg["admin_pem"]),
            ledger_certificate_path=cfg["service_cert"],
            retry_total=0,
        )
        for url in cfg["nodes"]
    ]
    report: dict[str, Any] = {"written": [], "reads": [], "errors": []}
    for i, client in enumerate(clients):
        for k in range(cfg["per_node"]):
            contents = f"through node {i}, entry {k}"
            try:
                result = plain(
                    client.begin_create_ledger_entry(
                        {"contents": contents}, collection_id="ha", polling_interval=0.05
                    ).result()
                )
                report["written"].append({"node": i, "txid": result["transactionId"], "contents": contents})
            except Exception:  # reported, never raised
                report["errors"].append(f"write through node {i}: {traceback.format_exc()[-2000:]}")
    for entry in report["written"]:
        for j, client in enumerate(clients):
            read: dict[str, Any] = {"txid": entry["txid"], "node": j}
            try:
                got = plain(
                    client.begin_get_ledger_entry(entry["txid"], collection_id="ha", polling_interval=0.05).result()
                )
                read["contents"] = got["entry"]["contents"]
                read["status"] = plain(client.get_transaction_status(entry["txid"]))["state"]
                receipt = plain(client.begin_get_receipt(entry["txid"], polling_interval=0.05).result())
                verify_receipt(receipt["receipt"], cert_pem)
                read["receipt_verified"] = True
            except Exception:
                read["error"] = traceback.format_exc()[-2000:]
            report["reads"].append(read)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
