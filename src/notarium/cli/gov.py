"""``notarium gov``: consortium governance as a member (docs/design/governance.md).

Requests are COSE_Sign1-signed with the member's key (``--member-cert``/``--member-key``, or the
service directory's ``member0`` files with ``--dir``). The ledger is reached at ``--endpoint`` (or
the connection profile's) and trusted by its pinned service certificate (``--service-cert``, the
profile's, or ``DIR/service_cert.pem``). Output is for a terminal, or one JSON document with ``--json``.

Exit codes: 0 success; 1 the ledger refused (the message says why); 2 bad usage; 4 unreachable.
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from notarium.cli.ledger import add_ledger_options
from notarium.client.errors import ClientError
from notarium.client.profile import load_profile
from notarium.errors import NotariumError, ServiceError
from notarium.governance.actions import ACTIONS
from notarium.governance.request import sign_request
from notarium.ledger.identity import load_cert, load_private_ec
from notarium.verify.keys import cert_fingerprint

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 4
API_VERSION = "2024-07-01"
PROPOSALS = "/gov/members/proposals"


class _RefusedError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"{status}")
        self.status = status
        self.body = body


def register(sub: Any) -> None:
    gov = sub.add_parser("gov", help="consortium governance: propose, vote, withdraw, ack, list, show")
    gsub = gov.add_subparsers(dest="gov_command", required=True, metavar="SUBCOMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = gsub.add_parser(name, help=help_text, description=help_text)
        g = p.add_argument_group("connection and member identity")
        g.add_argument("--dir", type=Path, metavar="DIR", help="service directory: member0's files, service_cert.pem")
        add_ledger_options(g)
        g.add_argument("--member-cert", type=Path, metavar="FILE", help="the member's certificate (PEM)")
        g.add_argument("--member-key", type=Path, metavar="FILE", help="the member's private key (PEM)")
        p.add_argument("--json", action="store_true", help="print one JSON document")
        p.set_defaults(handler=_run)
        return p

    p = command("propose", "propose actions (a proposal JSON file, or one --action with --args)")
    p.add_argument("file", nargs="?", type=Path, metavar="FILE", help='{"actions": [{"name": ..., "args": {...}}]}')
    p.add_argument("--action", metavar="NAME", choices=sorted(ACTIONS), help="one action instead of FILE")
    p.add_argument("--args", metavar="JSON", help="the action's arguments (JSON object)")
    p = command("vote", "vote on an open proposal")
    p.add_argument("proposal_id", metavar="PROPOSAL_ID")
    side = p.add_mutually_exclusive_group(required=True)
    side.add_argument("--accept", action="store_true")
    side.add_argument("--reject", action="store_true")
    p = command("withdraw", "withdraw your open proposal")
    p.add_argument("proposal_id", metavar="PROPOSAL_ID")
    command("ack", "acknowledge the current state digest (an Accepted member becomes Active)")
    command("list", "list proposals and their states")
    p = command("show", "a proposal: state, ballots and actions")
    p.add_argument("proposal_id", metavar="PROPOSAL_ID")


def _member(args: argparse.Namespace) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path = args.member_cert or (args.dir / "member0_cert.pem" if args.dir else None)
    key_path = args.member_key or (args.dir / "member0_privk.pem" if args.dir else None)
    if cert_path is None or key_path is None:
        raise ValueError("give --member-cert and --member-key (or --dir for member0's)")
    return load_cert(Path(cert_path)), load_private_ec(Path(key_path))


def _client(args: argparse.Namespace) -> httpx.Client:
    service_cert = args.service_cert or (args.dir / "service_cert.pem" if args.dir else None)
    endpoint = args.endpoint
    if endpoint is None or service_cert is None:
        profile = load_profile(args.profile, endpoint=endpoint, service_cert=service_cert)
        endpoint, service_cert = profile.endpoint, profile.service_cert
    context = ssl.create_default_context(cadata=Path(service_cert).read_text())  # the pinned certificate only
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return httpx.Client(base_url=endpoint, verify=context, timeout=30, trust_env=False)


def _call(http: httpx.Client, method: str, path: str, body: bytes | None = None) -> Any:
    headers = {"Content-Type": "application/cose"} if body is not None else {}
    try:
        r = http.request(method, path, params={"api-version": API_VERSION}, content=body, headers=headers)
    except httpx.TransportError as exc:
        raise ConnectionError(f"cannot reach the ledger: {exc}") from None
    try:
        data = r.json()
    except ValueError:
        data = {"error": {"code": "InvalidResponse", "message": r.text[:200]}}
    if r.status_code >= 400:
        raise _RefusedError(r.status_code, data)
    return data


def _proposal_body(args: argparse.Namespace) -> bytes:
    if (args.file is None) == (args.action is None):
        raise ValueError("give a proposal FILE or --action NAME [--args JSON]")
    if args.file is not None:
        return Path(args.file).read_bytes()
    try:
        action_args = json.loads(args.args) if args.args else {}
    except ValueError:
        raise ValueError("--args must be a JSON object") from None
    return json.dumps({"actions": [{"name": args.action, "args": action_args}]}).encode()


def _do(args: argparse.Namespace, http: httpx.Client) -> Any:
    command = args.gov_command
    if command == "list":
        return _call(http, "GET", PROPOSALS)
    if command == "show":
        proposal = _call(http, "GET", f"{PROPOSALS}/{args.proposal_id}")
        proposal["actions"] = _call(http, "GET", f"{PROPOSALS}/{args.proposal_id}/actions")["actions"]
        return proposal
    cert, key = _member(args)
    member = cert_fingerprint(cert)
    if command == "propose":
        return _call(http, "POST", PROPOSALS + ":create", sign_request(key, cert, "proposal", _proposal_body(args)))
    if command == "vote":
        ballot = json.dumps({"ballot": bool(args.accept)}).encode()
        signed = sign_request(key, cert, "ballot", ballot, proposal_id=args.proposal_id)
        return _call(http, "POST", f"{PROPOSALS}/{args.proposal_id}/ballots/{member}:submit", signed)
    if command == "withdraw":
        signed = sign_request(key, cert, "withdrawal", b"", proposal_id=args.proposal_id)
        return _call(http, "POST", f"{PROPOSALS}/{args.proposal_id}:withdraw", signed)
    if command == "ack":
        digests = f"/gov/members/state-digests/{member}"
        digest = _call(http, "POST", digests + ":update", sign_request(key, cert, "state_digest", b""))
        body = json.dumps({"stateDigest": digest["stateDigest"]}).encode()
        return _call(http, "POST", digests + ":ack", sign_request(key, cert, "ack", body))
    raise ValueError(f"unknown gov command {command}")


def _human(command: str, result: Any) -> str:
    if command == "list":
        lines = [f"{p['proposalId']}  {p['proposalState']:<9}  ballots {p['ballotCount']}" for p in result["value"]]
        return "\n".join(lines) or "no proposals"
    if command == "ack":
        return f"member {result['memberId']}: {result['status']}"
    if "proposalId" in result:
        text = f"proposal {result['proposalId']}: {result['proposalState']} ({result['ballotCount']} ballots)"
        if "failure" in result:
            text += f"\n  failed: {result['failure']['reason']}"
        if "actions" in result:
            text += "".join(f"\n  {a['name']} {json.dumps(a.get('args', {}))[:200]}" for a in result["actions"])
        return text
    return json.dumps(result, indent=2)


def _run(args: argparse.Namespace) -> int:
    try:
        with _client(args) as http:
            result = _do(args, http)
    except _RefusedError as exc:
        error = exc.body.get("error", {}) if isinstance(exc.body, dict) else {}
        message = f"{exc.status} {error.get('code', '')}: {error.get('message', '')}"
        if args.json:
            print(json.dumps({"ok": False, "status": exc.status, "error": error, "exitCode": EXIT_FAILED}))
        else:
            print(f"error: {message}", file=sys.stderr)
        return EXIT_FAILED
    except ConnectionError as exc:
        return _fail(args, str(exc), EXIT_UNREACHABLE)
    except (ClientError, ServiceError, NotariumError) as exc:
        return _fail(args, str(exc), EXIT_FAILED)
    except OSError as exc:
        return _fail(args, f"{exc.filename or ''}: {exc.strerror or exc}", EXIT_FAILED)
    if args.json:
        print(json.dumps({"ok": True, **result}))
    else:
        print(_human(args.gov_command, result))
    return EXIT_OK


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    if args.json:
        print(json.dumps({"ok": False, "error": message, "exitCode": code}))
    else:
        print(f"error: {message}", file=sys.stderr)
    return code
