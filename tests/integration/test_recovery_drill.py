"""A disaster-recovery drill over HTTP: the sealed ledger secret is deleted; `notarium serve
--recover` waits; members fetch their encrypted shares and decrypt them locally (`notarium
recovery share`), a wrong share is refused at once, two of three shares restore the ledger
secrets (`notarium recovery submit`), and the service opens on the same port under a new
service identity that endorses the previous one: every old entry is readable, old transactions'
receipts verify against the new certificate (notarium and the Azure SDK 1.1.1 and 2.0.0b2),
`notarium audit` pinned to the new certificate and the `ccf` package's validator accept the files.
No share or secret appears in the server's output."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from integration.oracle import JsonCase, ccf_validate, sdk_verify_receipts
from integration.server import clean_env
from notarium.auditing import audit, find_target
from notarium.ledger import EngineConfig, init_service, open_ledger
from notarium.ledger.identity import private_pem, public_pem
from notarium.types import TxStatus
from notarium.verify import verify_json_receipt

TIMEOUT = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_disaster_recovery_drill(tmp_path: Path) -> None:
    directory = tmp_path / "ledger"
    init_service(directory)
    keys = {os.urandom(32).hex(): rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(3)}
    key_files = {}
    for member, key in keys.items():
        key_files[member] = tmp_path / f"{member[:8]}_enc_privk.pem"
        key_files[member].write_bytes(private_pem(key))
    with open_ledger(directory, EngineConfig(signature_interval_ms=5)) as led:
        led.reissue_recovery_shares({m: public_pem(k.public_key()) for m, k in keys.items()}, 2)
        written = {str(led.append_entry(f"private entry {i}", "drill")): f"private entry {i}" for i in range(5)}
        public = led.append({"public:drill.settings": {b"mode": b"public value"}})
        led.wait_committed(led.append_entry("last"), timeout=10)
    (directory / "secrets" / "ledger_secret.sealed").unlink()
    old_cert_pem = (directory / "service_cert.pem").read_bytes()

    port = free_port()
    env = clean_env()
    proc = subprocess.Popen(
        [sys.executable, "-m", "notarium", "-v", "serve", str(directory), "--port", str(port), "--recover"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
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
        wait_for(rf"recovering https://127\.0\.0\.1:{port}")
        cli_env = {
            **env,
            "HOME": str(tmp_path),
            "NOTARIUM_ENDPOINT": f"https://127.0.0.1:{port}",
            "NOTARIUM_SERVICE_CERT": str(directory / "service_cert.pem"),
        }

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "notarium", "recovery", *args],
                env=cli_env,
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
                check=False,
            )

        share_files = {}
        for member in keys:
            share_files[member] = tmp_path / f"{member[:8]}.share"
            got = cli(
                "share", str(share_files[member]), "--member-id", member, "--member-enc-key", str(key_files[member])
            )
            assert got.returncode == 0, got.stderr
            assert share_files[member].stat().st_mode & 0o077 == 0
        a, b, _c = sorted(keys)
        wrong = cli("submit", str(share_files[b]), "--member-id", a, "--json")
        assert wrong.returncode == 1
        assert "InvalidRecoveryShare" in wrong.stderr
        status = cli("status", "--json")
        assert json.loads(status.stdout)["submitted"] == 0
        first = cli("submit", str(share_files[a]), "--member-id", a, "--json")
        assert first.returncode == 0, first.stderr
        assert json.loads(first.stdout)["status"] == "WaitingForRecoveryShares"
        assert (
            requests.get(
                f"https://127.0.0.1:{port}/app/transactions/{next(iter(written))}",
                verify=cli_env["NOTARIUM_SERVICE_CERT"],
                timeout=10,
            ).status_code
            == 503
        )  # nothing else is served while recovering
        second = cli("submit", str(share_files[b]), "--member-id", b, "--json")
        assert second.returncode == 0, second.stderr
        assert json.loads(second.stdout)["status"] == "Open"

        wait_for(rf"serving https://127\.0\.0\.1:{port}")
        new_cert = directory / "service_cert.pem"  # the recovered service has a new identity
        assert new_cert.read_bytes() != old_cert_pem
        session = requests.Session()
        session.cert = str(directory / "user0_combined.pem")
        receipts = []
        for txid, contents in written.items():
            url = f"https://127.0.0.1:{port}/app/transactions/{txid}"
            r = session.get(url, params={"collectionId": "drill"}, verify=str(new_cert), timeout=10)
            assert r.status_code == 200, r.text
            assert r.json()["entry"]["contents"] == contents
            r = session.get(url + "/receipt", verify=str(new_cert), timeout=10)
            assert r.status_code == 200, r.text
            receipts.append(r.json())
        cert = x509.load_pem_x509_certificate(new_cert.read_bytes())
        for body in receipts:  # old receipts verify against the new certificate, through the endorsement
            assert body["receipt"]["serviceEndorsements"]
            verify_json_receipt(body["receipt"], cert, application_claims=body["applicationClaims"])
        for oracle in ("acl1", "acl2"):
            cases = [JsonCase(b["receipt"], b["applicationClaims"]) for b in receipts]
            assert all(v.ok for v in sdk_verify_receipts(oracle, cases, new_cert)), oracle
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        time.sleep(0.1)  # the reader thread sees the end of the output
        if proc.stdout is not None:
            proc.stdout.close()
    with open_ledger(directory) as led:  # the public write came through too, in clear, committed
        assert led.status(public) == TxStatus.COMMITTED
    assert any(b"public value" in f.read_bytes() for f in (directory / "ledger").iterdir())
    assert audit(find_target(directory)).transactions > len(written)  # pinned to the new certificate
    validation = ccf_validate(directory / "ledger", directory / "service_cert.pem")
    assert validation.ok, validation
    output = "".join(lines)
    for member, path in share_files.items():
        assert path.read_text().strip() not in output, f"the share of {member[:8]} was logged"
