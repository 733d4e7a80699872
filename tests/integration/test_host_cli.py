"""`notarium host` and `notarium ledgers` as an operator uses them: create a ledger from the command line,
use it with notarium's own client at the URIs the host returned, restart the host (the ledger is
served again, its entries intact), delete the ledger, and watch the purge free its name once the
retention (here 0 days) has passed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from integration.server import clean_env, new_identity, running


def cli(*args: str, host_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**clean_env(), "NOTARIUM_HOST_DIR": str(host_dir)}
    return subprocess.run(
        [sys.executable, "-m", "notarium", *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def administrator(tmp_path: Path) -> tuple[Path, Path]:
    """A new identity's combined PEM (for the client) and its certificate alone (for ARM)."""
    admin, _ = new_identity(tmp_path, "admin")
    cert = tmp_path / "admin_cert.pem"
    cert.write_text(admin.read_text().split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n")
    return admin, cert


def client_connection(host_dir: Path, props: dict[str, Any], admin: Path, bundle: Path) -> tuple[str, ...]:
    """notarium's client options for a hosted ledger: its returned URI, and its identity document
    (fetched pinning the host CA) as the service certificate."""
    pinned = ssl.create_default_context(cafile=str(host_dir / "tls" / "ca_cert.pem"))
    identity = httpx.get(props["identityServiceUri"], verify=pinned, timeout=10).json()
    bundle.write_text(identity["ledgerTlsCertificate"])
    return ("--endpoint", props["ledgerUri"], "--service-cert", str(bundle), "--cert", str(admin))


def test_operator_workflow(tmp_path: Path) -> None:
    host_dir = tmp_path / "host"
    admin, cert = administrator(tmp_path)
    args = ("--retention-days", "0", "--purge-interval", "0.3")
    with running(host_dir, *args, command="host") as server:
        token = (host_dir / "host_token").read_text().strip()
        assert token not in "".join(server.output)
        made = cli(
            "ledgers", "create", "lone", "--admin-cert", str(cert), "--type", "public", "--json", host_dir=host_dir
        )
        assert made.returncode == 0, made.stderr
        resource = json.loads(made.stdout)
        props = resource["properties"]
        assert props["provisioningState"] == "Succeeded"
        assert props["ledgerType"] == "Public"
        assert token not in made.stdout + made.stderr

        bad = cli("ledgers", "create", "bad_name", "--admin-cert", str(cert), host_dir=host_dir)
        assert bad.returncode == 1
        assert "InvalidResourceName" in bad.stderr
        no_admin = cli("ledgers", "create", "nobody", host_dir=host_dir)
        assert no_admin.returncode == 2

        listed = cli("ledgers", "list", host_dir=host_dir)
        assert listed.returncode == 0, listed.stderr
        assert "lone  Public  Succeeded  group=default" in listed.stdout
        assert props["ledgerUri"] in listed.stdout

        # notarium's own client at the returned URIs, pinning the identity document
        bundle = tmp_path / "lone_identity.pem"
        connection = client_connection(host_dir, props, admin, bundle)
        appended = cli("append", "kept across restarts", *connection, "--json", host_dir=host_dir)
        assert appended.returncode == 0, appended.stdout + appended.stderr
        txid = json.loads(appended.stdout)["transactionId"]
        receipt = cli("receipt", txid, *connection, host_dir=host_dir)
        assert receipt.returncode == 0, receipt.stdout + receipt.stderr
        assert server.stop() == 0

    with running(host_dir, *args, command="host") as server:
        shown = cli("ledgers", "show", "lone", "--json", host_dir=host_dir)
        assert shown.returncode == 0, shown.stderr
        props = json.loads(shown.stdout)["properties"]
        assert props["provisioningState"] == "Succeeded"
        connection = ("--endpoint", props["ledgerUri"], "--service-cert", str(bundle), "--cert", str(admin))
        got = cli("get", txid, *connection, "--json", host_dir=host_dir)
        assert got.returncode == 0, got.stdout + got.stderr
        assert json.loads(got.stdout)["entry"]["contents"] == "kept across restarts"

        unconfirmed = cli("ledgers", "delete", "lone", host_dir=host_dir)
        assert unconfirmed.returncode == 2
        deleted = cli("ledgers", "delete", "lone", "--yes", host_dir=host_dir)
        assert deleted.returncode == 0, deleted.stderr
        gone = cli("get", txid, *connection, host_dir=host_dir)
        assert gone.returncode == 1
        assert "LedgerNotFound" in gone.stderr or "404" in gone.stderr, gone.stderr
        # retention 0: the next purge removes the files and frees the name
        deadline = time.monotonic() + 20
        while (host_dir / "ledgers" / "lone").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not (host_dir / "ledgers" / "lone").exists()
        events = [json.loads(line)["event"] for line in (host_dir / "events.jsonl").read_text().splitlines()]
        assert events == ["create", "created", "delete", "deleted", "purged"]
        again = cli("ledgers", "create", "LONE", "--admin-cert", str(cert), host_dir=host_dir)
        assert again.returncode == 0, again.stderr
        assert server.stop() == 0


def _engine_pids(host_pid: int) -> list[int]:
    """The host's ledger engine processes (children running notarium.server.engine)."""
    children = Path(f"/proc/{host_pid}/task/{host_pid}/children").read_text().split()
    found = []
    for pid in map(int, children):
        with contextlib.suppress(OSError):
            if b"notarium.server.engine" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
    return found


def test_a_dead_engine_is_started_again(tmp_path: Path) -> None:
    host_dir = tmp_path / "host"
    admin, cert = administrator(tmp_path)
    with running(host_dir, command="host") as server:
        made = cli("ledgers", "create", "phoenix", "--admin-cert", str(cert), "--json", host_dir=host_dir)
        assert made.returncode == 0, made.stderr
        props = json.loads(made.stdout)["properties"]
        connection = client_connection(host_dir, props, admin, tmp_path / "identity.pem")
        appended = cli("append", "before the crash", *connection, "--json", host_dir=host_dir)
        assert appended.returncode == 0, appended.stdout + appended.stderr
        txid = json.loads(appended.stdout)["transactionId"]
        (engine,) = _engine_pids(server.process.pid)
        os.kill(engine, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while (got := cli("get", txid, *connection, "--json", host_dir=host_dir)).returncode != 0:
            assert time.monotonic() < deadline, got.stderr
            time.sleep(0.2)
        assert json.loads(got.stdout)["entry"]["contents"] == "before the crash"
        (again,) = _engine_pids(server.process.pid)
        assert again != engine
        after = cli("append", "after the crash", *connection, "--json", host_dir=host_dir)
        assert after.returncode == 0, after.stdout + after.stderr
        assert any("its engine exited" in line for line in server.output)
        assert server.stop() == 0
