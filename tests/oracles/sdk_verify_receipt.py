"""Verify ACL JSON receipts with the Azure SDK (run ONLY inside .venv-acl1 or .venv-acl2, never with -O).

Usage: sdk_verify_receipt.py SERVICE_CERT_PEM_PATH < items

stdin holds a JSON array of objects::

    {"receipt": {...}, "application_claims": [...] | null, "service_cert_pem": str (optional override)}

Each is checked with ``azure.confidentialledger.receipt.verify_receipt(receipt, service_cert_pem,
application_claims=...)``. Prints one JSON object ``{"sdk_version": str, "results": [...]}`` with,
per item in order, ``{"ok": bool, "error_type": str | null, "error": str | null}``.
"""

from __future__ import annotations

import copy
import json
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

from azure.confidentialledger.receipt import verify_receipt

MAX_ERROR = 300


def check(item: dict[str, Any], default_cert: str) -> dict[str, Any]:
    cert = item.get("service_cert_pem") or default_cert
    # verify_receipt appends the service certificate to the receipt's serviceEndorsements list:
    # give it a private copy so that one item cannot leak into the next.
    receipt = copy.deepcopy(item["receipt"])
    claims = copy.deepcopy(item.get("application_claims"))
    try:
        verify_receipt(receipt, cert, application_claims=claims)
    except Exception as exc:
        cause = exc.__cause__
        detail = f"{type(exc).__name__}: {exc}"
        if cause is not None:
            detail += f" (caused by {type(cause).__name__}: {cause})"
        return {"ok": False, "error_type": type(exc).__name__, "error": detail[:MAX_ERROR]}
    return {"ok": True, "error_type": None, "error": None}


def main(argv: list[str]) -> int:
    if sys.flags.optimize:
        raise SystemExit("refusing to run under python -O: the SDK validates receipts with asserts")
    if len(argv) != 1:
        raise SystemExit("usage: sdk_verify_receipt.py SERVICE_CERT_PEM < items")
    default_cert = Path(argv[0]).read_text()
    items = json.loads(sys.stdin.read() or "[]")
    if not isinstance(items, list):
        raise SystemExit("stdin must be a JSON array")
    results = [check(item, default_cert) for item in items]
    print(json.dumps({"sdk_version": version("azure-confidentialledger"), "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
