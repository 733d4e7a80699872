"""``notarium ledgers create|list|show|update|delete|recover``: manage the ledgers of a host through its
management API.

``create`` and ``update`` take a ledger's own settings (``--max-entry-bytes``, ``--requests-per-second``),
kept as the ARM tags ``notarium.maxEntryBytes`` and ``notarium.requestsPerSecond`` (docs/design/host.md);
``recover`` puts a ledger whose ledger secrets are lost into recovery (docs/operations/recovery.md).

The host is reached with the host credential: ``--host-dir DIR`` (or ``$NOTARIUM_HOST_DIR``) takes
the URL from ``DIR/endpoint``, the token from ``DIR/host_token`` and the TLS CA from
``DIR/tls/ca_cert.pem``; ``--url``, ``--token-file`` and ``--ca-cert`` set or override each. The
token is read from its file and sent only to the host, never printed.

Exit codes: 0 success; 1 the host refused or the operation failed (the ARM error code and message
are printed); 2 bad usage; 4 the host could not be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 4
API_VERSION = "2022-05-13"
DEFAULT_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
DEFAULT_GROUP = "default"
WAIT_S = 300.0
ROLES = ("Administrator", "Contributor", "Reader")
SETTINGS = (("max_entry_bytes", "notarium.maxEntryBytes"), ("requests_per_second", "notarium.requestsPerSecond"))


class HostError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "ledgers", help="create, list, show and delete the ledgers of a host (notarium host)"
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--host-dir", type=Path, metavar="DIR", help="the host's directory (default: $NOTARIUM_HOST_DIR)"
    )
    common.add_argument("--url", help="the host's URL (default: DIR/endpoint)")
    common.add_argument(
        "--token-file", type=Path, metavar="FILE", help="the management token (default: DIR/host_token)"
    )
    common.add_argument("--ca-cert", type=Path, metavar="FILE", help="the host's TLS CA (default: DIR/tls/ca_cert.pem)")
    common.add_argument(
        "--subscription", default=DEFAULT_SUBSCRIPTION, help=f"ARM subscription (default {DEFAULT_SUBSCRIPTION})"
    )
    common.add_argument(
        "--resource-group", "-g", default=DEFAULT_GROUP, help=f"ARM resource group (default {DEFAULT_GROUP})"
    )
    common.add_argument("--json", action="store_true", help="print the ARM resources as JSON (for scripts)")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    c = actions.add_parser("create", parents=[common], help="create a ledger (waits until it is served)")
    c.add_argument("name")
    c.add_argument("--type", choices=["private", "public"], default="private", help="private (default) or public")
    c.add_argument(
        "--admin-cert",
        action="append",
        default=[],
        type=Path,
        metavar="PEM",
        help="a certificate whose holder becomes an Administrator (repeatable)",
    )
    c.add_argument(
        "--cert",
        action="append",
        default=[],
        metavar="ROLE=PEM",
        help="a certificate user with a role: Administrator, Contributor or Reader (repeatable)",
    )
    c.add_argument(
        "--aad",
        action="append",
        default=[],
        metavar="OBJECT_ID[=ROLE]",
        help="a token user (object id; default role Administrator; repeatable)",
    )
    c.add_argument("--location", default=None, help="ARM location (default: the host's)")
    c.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="an ARM tag (repeatable)")
    c.add_argument("--no-wait", action="store_true", help="return once the creation has started")
    _settings_options(c)
    u = actions.add_parser("update", parents=[common], help="change a ledger's settings (its other tags are kept)")
    u.add_argument("name")
    _settings_options(u)
    r = actions.add_parser(
        "recover",
        parents=[common],
        help="put a ledger whose ledger secrets are lost into recovery (again: how far it is)",
    )
    r.add_argument("name")

    actions.add_parser(
        "list", parents=[common], help="the ledgers of the resource group (all groups with --all-groups)"
    ).add_argument("--all-groups", action="store_true", help="every ledger of the subscription")
    actions.add_parser("show", parents=[common], help="one ledger").add_argument("name")
    d = actions.add_parser(
        "delete", parents=[common], help="delete a ledger: it stops being served; its files are kept for the retention"
    )
    d.add_argument("name")
    d.add_argument("--yes", action="store_true", help="confirm: deleting a ledger is not undone by this command")
    d.add_argument("--no-wait", action="store_true", help="return once the deletion has started")
    p.set_defaults(handler=handle)


def _settings_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-entry-bytes",
        metavar="N",
        help="the ledger's largest entry contents in bytes, at most the host's --max-entry-bytes "
        "('default': the host's)",
    )
    p.add_argument(
        "--requests-per-second",
        metavar="R",
        help="the rate of the ledger's data-plane requests; beyond it they get 429 ('default': no limit)",
    )


def _with_settings(args: argparse.Namespace, tags: dict[str, str]) -> dict[str, str]:
    """``tags`` with the settings given on the command line (``default`` removes one)."""
    tags = dict(tags)
    for option, tag in SETTINGS:
        value = getattr(args, option)
        if value is None:
            continue
        for key in [k for k in tags if k.lower() == tag.lower()]:
            del tags[key]
        if value.strip().lower() != "default":
            tags[tag] = value.strip()
    return tags


class Host:
    def __init__(self, args: argparse.Namespace) -> None:
        directory = args.host_dir or (
            Path(os.environ["NOTARIUM_HOST_DIR"]) if "NOTARIUM_HOST_DIR" in os.environ else None
        )
        url = args.url
        token_file, ca = args.token_file, args.ca_cert
        if directory is not None:
            url = url or _read(directory / "endpoint", "the host's URL (is the host running?)")
            token_file = token_file or directory / "host_token"
            ca = ca or directory / "tls" / "ca_cert.pem"
        if url is None or token_file is None or ca is None:
            raise HostError(
                "say where the host is: --host-dir DIR (or $NOTARIUM_HOST_DIR), or --url, --token-file and --ca-cert",
                EXIT_USAGE,
            )
        token = _read(token_file, "the management token")
        self.base = url.rstrip("/")
        self.group_path = (
            f"/subscriptions/{quote(args.subscription, safe='')}/resourceGroups/{quote(args.resource_group, safe='')}"
            "/providers/Microsoft.ConfidentialLedger/ledgers"
        )
        self.subscription_path = (
            f"/subscriptions/{quote(args.subscription, safe='')}/providers/Microsoft.ConfidentialLedger/ledgers"
        )
        try:
            context = ssl.create_default_context(cafile=str(ca))
        except OSError as exc:
            raise HostError(f"cannot read the host's CA {ca}: {exc.strerror or exc}", EXIT_USAGE) from None
        self.http = httpx.Client(verify=context, headers={"Authorization": f"Bearer {token}"}, timeout=60)

    def request(self, method: str, url: str, body: Any = None) -> httpx.Response:
        if not url.startswith("https://"):
            url = f"{self.base}{url}"
        try:
            r = self.http.request(method, url, params=None if "?" in url else {"api-version": API_VERSION}, json=body)
        except httpx.TransportError as exc:
            raise HostError(f"cannot reach the host at {self.base}: {exc}", EXIT_UNREACHABLE) from None
        if r.status_code >= 400:
            try:
                error = r.json()["error"]
                message = f"{error['code']}: {error['message']}"
            except (ValueError, KeyError, TypeError):
                message = f"HTTP {r.status_code}"
            raise HostError(f"the host refused ({r.status_code}) {message}")
        return r

    def wait(self, response: httpx.Response) -> None:
        """Poll the operation of a 201/202 answer until it is done."""
        url = response.headers.get("Azure-AsyncOperation")
        deadline = time.monotonic() + WAIT_S
        while url is not None:
            status = self.request("GET", url).json()
            if status.get("status") == "Succeeded":
                return
            if status.get("status") != "InProgress":
                error = status.get("error") or {}
                raise HostError(f"the operation failed: {error.get('code')}: {error.get('message')}")
            if time.monotonic() > deadline:
                raise HostError(f"the operation did not finish in {WAIT_S:.0f} s")
            time.sleep(min(float(response.headers.get("Retry-After", "1")), 1.0) / 4)


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise HostError(f"cannot read {what} from {path}: {exc.strerror or exc}", EXIT_USAGE) from None


def _principals(args: argparse.Namespace) -> dict[str, Any]:
    certs = [{"cert": _read(p, "a certificate"), "ledgerRoleName": "Administrator"} for p in args.admin_cert]
    for item in args.cert:
        role, sep, path = item.partition("=")
        if not sep or role.capitalize() not in ROLES:
            raise HostError(f"--cert takes ROLE=PEM with a role among {', '.join(ROLES)}", EXIT_USAGE)
        certs.append({"cert": _read(Path(path), "a certificate"), "ledgerRoleName": role.capitalize()})
    aad = []
    for item in args.aad:
        oid, _, role = item.partition("=")
        role = (role or "Administrator").capitalize()
        if role not in ROLES:
            raise HostError(f"--aad takes OBJECT_ID[=ROLE] with a role among {', '.join(ROLES)}", EXIT_USAGE)
        aad.append({"principalId": oid, "ledgerRoleName": role})
    if not any(p["ledgerRoleName"] == "Administrator" for p in [*certs, *aad]):
        raise HostError(
            "a ledger needs an Administrator: --admin-cert PEM (or --cert Administrator=PEM, --aad OID)", EXIT_USAGE
        )
    return {"certBasedSecurityPrincipals": certs, "aadBasedSecurityPrincipals": aad}


def _show(args: argparse.Namespace, resources: list[dict[str, Any]]) -> None:
    if args.json:
        print(json.dumps(resources if args.action == "list" else resources[0], indent=2))
        return
    for r in resources:
        props = r.get("properties", {})
        group = r.get("id", "").split("/resourceGroups/")[-1].split("/")[0]
        print(
            f"{r.get('name')}  {props.get('ledgerType')}  {props.get('provisioningState')}  group={group}\n"
            f"  ledger URI:   {props.get('ledgerUri')}\n"
            f"  identity URI: {props.get('identityServiceUri')}"
        )
        tags = {k.lower(): v for k, v in (r.get("tags") or {}).items()}
        own = [f"{tag}={tags[tag.lower()]}" for _, tag in SETTINGS if tag.lower() in tags]
        if own:
            print(f"  settings:     {', '.join(own)}")


def _recovery(args: argparse.Namespace, status: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps(status, indent=2))
        return
    print(
        f"{status.get('name')}: {status.get('status')}: {status.get('submitted')} of {status.get('threshold')} "
        f"recovery shares submitted\n"
        f"  its members fetch, decrypt and submit theirs at the ledger's URI: notarium recovery share|submit "
        f"(docs/operations/recovery.md); it then opens under a new service identity"
    )


def handle(args: argparse.Namespace) -> int:
    try:
        return _handle(args)
    except HostError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code


def _handle(args: argparse.Namespace) -> int:
    if args.action == "delete" and not args.yes:
        raise HostError(
            f"deleting {args.name!r} stops serving it and removes its files after the host's retention: add --yes",
            EXIT_USAGE,
        )
    host = Host(args)
    with host.http:
        if args.action == "list":
            url: str | None = host.subscription_path if args.all_groups else host.group_path
            found: list[dict[str, Any]] = []
            while url is not None:
                page = host.request("GET", url).json()
                found.extend(page.get("value", []))
                url = page.get("nextLink")
            _show(args, found)
            return EXIT_OK
        one = f"{host.group_path}/{quote(args.name, safe='')}"
        if args.action == "show":
            _show(args, [host.request("GET", one).json()])
        elif args.action == "update":
            tags = _with_settings(args, host.request("GET", one).json().get("tags") or {})
            _show(args, [host.request("PATCH", one, {"tags": tags}).json()])
        elif args.action == "recover":
            _recovery(args, host.request("POST", f"{one}/recover").json())
        elif args.action == "create":
            body: dict[str, Any] = {
                "properties": {"ledgerType": args.type.capitalize(), **_principals(args)},
                "tags": _with_settings(args, dict(t.partition("=")[::2] for t in args.tag)),
            }
            if args.location:
                body["location"] = args.location
            r = host.request("PUT", one, body)
            if not args.no_wait:
                host.wait(r)
            _show(args, [host.request("GET", one).json()])
        else:
            r = host.request("DELETE", one)
            if r.status_code == 204:
                print(f"no ledger {args.name!r} in this resource group (nothing deleted)", file=sys.stderr)
                return EXIT_OK
            if not args.no_wait:
                host.wait(r)
            if not args.json:
                print(f"deleted {args.name}: no longer served; its files are kept for the host's retention period")
    return EXIT_OK
