"""Copy a ledger's history (verifying each chunk as it arrives), then audit the copy offline.
Usage: NOTARIUM_PROFILE=... python examples/audit_export.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

from notarium.auditing import audit, find_target
from notarium.client import Client, load_profile
from notarium.client.export import export_ledger


def main(out: Path) -> int:
    with Client.from_profile(load_profile()) as ledger:
        result = export_ledger(ledger.http, out, ledger.service_cert_pem)
    print(f"exported: {result.downloaded} new chunk(s), {result.skipped} already there")
    report = audit(find_target(out))  # raises LedgerAuditError, naming the transaction, on any failure
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
