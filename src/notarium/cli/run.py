"""``notarium run DIR``: create the service on first use, then exercise it end to end."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from notarium.auditing import audit, find_target
from notarium.ledger.layout import Layout
from notarium.ledger.service import init_service, open_ledger
from notarium.types import TxStatus
from notarium.verify import verify_json_receipt


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("run", help="initialise DIR on first use and run the ledger")
    p.add_argument("directory", type=Path, metavar="DIR")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    d: Path = args.directory
    if not Layout(d).config.exists():
        config = init_service(d)
        print(f"created private ledger {config.ledger_id!r} in {d}")
    ledger = open_ledger(d)
    try:
        txid = ledger.append_entry("hello from notarium run", "smoke")
        status = ledger.wait_committed(txid, timeout=10)
        if status != TxStatus.COMMITTED:
            print(f"transaction {txid} is {status.value}, not Committed")
            return 1
        receipt = ledger.receipt(txid)
        if receipt is None:
            print(f"no receipt for {txid}")
            return 1
        verify_json_receipt(receipt.receipt, ledger.service_cert, application_claims=receipt.application_claims)
        print(f"appended {txid}: Committed; its receipt verifies against {d / 'service_cert.pem'}")
    finally:
        ledger.close()
    report = audit(find_target(d))
    print(report.summary())
    print(
        f"service certificate: {d / 'service_cert.pem'}; administrator: {d / 'user0_cert.pem'}, {d / 'user0_privk.pem'}"
    )
    return 0
