"""Client-side receipt verification: notarium.client's check (ACL JSON receipt against the pinned
service certificate, application claims, and that it proves the transaction asked for) vs the
Azure SDK's ``verify_receipt`` on the same receipts, in the same run (the SDK in its own venv)."""

from __future__ import annotations

import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography import x509

from notarium.client.operations import check_json_receipt
from notarium.ledger import EngineConfig, init_service, open_ledger
from notarium.types import TxId
from notarium.verify.receipt import ReceiptVerifier

ROOT = Path(__file__).resolve().parent.parent
SDK_PYTHON = ROOT / ".venv-acl2" / "bin" / "python"
TARGET = 2000


def _receipts(n: int, scratch: Path) -> tuple[bytes, list[tuple[TxId, dict[str, Any]]]]:
    directory = scratch / "ledger"
    init_service(directory)
    led = open_ledger(directory, EngineConfig())
    try:
        txids = [led.append_entry("x" * 256, "bench") for _ in range(n)]
        led.wait_committed(led.append_entry("tail"), timeout=30)
        out = []
        for txid in txids:
            r = led.receipt(txid)
            if r is None:
                raise SystemExit(f"no receipt for {txid}")
            out.append((txid, {"receipt": r.receipt, "applicationClaims": r.application_claims}))
    finally:
        led.close()
    return (directory / "service_cert.pem").read_bytes(), out


def bench_client(quick: bool) -> dict[str, Any]:
    n = 500 if quick else 5000
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        cert_pem, receipts = _receipts(n, scratch)
        cert = x509.load_pem_x509_certificate(cert_pem)
        ours = []
        for _ in range(3):
            start = time.perf_counter()
            verifier = ReceiptVerifier(cert)  # what a Client holds: a fresh one per round
            for txid, body in receipts:
                check_json_receipt(body, txid, verifier)
            ours.append(time.perf_counter() - start)
        items = scratch / "receipts.json"
        items.write_text(json.dumps({"service_cert": cert_pem.decode(), "items": [b for _, b in receipts]}))
        sdk = []
        for _ in range(3):
            out = subprocess.run(
                [str(SDK_PYTHON), "-I", str(ROOT / "bench" / "sdk_receipt_timer.py"), str(items)],
                check=True,
                capture_output=True,
                text=True,
            )
            sdk.append(json.loads(out.stdout)["seconds"])
    o, s = statistics.median(ours), statistics.median(sdk)
    return {
        "receipts": n,
        "notarium_receipts_per_s": round(n / o),
        "sdk_receipts_per_s": round(n / s),
        "notarium_over_sdk": round(s / o, 2),
        "notarium_s": [round(x, 3) for x in ours],
        "sdk_s": [round(x, 3) for x in sdk],
        "what": "JSON receipt + application claims verified against the pinned service certificate",
        "target": {"value": round(n / o), "target": f">= {TARGET}", "met": n / o >= TARGET},
    }
