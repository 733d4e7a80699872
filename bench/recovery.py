"""Disaster recovery of a 1M-transaction ledger: the sealed ledger secret is gone; the member's
encrypted share is read from the ledger, decrypted with the member's key, checked, and the secret
chain restored and re-sealed (``DirectoryRecovery``); a new service identity endorsing the
previous one is recorded (``recover_service_identity``); then the ledger opens (index check) and
an old private entry reads back. Timed end to end, against the time the same
ledger takes to open normally (same run)."""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from bench.http import init_service_cli, prefill
from notarium.ledger import open_ledger
from notarium.ledger.restore import DirectoryRecovery
from notarium.ledger.service import recover_service_identity
from notarium.recovery.shares import decrypt_share
from notarium.types import TxId

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 60.0


def bench_recovery(quick: bool) -> dict[str, Any]:
    total = 100_000 if quick else 1_000_000
    scratch = Path(tempfile.mkdtemp(prefix="notarium-recovery-", dir=ROOT / "bench" / "out"))
    try:
        d = scratch / "svc"
        init_service_cli(d)
        sample, fill_s = prefill(d, total)
        print(f"  recovery: pre-filled {total} entries in {fill_s:.1f} s", flush=True)
        probe = TxId.parse(sample[len(sample) // 2])
        sealed = d / "secrets" / "ledger_secret.sealed"
        kept = sealed.read_bytes()
        member_key = load_pem_private_key((d / "member0_enc_privk.pem").read_bytes(), password=None)
        if not isinstance(member_key, rsa.RSAPrivateKey):
            raise SystemExit("member0's encryption key is not RSA")
        normal, recovered = [], []
        for _ in range(3):
            start = time.perf_counter()
            with open_ledger(d) as led:
                if led.get_entry(probe) is None:
                    raise SystemExit(f"{probe} unreadable")
            normal.append(time.perf_counter() - start)

            sealed.unlink()
            start = time.perf_counter()
            recovery = DirectoryRecovery(d)
            for member in recovery.members:
                recovery.submit_share(member, decrypt_share(recovery.encrypted_share(member), member_key))
                if recovery.ready:
                    break
            recovery.restore()
            recover_service_identity(d)  # as `serve --recover` does: a new identity endorsing the old
            with open_ledger(d) as led:
                entry = led.get_entry(probe)
                if entry is None or not entry.contents:
                    raise SystemExit(f"{probe} unreadable after recovery")
            recovered.append(time.perf_counter() - start)
            if sealed.read_bytes() != kept:
                raise SystemExit("the recovered secret differs from the sealed one")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    r = statistics.median(recovered)
    return {
        "transactions": total,
        "recovery_s": [round(x, 2) for x in recovered],
        "normal_open_s": [round(x, 2) for x in normal],
        "recovery_median_s": round(r, 2),
        "target": {"value": round(r, 2), "target": f"<= {TARGET_S}", "met": r <= TARGET_S},
        "what": "shares from the ledger files, checked, secret chain restored and re-sealed, new service "
        "identity endorsing the previous one recorded, ledger opened, an old private entry read",
    }
