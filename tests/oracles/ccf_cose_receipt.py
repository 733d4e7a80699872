"""Verify COSE receipts with ``ccf.cose.verify_receipt`` (run ONLY inside .venv-ccf, never with -O).

Usage: ccf_cose_receipt.py SERVICE_CERT_PEM_PATH < items

stdin holds a JSON array, or JSON lines, of objects::

    {"receipt_b64": str, "claims_digest_hex": str, "service_cert_pem": str (optional override)}

Each receipt is checked with ``ccf.cose.verify_receipt(receipt, service_public_key, claims_digest)``
where the key is taken from the service certificate (the path argument, unless the item overrides
it). Prints one JSON array with, per item in order, ``{"ok": bool, "error": str | null}``.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

from ccf.cose import verify_receipt
from cryptography.x509 import load_pem_x509_certificate

MAX_ERROR = 500


def _items(text: str) -> list[dict[str, Any]]:
    text = text.strip()
    if not text:
        return []
    if text.startswith("["):
        items = json.loads(text)
    else:
        items = [json.loads(line) for line in text.splitlines() if line.strip()]
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise SystemExit("stdin must be a JSON array (or JSON lines) of objects")
    return items


def check(item: dict[str, Any], default_key: Any) -> dict[str, Any]:
    try:
        key = default_key
        if item.get("service_cert_pem") is not None:
            key = load_pem_x509_certificate(item["service_cert_pem"].encode()).public_key()
        receipt = base64.b64decode(item["receipt_b64"], validate=True)
        claims_digest = bytes.fromhex(item["claims_digest_hex"])
        verify_receipt(receipt, key, claims_digest)
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:MAX_ERROR]}
    return {"ok": True, "error": None}


def main(argv: list[str]) -> int:
    if sys.flags.optimize:
        raise SystemExit("refusing to run under python -O: ccf.cose.verify_receipt checks with asserts")
    if len(argv) != 1:
        raise SystemExit("usage: ccf_cose_receipt.py SERVICE_CERT_PEM < items")
    key = load_pem_x509_certificate(Path(argv[0]).read_bytes()).public_key()
    print(json.dumps([check(item, key) for item in _items(sys.stdin.read())]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
