"""``notarium console --host-dir DIR``: a host's ledgers, as the portal shows them.

The console speaks the host's management API (ARM's ``Microsoft.ConfidentialLedger/ledgers``) with
the host credential from ``DIR`` (``endpoint``, ``host_token``, ``tls/ca_cert.pem``), as ``notarium
ledgers`` does. The operator manages ledgers but is not a user of any; to open a ledger's pages
the console uses its own user identity, a key and self-signed certificate kept in
``$NOTARIUM_CONSOLE_HOME`` (default ``~/.config/notarium/console``), which a ledger created here
names as an Administrator (as the portal makes its creator one). A ledger's service certificate
comes from the host's identity document, fetched over TLS pinned to the host's CA.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from notarium.client import AsyncClient
from notarium.console import pages
from notarium.console.app import PageError, form, render
from notarium.console.ledger import ROLE_NAMES, LedgerView
from notarium.host.names import NAME_RULE, valid_name

API_VERSION = "2022-05-13"
SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
GROUP = "default"
PROVIDER = "Microsoft.ConfidentialLedger"
WAIT_S = 120.0


@dataclass(frozen=True)
class ConsoleIdentity:
    """The console's own user identity (its key never leaves this machine)."""

    home: Path
    cert: Path
    key: Path

    @property
    def cert_pem(self) -> str:
        return self.cert.read_text()

    @property
    def user_id(self) -> str:
        der = x509.load_pem_x509_certificate(self.cert.read_bytes()).public_bytes(serialization.Encoding.DER)
        return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def console_identity(home: Path | None = None) -> ConsoleIdentity:
    """The console's identity in ``home``, made on first use (P-256, self-signed, key 0600)."""
    home = home or Path(os.environ.get("NOTARIUM_CONSOLE_HOME") or "~/.config/notarium/console").expanduser()
    cert, key = home / "console_cert.pem", home / "console_privk.pem"
    if not cert.exists() or not key.exists():
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        private = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "notarium console")])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(private.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=730))
            .sign(private, hashes.SHA256())
        )
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(
                private.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
        cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return ConsoleIdentity(home, cert, key)


class HostAdmin:
    """The host's management API, with the host credential."""

    def __init__(self, host_dir: Path) -> None:
        try:
            self.base = (host_dir / "endpoint").read_text().strip().rstrip("/")
            token = (host_dir / "host_token").read_text().strip()
            self.ca = host_dir / "tls" / "ca_cert.pem"
            context = ssl.create_default_context(cafile=str(self.ca))
        except OSError as exc:
            raise ValueError(
                f"{host_dir} is not a running host's directory (no {Path(exc.filename or '').name}): "
                "start `notarium host DIR` first"
            ) from None
        self.context = context
        self.http = httpx.AsyncClient(
            base_url=self.base, verify=context, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )
        self.group = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}/providers/{PROVIDER}/ledgers"

    async def request(self, method: str, url: str, body: Any = None) -> httpx.Response:
        params = None if "?" in url else {"api-version": API_VERSION}
        r = await self.http.request(method, url, params=params, json=body)
        if r.status_code >= 400:
            try:
                error = r.json()["error"]
                code, message = str(error["code"]), str(error["message"])
            except (ValueError, KeyError, TypeError):
                code, message = "HttpError", f"HTTP {r.status_code}"
            raise PageError(r.status_code, code, f"The host refused: {message}")
        return r

    async def ledgers(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        url: str | None = self.group
        while url is not None:
            page = (await self.request("GET", url)).json()
            found.extend(v for v in page.get("value", []) if isinstance(v, dict))
            link = page.get("nextLink")
            url = link if isinstance(link, str) else None
        return sorted(found, key=lambda r: str(r.get("name", "")).lower())

    async def ledger(self, name: str) -> dict[str, Any]:
        body = (await self.request("GET", f"{self.group}/{quote(name, safe='')}")).json()
        return body if isinstance(body, dict) else {}

    async def name_available(self, name: str) -> tuple[bool, str]:
        url = f"/subscriptions/{SUBSCRIPTION}/providers/{PROVIDER}/checkNameAvailability"
        body = (await self.request("POST", url, {"name": name, "type": f"{PROVIDER}/ledgers"})).json()
        return bool(body.get("nameAvailable")), str(body.get("message") or "")

    async def wait(self, response: httpx.Response) -> None:
        url = response.headers.get("Azure-AsyncOperation")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while url is not None:
            status = (await self.request("GET", url)).json()
            if status.get("status") == "Succeeded":
                return
            if status.get("status") != "InProgress":
                error = status.get("error") or {}
                raise PageError(502, str(error.get("code", "OperationFailed")), str(error.get("message")))
            if loop.time() > deadline:
                raise PageError(504, "OperationTimeout", f"The host did not finish in {WAIT_S:.0f} s.")
            await asyncio.sleep(0.2)

    async def create(self, name: str, ledger_type: str, principals: list[dict[str, str]]) -> None:
        body = {
            "location": "local",
            "properties": {"ledgerType": ledger_type, "certBasedSecurityPrincipals": principals},
        }
        await self.wait(await self.request("PUT", f"{self.group}/{quote(name, safe='')}", body))

    async def delete(self, name: str) -> None:
        r = await self.request("DELETE", f"{self.group}/{quote(name, safe='')}")
        if r.status_code != 204:
            await self.wait(r)

    async def identity(self, name: str) -> bytes:
        """The ledger's identity document: its service certificate first, then the host's TLS CA."""
        body = (await self.request("GET", f"/ledgerIdentity/{quote(name, safe='')}")).json()
        pem = body.get("ledgerTlsCertificate") if isinstance(body, dict) else None
        if not isinstance(pem, str):
            raise PageError(502, "InvalidIdentity", "The host's identity document holds no certificate.")
        return pem.encode()


class HostConsole:
    def __init__(self, host_dir: Path) -> None:
        self.admin = HostAdmin(host_dir)
        self.me = console_identity()
        self.views: dict[str, LedgerView] = {}

    async def view(self, request: web.Request) -> LedgerView:
        name = request.match_info["ledger"]
        if not valid_name(name):
            raise PageError(404, "LedgerNotFound", "No such ledger.")
        resource = await self.admin.ledger(name)
        uri = resource.get("properties", {}).get("ledgerUri")
        if not isinstance(uri, str):
            raise PageError(409, "LedgerNotReady", f"Ledger {name} is not served yet.")
        bundle = await self.admin.identity(name)
        known = self.views.get(name)
        if known is not None and known.client.service_cert_pem == bundle:
            return known
        if known is not None:  # recreated under the same name: another ledger
            await known.close()
        state_dir = self.me.home / "state"
        state_dir.mkdir(exist_ok=True, mode=0o700)
        digest = hashlib.sha256(bundle).hexdigest()[:16]
        client = AsyncClient(
            uri, bundle, cert=self.me.cert, key=self.me.key, state_file=state_dir / f"{name.lower()}-{digest}.json"
        )
        view = LedgerView(client, name=name, base=f"/ledgers/{name}")
        self.views[name] = view
        return view

    async def close(self) -> None:
        for view in self.views.values():
            await view.close()
        await self.admin.http.aclose()


HOST: web.AppKey[HostConsole] = web.AppKey("host_console", HostConsole)


def setup(host_dir: Path) -> Callable[[web.Application], None]:
    host = HostConsole(host_dir)

    def install(app: web.Application) -> None:
        app[HOST] = host
        r = app.router
        r.add_get("/", ledgers)
        r.add_get("/ledgers/new", new_form)
        r.add_post("/ledgers/new", create)
        r.add_get("/ledgers/check-name", check_name)
        r.add_get("/ledgers/{ledger}/delete", delete_form)
        r.add_post("/ledgers/{ledger}/delete", delete)
        pages.register(app, "/ledgers/{ledger}", host.view)

        async def close(_app: web.Application) -> None:
            await host.close()

        app.on_cleanup.append(close)

    return install


def _principal_ids(resource: dict[str, Any]) -> list[str]:
    out = []
    for p in resource.get("properties", {}).get("certBasedSecurityPrincipals", []) or []:
        if isinstance(p, dict) and isinstance(p.get("cert"), str):
            out.append(p["cert"].strip())
    return out


async def ledgers(request: web.Request) -> web.StreamResponse:
    host = request.app[HOST]
    found = await host.admin.ledgers()
    mine = host.me.cert_pem.strip()
    rows = [
        {
            "name": str(r.get("name", "")),
            "type": str(r.get("properties", {}).get("ledgerType", "")),
            "state": str(r.get("properties", {}).get("provisioningState", "")),
            "uri": str(r.get("properties", {}).get("ledgerUri", "")),
            "mine": mine in _principal_ids(r),
        }
        for r in found
    ]
    return render(request, "ledgers.html", rows=rows, me=host.me.user_id, host_url=host.admin.base)


async def new_form(request: web.Request) -> web.StreamResponse:
    return render(request, "ledger_new.html", rule=NAME_RULE, roles=ROLE_NAMES, values={})


async def check_name(request: web.Request) -> web.StreamResponse:
    """Checked as the user types: the name rule here, then the host's own answer."""
    host = request.app[HOST]
    name = request.query.get("name", "")
    if not name:
        ok, message = False, ""
    elif not valid_name(name):
        ok, message = False, f"A ledger name is {NAME_RULE}."
    else:
        ok, message = await host.admin.name_available(name)
        message = f"{name} is available." if ok else message
    return render(request, "name_check.html", ok=ok, message=message)


async def create(request: web.Request) -> web.StreamResponse:
    host = request.app[HOST]
    values = await form(request)
    name = values.get("name", "").strip()
    if not valid_name(name):
        raise PageError(400, "InvalidResourceName", f"A ledger name is {NAME_RULE}.")
    ledger_type = "Public" if values.get("type") == "Public" else "Private"
    principals = [{"cert": host.me.cert_pem, "ledgerRoleName": "Administrator"}]
    extra = values.get("cert", "").strip()
    if extra:
        role = values.get("role", "Reader")
        if role not in ROLE_NAMES:
            raise PageError(400, "InvalidRequestContent", f"The role must be one of {', '.join(ROLE_NAMES)}.")
        try:
            x509.load_pem_x509_certificate(extra.encode())
        except ValueError:
            raise PageError(
                400, "InvalidRequestContent", "The other user's certificate is not a PEM certificate."
            ) from None
        principals.append({"cert": extra, "ledgerRoleName": role})
    await host.admin.create(name, ledger_type, principals)
    raise web.HTTPSeeOther("/")


async def delete_form(request: web.Request) -> web.StreamResponse:
    host = request.app[HOST]
    name = request.match_info["ledger"]
    resource = await host.admin.ledger(name)
    return render(request, "ledger_delete.html", name=str(resource.get("name", name)))


async def delete(request: web.Request) -> web.StreamResponse:
    host = request.app[HOST]
    name = request.match_info["ledger"]
    values = await form(request)
    if values.get("confirm", "").strip() != name:
        raise PageError(400, "ConfirmationRequired", f"Type the ledger's name ({name}) to confirm its deletion.")
    await host.admin.delete(name)
    view = host.views.pop(name, None)
    if view is not None:
        await view.close()
    raise web.HTTPSeeOther("/")
