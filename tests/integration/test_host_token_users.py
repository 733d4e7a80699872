"""AAD principals of a hosted ledger are token users like any other (notarium.auth.identity): made
before the ledger trusts an issuer, they are the first issuer's users; a second issuer cannot act
as them; an ARM update of their role changes that user (it does not add a second one under the
same id). One real `notarium host` process, real TLS; the ARM calls as the management SDK makes
them (tests/integration/test_host.py runs the SDK itself)."""

from __future__ import annotations

import json
import ssl
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from integration.issuer import Issuer
from integration.server import Server, new_identity, running

SUBSCRIPTION = "00000000-0000-0000-0000-0000000000b2"
API = "api-version=2022-05-13"
TENANT = "00000000-0000-0000-0000-0000000000c3"
TIMEOUT = 60.0


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Server]:
    directory = tmp_path / "host"
    (directory / "operators").mkdir(parents=True)
    operator, _ = new_identity(tmp_path, "operator")
    cert = operator.read_text().split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
    (directory / "operators" / "operator.pem").write_text(cert)
    with running(directory, command="host") as server:
        yield server


def _client(host: Server, cert: Path | None = None, token: str | None = None) -> httpx.Client:
    ctx = ssl.create_default_context(cafile=str(host.directory / "tls" / "ca_cert.pem"))
    if cert is not None:
        ctx.load_cert_chain(str(cert))
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(verify=ctx, headers=headers, timeout=30)


def _eventually(check: Any, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_aad_principals_are_token_users_of_one_issuer(host: Server, tmp_path: Path) -> None:
    admin_pem, _ = new_identity(tmp_path, "admin")
    admin_cert = admin_pem.read_text().split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
    oid = str(uuid.uuid4())
    provider = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg/providers/Microsoft.ConfidentialLedger"
    arm = f"{host.url}{provider}/ledgers/gamma?{API}"
    token = (host.directory / "host_token").read_text().strip()
    a, b = Issuer("aad-a"), Issuer("aad-b")

    def principals(role: str) -> dict[str, Any]:
        return {
            "location": "local",
            "properties": {
                "ledgerType": "Private",
                "certBasedSecurityPrincipals": [{"cert": admin_cert, "ledgerRoleName": "Administrator"}],
                "aadBasedSecurityPrincipals": [{"principalId": oid, "tenantId": TENANT, "ledgerRoleName": role}],
            },
        }

    try:
        with _client(host, token=token) as mgmt, _client(host, cert=admin_pem) as admin:
            r = mgmt.put(arm, json=principals("Reader"))
            assert r.status_code in (200, 201), r.text
            _eventually(
                lambda: mgmt.get(arm).json()["properties"]["provisioningState"] == "Succeeded",
                "the ledger was not created",
            )
            plane = f"{host.url}/ledgers/gamma"

            def call(method: str, path: str, bearer: str | None = None, **kwargs: Any) -> httpx.Response:
                if bearer is None:
                    return admin.request(method, plane + path, **kwargs)
                with _client(host, token=bearer) as caller:
                    return caller.request(method, plane + path, **kwargs)

            for it in (a, b):
                r = call("PUT", "/app/jwtIssuers", json={"issuer": it.iss, "jwks": it.jwks()})
                assert r.status_code == 200, r.text
                if it is a:  # the first issuer: the host's AAD principal is its user
                    assert call("GET", "/app/ping", a.token(oid)).status_code == 200
            assert call("GET", "/app/ping", b.token(oid)).status_code == 401
            assert call("GET", "/app/ping", a.token(oid)).status_code == 200
            r = mgmt.patch(arm, json=principals("Contributor"))
            assert r.status_code == 200, r.text

            def promoted() -> bool:
                r = call("GET", f"/app/users/{oid}")
                assert r.status_code == 200, r.text  # one user with that id, not two
                return bool(r.json() == {"assignedRole": "Contributor", "userId": oid})

            _eventually(promoted, "the update did not change the user's role")
            r = call("POST", "/app/transactions", a.token(oid), content=json.dumps({"contents": "aad"}))
            assert r.status_code == 200, r.text
            assert call("GET", "/app/ping", b.token(oid)).status_code == 401
    finally:
        a.close()
        b.close()
