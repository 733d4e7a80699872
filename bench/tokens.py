"""Bearer tokens vs client certificates: the same authenticated requests (the no-op GET /app/ping
and 256-byte appends) over HTTPS, 64 pipelined keep-alive connections, from a separate load
process, rounds interleaved in one run. The token is an RS256 JWT of an issuer whose keys were
given inline (PUT /app/jwtIssuers); its validation is cached by the server until it expires."""

from __future__ import annotations

import shutil
import ssl
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from bench.http import init_service_cli, loadgen, start_server, stop_server

ROOT = Path(__file__).resolve().parent.parent
ISSUER = "https://issuer.bench.invalid/v2.0"
AUDIENCE = "https://confidential-ledger.azure.com"


def _admin(url: str, directory: Path) -> httpx.Client:
    ctx = ssl.create_default_context(cadata=(directory / "service_cert.pem").read_text())
    ctx.load_cert_chain(str(directory / "user0_combined.pem"))
    return httpx.Client(base_url=url, verify=ctx, timeout=30, params={"api-version": "2022-05-13"})


def bench_tokens(quick: bool) -> dict[str, Any]:
    rounds, duration = (1, 2.0) if quick else (5, 5.0)
    scratch = Path(tempfile.mkdtemp(prefix="notarium-tokens-", dir=ROOT / "bench" / "out"))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    public.update({"kid": "bench", "use": "sig", "alg": "RS256"})
    oid = str(uuid.uuid4())
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "oid": oid, "iat": now, "nbf": now, "exp": now + 7200}
    token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "bench"})
    names = ("ping_cert", "ping_token", "append_cert", "append_token")
    results: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    try:
        d = scratch / "svc"
        init_service_cli(d)
        svc = start_server(d)
        try:
            with _admin(svc.url, d) as admin:
                r = admin.put("/app/jwtIssuers", json={"issuer": ISSUER, "jwks": {"keys": [public]}})
                r.raise_for_status()
                r = admin.patch(
                    f"/app/users/{oid}",
                    json={"assignedRole": "Contributor"},
                    headers={"Content-Type": "application/merge-patch+json"},
                )
                r.raise_for_status()
            for _ in range(rounds):
                results["ping_cert"].append(loadgen(svc, "ping", duration=duration))
                results["ping_token"].append(loadgen(svc, "ping", duration=duration, token=token))
                results["append_cert"].append(loadgen(svc, "append", duration=duration))
                results["append_token"].append(loadgen(svc, "append", duration=duration, token=token))
        finally:
            stop_server(svc)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for name, runs in results.items():
        bad = [r for r in runs if r.get("errors") or set(r.get("statuses", {})) != {"200"}]
        if bad:
            raise SystemExit(f"{name}: requests failed: {bad[0].get('statuses')}")
    med = {name: statistics.median(r["rate"] for r in runs) for name, runs in results.items()}
    ping_ratio = med["ping_token"] / med["ping_cert"]
    append_ratio = med["append_token"] / med["append_cert"]
    return {
        "ping_cert_per_s": round(med["ping_cert"]),
        "ping_token_per_s": round(med["ping_token"]),
        "ping_token_over_cert": round(ping_ratio, 3),
        "append_cert_per_s": round(med["append_cert"]),
        "append_token_per_s": round(med["append_token"]),
        "append_token_over_cert": round(append_ratio, 3),
        "per_round": {name: [round(r["rate"]) for r in runs] for name, runs in results.items()},
        "target": {
            "value": round(min(ping_ratio, append_ratio), 3),
            "target": ">= 0.8",
            "met": min(ping_ratio, append_ratio) >= 0.8,
        },
    }
