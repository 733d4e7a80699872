"""A disaster-recovery drill over HTTP: a three-member consortium (formed by signed proposals;
recovery threshold 2) and a ledger with private entries and public state; the sealed ledger
secret is deleted; `notarium serve --recover` waits; members fetch their encrypted shares and
decrypt them locally (`notarium recovery share`), a wrong share is refused at once, two of
three shares restore the ledger secrets (`notarium recovery submit`), and the service opens on the same port under a new
service identity that endorses the previous one: every old entry is readable, old transactions'
receipts verify against the new certificate (notarium and the Azure SDK 1.1.1 and 2.0.0b2),
`notarium audit` pinned to the new certificate and the `ccf` package's validator accept the files.
No share or secret appears in the server's output."""

from __future__ import annotations

import json
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

from integration.oracle import JsonCase, ccf_validate, sdk_verify_receipts
from integration.server import clean_env, running
from integration.test_governance import API, PROPOSALS, Member, new_member
from integration.test_ops import assert_no_secrets, secrets_of
from notarium.auditing import audit, find_target
from notarium.ledger import init_service, open_ledger
from notarium.ledger.identity import cert_pem, load_cert, load_private_ec, private_pem
from notarium.recovery.records import scan_recovery_records
from notarium.verify import verify_json_receipt

TIMEOUT = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def form_consortium(directory: Path, tmp_path: Path) -> tuple[dict[str, Path], dict[str, Path], dict[str, str]]:
    """member0 adds member1 and member2 (with encryption keys) and sets the recovery threshold to 2,
    by signed proposals; entries and a user are written. Returns the members' certificate and
    encryption-key files by id, and the entries written by TxId."""
    member0 = Member(load_cert(directory / "member0_cert.pem"), load_private_ec(directory / "member0_privk.pem"))
    others = [new_member("member1"), new_member("member2")]
    certs = {member0.id: directory / "member0_cert.pem"}
    enc_keys = {member0.id: directory / "member0_enc_privk.pem"}
    for n, m in enumerate(others, start=1):
        certs[m.id] = tmp_path / f"member{n}_cert.pem"
        certs[m.id].write_bytes(cert_pem(m.cert))
        assert m.enc_key is not None
        enc_keys[m.id] = tmp_path / f"member{n}_enc_privk.pem"
        enc_keys[m.id].write_bytes(private_pem(m.enc_key))
    with running(directory) as srv:
        s = requests.Session()
        s.trust_env = False
        s.verify = str(srv.service_cert)

        def passed(*actions: dict[str, object]) -> None:
            r = s.post(
                srv.url + PROPOSALS + ":create",
                data=member0.sign("proposal", {"actions": list(actions)}),
                params=API,
                headers={"Content-Type": "application/cose"},
                timeout=30,
            )
            assert r.status_code == 200, r.text
            pid = r.json()["proposalId"]
            r = s.post(
                f"{srv.url}{PROPOSALS}/{pid}/ballots/{member0.id}:submit",
                data=member0.sign("ballot", {"ballot": True}, pid),
                params=API,
                headers={"Content-Type": "application/cose"},
                timeout=30,
            )
            assert r.status_code == 200, r.text
            assert r.json()["proposalState"] == "Accepted"

        passed(*(m.set_member() for m in others))
        passed({"name": "set_recovery_threshold", "args": {"recovery_threshold": 2}})
        deadline = time.monotonic() + TIMEOUT
        while (record := scan_recovery_records(directory / "ledger")[0]) is None or record.threshold != 2:
            assert time.monotonic() < deadline, "the shares were not re-issued"
            time.sleep(0.05)
        assert set(record.members) == set(certs)

        s.cert = str(srv.admin_pem)
        written = {}
        for i in range(5):
            params = {"collectionId": "drill", "tags": "even" if i % 2 == 0 else "odd"}
            r = s.post(srv.url + "/app/transactions", params=params, json={"contents": f"entry {i}"})
            assert r.status_code == 200, r.text
            written[r.headers["x-ms-ccf-transaction-id"]] = f"entry {i}"
        r = s.patch(  # a public write: users are public ledger state
            srv.url + "/app/users/" + READER_ID,
            data=json.dumps({"assignedRole": "Reader"}),
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert r.status_code == 200, r.text
        assert srv.stop() == 0
    return certs, enc_keys, written


READER_ID = "5e2f3a4b-0000-4000-8000-00000000d111"


def test_disaster_recovery_drill(tmp_path: Path) -> None:
    directory = tmp_path / "ledger"
    init_service(directory)
    certs, enc_keys, written = form_consortium(directory, tmp_path)
    secrets = secrets_of(directory, [])  # what must never be logged, the ledger secret included
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
        for member in certs:
            share_files[member] = tmp_path / f"{member[:8]}.share"
            enc_key = str(enc_keys[member])
            got = cli(
                "share", str(share_files[member]), "--member-cert", str(certs[member]), "--member-enc-key", enc_key
            )
            assert got.returncode == 0, got.stderr
            assert share_files[member].stat().st_mode & 0o077 == 0
        a, b, _c = sorted(certs)
        wrong = cli("submit", str(share_files[b]), "--member-cert", str(certs[a]), "--json")
        assert wrong.returncode == 1
        assert "InvalidRecoveryShare" in wrong.stderr
        status = cli("status", "--json")
        assert json.loads(status.stdout)["submitted"] == 0
        first = cli("submit", str(share_files[a]), "--member-cert", str(certs[a]), "--json")
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
        second = cli("submit", str(share_files[b]), "--member-cert", str(certs[b]), "--json")
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
        # the index finds them by collection and by tag as before
        api = {"api-version": "2022-05-13"}
        r = session.get(f"https://127.0.0.1:{port}/app/collections", params=api, verify=str(new_cert), timeout=10)
        assert {"collectionId": "drill"} in r.json()["collections"], r.text
        url = f"https://127.0.0.1:{port}/app/transactions"
        r = session.get(url, params={**api, "collectionId": "drill"}, verify=str(new_cert), timeout=10)
        assert [e["transactionId"] for e in r.json()["entries"]] == list(written), r.text
        r = session.get(url, params={**api, "collectionId": "drill", "tag": "odd"}, verify=str(new_cert), timeout=10)
        assert [e["contents"] for e in r.json()["entries"]] == ["entry 1", "entry 3"], r.text
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
    with open_ledger(directory) as led:  # the public state came through too
        users = led.state("public:notarium.users").values()
        assert any(f'"userId":"{READER_ID.lower()}"'.encode() in record for record in users)
    assert audit(find_target(directory)).transactions > len(written)  # pinned to the new certificate
    validation = ccf_validate(directory / "ledger", directory / "service_cert.pem")
    assert validation.ok, validation
    output = "".join(lines)
    for member, path in share_files.items():
        assert path.read_text().strip() not in output, f"the share of {member[:8]} was logged"
    assert_no_secrets(output, secrets)
