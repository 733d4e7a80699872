"""Host processes on PostgreSQL (`notarium host DIR --store`) for the tests and the benchmark.

:class:`StoreHost` starts one real host process on a directory and a DSN; :func:`twin_dir` gives a
second process the first one's host credentials (what an operator copies: host_token, the TLS CA,
store_key). Management calls go over real TLS with the host token; data-plane calls with a
ledger Administrator's client certificate.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from integration.server import _SERVING, announced, clean_env, new_identity

SUBSCRIPTION = "00000000-0000-0000-0000-0000000000b2"
GROUP = "rg-store"
API = "api-version=2022-05-13"
SHARED = ("host_token", "tls/ca_cert.pem", "tls/ca_privk.pem", "store_key")


def twin_dir(first: Path, second: Path) -> None:
    """Give ``second`` (a new host directory) the host credentials of ``first``."""
    for rel in SHARED:
        target = second / rel
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.copy2(first / rel, target)


@dataclass
class StoreHost:
    directory: Path
    dsn: str
    args: tuple[str, ...] = ()
    process: subprocess.Popen[str] | None = None
    url: str = ""
    output: list[str] = field(default_factory=list)
    earlier: list[subprocess.Popen[str]] = field(default_factory=list)  # processes killed before

    def start(self, timeout: float = 60) -> StoreHost:
        if self.process is not None:
            self.earlier.append(self.process)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "notarium",
                "-v",
                "host",
                str(self.directory),
                "--port",
                "0",
                "--store",
                self.dsn,
                *self.args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=clean_env(),
        )
        self.url, self.output = announced(self.process, _SERVING, "the host", timeout)
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for proc in (*self.earlier, self.process):
            if proc.stdout is not None:
                with contextlib.suppress(Exception):
                    proc.stdout.close()
        return self.process.returncode

    @property
    def ca(self) -> Path:
        return self.directory / "tls" / "ca_cert.pem"

    @property
    def token(self) -> str:
        return (self.directory / "host_token").read_text().strip()

    def client(self, cert: Path | None = None, *, token: bool = False, timeout: float = 30) -> httpx.Client:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        if cert is not None:
            ctx.load_cert_chain(str(cert))
        headers = {"Authorization": f"Bearer {self.token}"} if token else {}
        return httpx.Client(verify=ctx, headers=headers, timeout=timeout)

    def arm(self, name: str = "", group: str = GROUP) -> str:
        path = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{group}/providers/Microsoft.ConfidentialLedger/ledgers"
        return f"{self.url}{path}{'/' + name if name else ''}?{API}"

    def log(self) -> str:
        return "".join(self.output)


def ledger_body(admin_combined: Path) -> dict[str, Any]:
    cert = admin_combined.read_text().split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
    return {
        "location": "local",
        "properties": {
            "ledgerType": "Private",
            "certBasedSecurityPrincipals": [{"cert": cert, "ledgerRoleName": "Administrator"}],
        },
    }


def until(
    what: str,
    check: Callable[[], Any],
    timeout: float = 60,
    every: float = 0.1,
    diagnose: Callable[[], str] | None = None,
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (httpx.HTTPError, OSError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(every)
    detail = f"\n{diagnose()}" if diagnose is not None else ""
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r}){detail}")


def operation_on(host: StoreHost, op_url: str) -> dict[str, Any]:
    """The operation ``op_url`` (whichever process made it) asked of ``host``."""
    path = op_url.split("/subscriptions/", 1)[1]
    with host.client(token=True) as http:
        r = http.get(f"{host.url}/subscriptions/{path}")
        r.raise_for_status()
        body: dict[str, Any] = r.json()
        return body


def create(host: StoreHost, name: str, admin: Path, *, wait: bool = True, group: str = GROUP) -> str:
    """PUT a ledger through ``host``; its operation URL (waited for, unless ``wait`` is False)."""
    with host.client(token=True) as http:
        r = http.put(host.arm(name, group), json=ledger_body(admin))
        assert r.status_code == 201, r.text
        op = r.headers["Azure-AsyncOperation"]
    if wait:
        done = until(
            f"{name} created", lambda: operation_on(host, op)["status"] != "InProgress" and operation_on(host, op)
        )
        assert done["status"] == "Succeeded", done
    return op


def admin_of(work: Path, name: str) -> Path:
    path = work / f"{name}-admin_combined.pem"
    if not path.exists():
        new_identity(work, f"{name}-admin")
    return path


def append(host: StoreHost, name: str, admin: Path, contents: str, timeout: float = 10) -> httpx.Response:
    with host.client(admin, timeout=timeout) as http:
        return http.post(
            f"{host.url}/ledgers/{name}/app/transactions?api-version=2024-12-09-preview",
            json={"contents": contents},
        )


def status(host: StoreHost, name: str, admin: Path, txid: str) -> str:
    with host.client(admin) as http:
        r = http.get(f"{host.url}/ledgers/{name}/app/transactions/{txid}/status?api-version=2024-12-09-preview")
        if r.status_code == 404 and r.json()["error"]["code"] == "InvalidTransactionId":
            return "Invalid" if "(Invalid)" in r.json()["error"]["message"] else "Unknown"  # ACL: 404 for both
        r.raise_for_status()
        return str(r.json()["state"])


def node_state(host: StoreHost, name: str) -> dict[str, Any]:
    with host.client() as http:
        r = http.get(f"{host.url}/ledgers/{name}/node/state")
        r.raise_for_status()
        body: dict[str, Any] = r.json()
        return body


def committed_append(host: StoreHost, name: str, admin: Path, contents: str) -> str | None:
    """Append and wait for the commit: the TxId once Committed, None if refused or not committed."""
    try:
        r = append(host, name, admin, contents)
    except httpx.HTTPError:
        return None
    if r.status_code != 200:
        return None
    txid = r.headers["x-ms-ccf-transaction-id"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            state = status(host, name, admin, txid)
        except httpx.HTTPError:
            return None
        if state == "Committed":
            return txid
        if state == "Invalid":
            return None
        time.sleep(0.02)
    return None


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1)[:3000]
