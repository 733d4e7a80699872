"""The `notarium` CLI driving a real `notarium serve`, as a new user would from the README: the
profile the server prints, then append, get, list, status, receipt (JSON and COSE), sync, users,
export, audit, and verify-receipt offline once the server is gone. Exit codes and messages of the
failures a user meets: an unreachable ledger, a role that does not allow it, a tampered receipt.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from integration.server import clean_env, new_identity, running
from notarium.ledger import init_service

EXIT_FAILED, EXIT_USAGE, EXIT_VERIFY, EXIT_UNREACHABLE = 1, 2, 3, 4
_PROFILE = re.compile(r"export NOTARIUM_PROFILE=(\S+)")


def cli(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "notarium", *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        input=stdin,
        timeout=60,
    )


def ok_json(*args: str, env: dict[str, str]) -> Any:
    proc = cli(*args, "--json", env=env)
    assert proc.returncode == 0, f"{args}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    body = json.loads(proc.stdout)
    assert body["ok"] is True
    return body


@pytest.fixture
def ledger_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "ledger"
    init_service(directory)
    return directory


def test_the_readme_workflow(ledger_dir: Path, tmp_path: Path) -> None:
    with running(ledger_dir, "--chunk-size", "4000") as srv:
        m = _PROFILE.search("".join(srv.output))
        assert m, srv.output
        env = {**clean_env(), "NOTARIUM_PROFILE": m.group(1), "HOME": str(tmp_path)}

        first = ok_json("append", "hello notarium", "-c", "docs", "-t", "greeting", env=env)
        txid = first["transactionId"]
        assert first["state"] == "Committed"
        from_stdin = cli("append", "-", "-c", "docs", env=env, stdin="from standard input")
        assert from_stdin.returncode == 0, from_stdin.stderr
        assert re.fullmatch(r"\d+\.\d+ Committed\n", from_stdin.stdout)
        for i in range(40):  # enough for a few completed chunks at --chunk-size 4000
            ok_json("append", f"bulk {i}", "-c", "bulk", env=env)

        assert ok_json("get", txid, env=env)["entry"]["contents"] == "hello notarium"
        assert cli("get", txid, env=env).stdout == "hello notarium\n"
        listed = ok_json("list", "-c", "docs", env=env)["entries"]
        assert [e["contents"] for e in listed] == ["hello notarium", "from standard input"]
        assert listed[0]["tags"] == ["greeting"]
        human = cli("list", "-c", "docs", env=env)
        assert human.returncode == 0
        assert "hello notarium" in human.stdout
        assert ok_json("status", txid, env=env)["state"] == "Committed"

        receipt_file = tmp_path / "receipt.json"
        saved = ok_json("receipt", txid, "-o", str(receipt_file), env=env)
        assert saved["verified"] is True
        assert json.loads(receipt_file.read_text())["transactionId"] == txid
        cose_file = tmp_path / "receipt.cose"
        assert ok_json("receipt", txid, "--cose", "-o", str(cose_file), env=env)["verified"] is True
        assert cose_file.stat().st_size > 100

        first_sync = ok_json("sync", env=env)
        assert first_sync["previous"] is None
        ok_json("append", "one more", env=env)
        second_sync = ok_json("sync", env=env)
        assert second_sync["previous"] == first_sync["trusted"]
        assert second_sync["trusted"]["treeSize"] > first_sync["trusted"]["treeSize"]

        reader_pem, reader_id = new_identity(tmp_path, "reader")
        added = ok_json("users", "add", reader_id, "--role", "Reader", env=env)
        assert added["roles"] == ["Reader"]
        assert reader_id in {u["userId"] for u in ok_json("users", "list", env=env)["users"]}
        as_reader = {**env, "NOTARIUM_CERT": str(reader_pem)}
        assert ok_json("get", txid, env=as_reader)["entry"]["contents"] == "hello notarium"
        refused = cli("append", "not allowed", env=as_reader)
        assert refused.returncode == EXIT_FAILED
        assert "NotAllowed" in refused.stderr
        assert "hint:" in refused.stderr
        ok_json("users", "remove", reader_id, env=env)
        assert reader_id not in {u["userId"] for u in ok_json("users", "list", env=env)["users"]}

        out = tmp_path / "export"
        exported = ok_json("export", str(out), env=env)
        assert exported["downloaded"] >= 2
        again = ok_json("export", str(out), env=env)
        assert again["downloaded"] == 0
        assert again["skipped"] == exported["downloaded"]
        audited = cli("audit", str(out), "--json", env=env)
        assert audited.returncode == 0, audited.stdout + audited.stderr
        assert json.loads(audited.stdout)["ok"] is True

    # the server is gone: receipts still verify, offline, against the service certificate alone
    offline = {k: v for k, v in env.items() if not k.startswith("NOTARIUM_")}
    cert = str(ledger_dir / "service_cert.pem")
    good = cli("verify-receipt", str(receipt_file), "--service-cert", cert, env=offline)
    assert good.returncode == 0, good.stderr
    assert f"receipt of {txid} verifies" in good.stdout
    tampered = json.loads(receipt_file.read_text())
    tampered["applicationClaims"][0]["ledgerEntry"]["contents"] = "hello tampered"
    bad_file = tmp_path / "tampered.json"
    bad_file.write_text(json.dumps(tampered))
    bad = cli("verify-receipt", str(bad_file), "--service-cert", cert, "--json", env=offline)
    assert bad.returncode == EXIT_VERIFY
    assert json.loads(bad.stdout)["ok"] is False
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    assert cli("verify-receipt", str(garbage), "--service-cert", cert, env=offline).returncode == EXIT_VERIFY
    unreachable = cli("status", txid, env=env)  # the profile still names the stopped server
    assert unreachable.returncode == EXIT_UNREACHABLE
    assert "hint:" in unreachable.stderr


def test_usage_errors_say_what_to_do(tmp_path: Path) -> None:
    env = {**clean_env(), "HOME": str(tmp_path)}
    env.pop("NOTARIUM_PROFILE", None)
    missing = cli("status", "2.3", env=env)
    assert missing.returncode == EXIT_FAILED
    assert "no ledger endpoint" in missing.stderr
    assert "NOTARIUM_PROFILE" in missing.stderr
    bad_txid = cli("status", "nonsense", "--endpoint", "https://127.0.0.1:1", "--service-cert", os.devnull, env=env)
    assert bad_txid.returncode in (EXIT_FAILED, EXIT_USAGE)
    assert "Traceback" not in bad_txid.stderr
