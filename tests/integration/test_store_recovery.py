"""Disaster recovery of a replicated service whose every node lost its directory, from its log in a
real PostgreSQL (``notarium serve NEWDIR --store DSN --recover --service-cert FILE``; real processes).

Two nodes write private entries, then both are killed and their directories deleted; only the
member's keys, the administrator's credentials and the pinned service certificate survive. A bad
recovery (no ``--service-cert``, another service's certificate) exits 1 and makes nothing. The real
recovery copies and audits the log, serves the recovery endpoints under its new identity, takes the
member's share (`notarium recovery share|submit`), records the new identity in the log and opens:
the old entries read back intact with receipts that verify against the new certificate (through the
endorsement), appends commit, a second node joins and reads everything, and `notarium audit --store`
passes pinned to the new certificate.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests
from cryptography import x509

from integration.server import clean_env, running
from integration.test_ha import API, NODE_ARGS, _make_service, wait_committed
from notarium.ledger import init_service
from notarium.verify import verify_json_receipt

TIMEOUT = 60


def _notarium(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "notarium", *args],
        capture_output=True,
        text=True,
        env=env or clean_env(),
        timeout=TIMEOUT,
        check=False,
    )


def test_every_node_lost_recovered_from_the_log(tmp_path: Path, pg_dsn: str) -> None:
    svc = _make_service(tmp_path / "svc", pg_dsn, n=2)
    keep = tmp_path / "kept"  # what survives the disaster: held by the member, the admin, the clients
    keep.mkdir()
    for name in ("service_cert.pem", "user0_combined.pem", "member0_cert.pem", "member0_enc_privk.pem"):
        shutil.copy(svc.root / "n0" / name, keep / name)
    written: dict[str, str] = {}
    try:
        primary = svc.primary()
        for i in range(6):
            body = {"contents": f"before the disaster {i}"}
            r = svc.call(svc.nodes[i % 2], "POST", f"/app/transactions?{API}&collectionId=c", json=body)
            assert r.status_code == 200, r.text
            written[r.headers["x-ms-ccf-transaction-id"]] = body["contents"]
        for txid in written:
            assert wait_committed(svc, primary, txid) == "Committed"
    finally:
        for node in svc.nodes:
            node.server.process.kill()
        svc.stop()
    for node in svc.nodes:
        shutil.rmtree(node.directory)

    fresh = tmp_path / "recovered"
    # refused, nothing made: no certificate to pin, or another service's
    missing = _notarium("serve", str(fresh), "--store", pg_dsn, "--recover", "--port", "0")
    assert missing.returncode == 1
    assert "--service-cert" in missing.stderr, missing.stderr
    init_service(tmp_path / "other")
    other = _notarium(
        "serve", str(fresh), "--store", pg_dsn, "--recover", "--port", "0",
        "--service-cert", str(tmp_path / "other" / "service_cert.pem"),
    )  # fmt: skip
    assert other.returncode == 1
    assert "does not verify against the pinned service certificate" in other.stderr
    assert not fresh.exists()

    proc = subprocess.Popen(
        [
            sys.executable, "-m", "notarium", "serve", str(fresh), "--port", "0", "--store", pg_dsn, "--recover",
            "--service-cert", str(keep / "service_cert.pem"), *NODE_ARGS,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=clean_env(),
    )  # fmt: skip
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()  # type: ignore[union-attr]

    def wait_for(pattern: str) -> re.Match[str]:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            for line in list(lines):
                if m := re.search(pattern, line):
                    return m
            assert proc.poll() is None, "".join(lines)
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} in:\n{''.join(lines)}")

    try:
        url = wait_for(r"recovering (https://\S+):").group(1)
        new_cert = fresh / "service_cert.pem"
        assert new_cert.read_bytes() != (keep / "service_cert.pem").read_bytes()
        env = {**clean_env(), "HOME": str(tmp_path), "NOTARIUM_ENDPOINT": url, "NOTARIUM_SERVICE_CERT": str(new_cert)}
        share = tmp_path / "member0.share"
        member = ("--member-cert", str(keep / "member0_cert.pem"))
        enc_key = ("--member-enc-key", str(keep / "member0_enc_privk.pem"))
        got = _notarium("recovery", "share", str(share), *member, *enc_key, env=env)
        assert got.returncode == 0, got.stderr
        got = _notarium("recovery", "submit", str(share), *member, env=env)
        assert got.returncode == 0, got.stderr
        wait_for(r"serving https://")

        session = requests.Session()
        session.cert = str(keep / "user0_combined.pem")
        session.trust_env = False  # pinned to the new certificate (the machine exports a CA bundle)
        session.verify = str(new_cert)
        cert = x509.load_pem_x509_certificate(new_cert.read_bytes())
        for txid, contents in written.items():  # the old entries, intact, with receipts under the new identity
            r = session.get(f"{url}/app/transactions/{txid}?{API}&collectionId=c", timeout=10)
            assert r.status_code == 200, r.text
            assert r.json()["entry"]["contents"] == contents
            r = session.get(f"{url}/app/transactions/{txid}/receipt?{API}", timeout=10)
            assert r.status_code == 200, r.text
            assert r.json()["receipt"]["serviceEndorsements"]
            verify_json_receipt(r.json()["receipt"], cert, application_claims=r.json()["applicationClaims"])
        r = session.post(f"{url}/app/transactions?{API}&collectionId=c", json={"contents": "after"}, timeout=10)
        assert r.status_code == 200, r.text
        after = r.headers["x-ms-ccf-transaction-id"]
        deadline = time.monotonic() + TIMEOUT
        while session.get(f"{url}/app/transactions/{after}/status?{API}", timeout=10).json()["state"] != "Committed":
            assert time.monotonic() < deadline
            time.sleep(0.05)

        joined = tmp_path / "n2"
        got = _notarium("join", str(joined), "--target", url, "--service-cert", str(new_cert), "--wait", "30")
        assert got.returncode == 0, got.stdout + got.stderr
        with running(joined, "--store", pg_dsn, *NODE_ARGS, timeout=TIMEOUT) as second:
            deadline = time.monotonic() + TIMEOUT
            while True:
                r = session.get(f"{second.url}/app/transactions/{after}?{API}&collectionId=c", timeout=10)
                if r.status_code == 200 and r.json().get("state") == "Ready":
                    break
                assert time.monotonic() < deadline, r.text
                time.sleep(0.1)
            assert r.json()["entry"]["contents"] == "after"
            first = next(iter(written))
            r = session.get(f"{second.url}/app/transactions/{first}?{API}&collectionId=c", timeout=10)
            assert r.json()["entry"]["contents"] == written[first], r.text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        time.sleep(0.1)  # the reader thread sees the end of the output
        if proc.stdout is not None:
            proc.stdout.close()
    audited = _notarium("audit", "--store", pg_dsn, "--service-cert", str(new_cert))
    assert audited.returncode == 0, audited.stdout + audited.stderr
    assert share.read_text().strip() not in "".join(lines)
