"""A running ``notarium host`` for the per-ledger tests: create ledgers through the ARM API, and speak to
their data planes with an Administrator's certificate, pinning each ledger's identity document."""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from integration.server import Server, new_identity, running

SUBSCRIPTION = "00000000-0000-0000-0000-0000000000b2"
GROUP = "rg-limits"
API = {"api-version": "2022-05-13"}
DATA_API = {"api-version": "2024-01-26-preview"}


class HostKit:
    def __init__(self, server: Server, work: Path) -> None:
        self.server = server
        self.dir = server.directory
        self.url = server.url
        self.work = work
        self.ca = self.dir / "tls" / "ca_cert.pem"
        self.token = (self.dir / "host_token").read_text().strip()
        self.admin, _ = new_identity(work, "admin")
        self.admin_cert = self.admin.read_text().split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
        pinned = ssl.create_default_context(cafile=str(self.ca))
        self.mgmt = httpx.Client(verify=pinned, headers={"Authorization": f"Bearer {self.token}"}, timeout=60)
        self._clients: dict[str, httpx.Client] = {}

    def arm(self, name: str = "") -> str:
        path = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}/providers/Microsoft.ConfidentialLedger/ledgers"
        return f"{self.url}{path}{'/' + name if name else ''}"

    def create(self, name: str, tags: dict[str, str] | None = None) -> httpx.Response:
        """PUT a ledger (whose Administrator is ``self.admin``) and wait for its operation."""
        body: dict[str, Any] = {
            "location": "local",
            "properties": {
                "ledgerType": "Private",
                "certBasedSecurityPrincipals": [{"cert": self.admin_cert, "ledgerRoleName": "Administrator"}],
            },
        }
        if tags is not None:
            body["tags"] = tags
        r = self.mgmt.put(self.arm(name), params=API, json=body)
        if r.status_code != 201:
            return r
        operation = r.headers["Azure-AsyncOperation"]
        for _ in range(600):
            status = self.mgmt.get(operation).json()["status"]
            if status != "InProgress":
                assert status == "Succeeded", status
                return r
            time.sleep(0.1)
        raise AssertionError(f"creating {name} did not finish")

    def patch_tags(self, name: str, tags: dict[str, str]) -> httpx.Response:
        return self.mgmt.patch(self.arm(name), params=API, json={"tags": tags})

    def identity_bundle(self, name: str) -> Path:
        pinned = ssl.create_default_context(cafile=str(self.ca))
        identity = httpx.get(f"{self.url}/ledgerIdentity/{name}", verify=pinned, timeout=10).json()
        path = self.work / f"{name}_identity.pem"
        path.write_text(identity["ledgerTlsCertificate"])
        return path

    def pinned(self) -> ssl.SSLContext:
        """TLS trusting the host's CA, without a client certificate."""
        return ssl.create_default_context(cafile=str(self.ca))

    def ledger(self, name: str, *, fresh: bool = False) -> httpx.Client:
        """A client of the ledger's data plane (base URL ``/ledgers/{name}``), as its Administrator
        (``fresh``: a new one, its identity document fetched again)."""
        if fresh or name not in self._clients:
            ctx = ssl.create_default_context(cafile=str(self.identity_bundle(name)))
            ctx.load_cert_chain(str(self.admin))
            client = httpx.Client(base_url=f"{self.url}/ledgers/{name}", verify=ctx, timeout=30, params=DATA_API)
            if not fresh:
                self._clients[name] = client
            return client
        return self._clients[name]

    def metrics(self) -> httpx.Response:
        return self.mgmt.get(f"{self.url}/metrics")

    def close(self) -> None:
        self.mgmt.close()
        for client in self._clients.values():
            client.close()


@contextmanager
def host_kit(work: Path, *args: str) -> Iterator[HostKit]:
    with running(work / "host", *args, command="host") as server:
        kit = HostKit(server, work)
        try:
            yield kit
        finally:
            kit.close()


def append(client: httpx.Client, contents: str, collection: str = "c") -> httpx.Response:
    return client.post("/app/transactions", params={"collectionId": collection}, json={"contents": contents})


def wait_committed(client: httpx.Client, txid: str) -> None:
    for _ in range(300):
        r = client.get(f"/app/transactions/{txid}/status")
        if r.status_code == 200 and r.json()["state"] == "Committed":
            return
        time.sleep(0.05)
    raise AssertionError(f"{txid} did not commit")
