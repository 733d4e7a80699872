"""The commands that talk to a ledger: ``append``, ``get``, ``list``, ``status``, ``receipt``,
``verify-receipt`` (offline), ``users``, ``export``, ``sync``.

Where the ledger is and how to trust it comes from a connection profile (``--profile``,
``NOTARIUM_PROFILE``, ``NOTARIUM_*`` variables; see :mod:`notarium.client.profile`), or from
``--endpoint``/``--service-cert``/``--cert``/``--key``. Output is for people on a terminal and
one JSON document with ``--json``.

Exit codes: 0 success; 1 the ledger refused or failed (the message says why); 2 bad usage;
3 verification failed (a receipt, a signed root, a fork or rollback, an exported chunk);
4 the ledger could not be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table
from rich.text import Text

from notarium.cli.sealing import Sealer, describe, e2e_key_option, entry_json, export_collections
from notarium.client.client import Client
from notarium.client.errors import ClientError, ForkError, UnreachableError
from notarium.client.operations import check_json_receipt, receipt_txid
from notarium.client.profile import load_profile
from notarium.errors import NotariumError, VerificationError
from notarium.types import TxId
from notarium.verify.receipt import ReceiptVerifier

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_VERIFY, EXIT_UNREACHABLE = 0, 1, 2, 3, 4


def add_ledger_options(g: Any) -> None:
    """Where the ledger is and which service certificate to pin (``--profile``, ``--endpoint``,
    ``--service-cert``): every command that talks to a ledger takes these."""
    g.add_argument("--profile", type=Path, metavar="FILE", help="connection profile (default: $NOTARIUM_PROFILE)")
    g.add_argument("--endpoint", metavar="URL", help="the ledger's URL, e.g. https://127.0.0.1:8443")
    g.add_argument("--service-cert", type=Path, metavar="FILE", help="the ledger's service certificate (pinned)")


def connection_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("connection (default: the profile)")
    add_ledger_options(g)
    g.add_argument("--cert", type=Path, metavar="FILE", help="your client certificate (PEM; may include the key)")
    g.add_argument("--key", type=Path, metavar="FILE", help="your client key, if not in --cert")
    p.add_argument("--json", action="store_true", help="print one JSON document (for scripts)")


def _command(sub: Any, name: str, help_text: str, handler: Callable[[argparse.Namespace, Client], int]) -> Any:
    p = sub.add_parser(name, help=help_text, description=help_text)
    connection_options(p)
    p.set_defaults(handler=lambda args: with_client(args, handler))
    return p


def register(sub: Any) -> None:
    p = _command(sub, "append", "append an entry; waits until it is committed", _append)
    p.add_argument("contents", help="the entry's contents (text; '-' reads standard input)")
    p.add_argument("--collection", "-c", metavar="ID", help="collection (default subledger:0)")
    p.add_argument("--tag", "-t", action="append", dest="tags", metavar="TAG", help="a tag (repeatable)")
    p.add_argument("--no-wait", action="store_true", help="answer with the Pending transaction id at once")
    p.add_argument(
        "--e2e",
        action="store_true",
        help="seal it end to end (the profile's e2e collections always are): only the collection's readers can open it",
    )
    e2e_key_option(p)

    p = _command(sub, "get", "read a committed entry (opening it when it is sealed end to end)", _get)
    p.add_argument("txid", metavar="VIEW.SEQNO")
    p.add_argument("--collection", "-c", metavar="ID")
    e2e_key_option(p)

    p = _command(sub, "list", "list the committed entries of a collection", _list)
    p.add_argument("--collection", "-c", metavar="ID")
    p.add_argument("--from", dest="first", metavar="VIEW.SEQNO")
    p.add_argument("--to", dest="last", metavar="VIEW.SEQNO")
    p.add_argument("--tag", metavar="TAG")
    p.add_argument("--limit", type=int, metavar="N", help="stop after N entries")
    e2e_key_option(p)

    p = _command(sub, "status", "a transaction's status (Pending, Committed)", _status)
    p.add_argument("txid", metavar="VIEW.SEQNO")

    p = _command(sub, "receipt", "fetch a transaction's receipt, verify it, optionally save it", _receipt)
    p.add_argument("txid", metavar="VIEW.SEQNO")
    p.add_argument("--out", "-o", type=Path, metavar="FILE", help="save it here")
    p.add_argument("--cose", action="store_true", help="the COSE receipt (RFC 9942) instead of the JSON one")

    p = _command(sub, "sync", "check that the ledger extends what this profile verified before", _sync)

    p = _command(sub, "users", "manage ledger users (Administrators)", _users)
    p.add_argument("action", choices=("list", "add", "remove"))
    p.add_argument("user_id", nargs="?", metavar="USER_ID", help="certificate fingerprint or token user id")
    p.add_argument("--role", "-r", action="append", dest="roles", help="a role to grant (built-in or user-defined)")
    p.add_argument(
        "--issuer",
        metavar="ISSUER",
        help="a token user's issuer (its iss value): needed when the ledger trusts several issuers",
    )

    p = _command(sub, "issuers", "manage the token issuers the ledger trusts (Administrators)", _issuers)
    p.add_argument("action", choices=("list", "add", "remove"))
    p.add_argument("issuer", nargs="?", metavar="ISSUER", help="the issuer's identifier (its iss claim)")
    p.add_argument("--jwks-uri", metavar="URL", help="where its signing keys are published (fetched and refreshed)")
    p.add_argument("--jwks", type=Path, metavar="FILE", help="its signing keys, as a JWK set file (offline installs)")
    p.add_argument("--ca-cert", type=Path, metavar="FILE", help="CA certificate(s) to trust when fetching --jwks-uri")
    p.add_argument(
        "--audience", action="append", dest="audiences", metavar="AUD", help="accepted audience (repeatable)"
    )
    p.add_argument("--user-id-claim", metavar="CLAIM", help="the claim naming the user (default oid)")

    p = _command(sub, "export", "download the ledger's chunk files, verifying each (resumable)", _export)
    p.add_argument("out", type=Path, metavar="OUT", help="directory to export into (then: notarium audit OUT)")
    p.add_argument(
        "--e2e-collection",
        action="append",
        default=[],
        metavar="ID",
        help="also open this sealed collection into OUT/e2e/ (the profile's e2e collections always are)",
    )
    e2e_key_option(p)

    p = sub.add_parser(
        "verify-receipt",
        help="verify a saved receipt offline against a service certificate",
        description="Verify a saved JSON receipt offline: no server is contacted.",
    )
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--service-cert", type=Path, required=True, metavar="FILE")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_verify_receipt)


# --- running a command ---------------------------------------------------------------------------


def with_client(args: argparse.Namespace, handler: Callable[[argparse.Namespace, Client], int]) -> int:
    try:
        profile = load_profile(
            args.profile,
            endpoint=args.endpoint,
            service_cert=args.service_cert,
            cert=args.cert,
            key=args.key,
        )
        args.loaded_profile = profile  # the end-to-end settings (notarium.cli.sealing)
        with Client.from_profile(profile) as client:
            return handler(args, client)
    except ForkError as exc:
        return _fail(args, exc, EXIT_VERIFY, evidence=exc.evidence())
    except VerificationError as exc:
        return _fail(args, exc, EXIT_VERIFY)
    except UnreachableError as exc:
        return _fail(args, exc, EXIT_UNREACHABLE)
    except (ClientError, NotariumError) as exc:
        return _fail(args, exc, EXIT_FAILED)
    except OSError as exc:
        return _fail(args, ClientError(f"{exc.filename or ''}: {exc.strerror or exc}"), EXIT_FAILED)


def _fail(args: argparse.Namespace, exc: NotariumError, code: int, evidence: dict[str, Any] | None = None) -> int:
    if args.json:
        body: dict[str, Any] = {"ok": False, "error": str(exc), "exitCode": code}
        if evidence is not None:
            body["evidence"] = evidence
        print(json.dumps(body))
    else:
        print(f"error: {exc.diagnostics()}", file=sys.stderr)
    return code


def _out(args: argparse.Namespace, data: dict[str, Any], human: Callable[[Console], None]) -> int:
    if args.json:
        print(json.dumps({"ok": True, **data}))
    else:
        human(Console())
    return EXIT_OK


# --- the commands --------------------------------------------------------------------------------


def _append(args: argparse.Namespace, client: Client) -> int:
    contents = sys.stdin.read() if args.contents == "-" else args.contents
    sealer = Sealer(args, client, args.loaded_profile)
    name = args.collection or "subledger:0"
    sealed = args.e2e or sealer.marked(name)
    if sealed:
        target = sealer.collection(name, required=True)
        if target is None:  # required: never
            raise ClientError(f"no end-to-end key for {name!r}")
        done = target.append(contents, tags=args.tags, wait=not args.no_wait)
    else:
        done = client.append(contents, collection=args.collection, tags=args.tags, wait=not args.no_wait)
    note = " (sealed end to end)" if sealed else ""
    return _out(
        args,
        {"transactionId": str(done.txid), "state": done.status.value, "e2e": sealed},
        lambda c: c.print(f"{done.txid} {done.status.value}{note}", highlight=False),
    )


def _get(args: argparse.Namespace, client: Client) -> int:
    entry = client.get(args.txid, collection=args.collection)
    opened = Sealer(args, client, args.loaded_profile).open(entry)

    def human(c: Console) -> None:
        if opened is not None:
            Console(stderr=True).print(describe(opened), highlight=False, markup=False)
        c.print(opened.text if opened else entry.contents, highlight=False, markup=False)

    return _out(args, {"entry": entry_json(entry, opened)}, human)


def _list(args: argparse.Namespace, client: Client) -> int:
    sealer = Sealer(args, client, args.loaded_profile)
    found = []
    for e in client.entries(collection=args.collection, first=args.first, last=args.last, tag=args.tag):
        found.append(e)
        if args.limit is not None and len(found) >= args.limit:
            break
    sealer.observe(found)
    entries = [(e, sealer.open(e)) for e in found]

    def table(c: Console) -> None:
        t = Table("transaction", "collection", "tags", "contents")
        for e, opened in entries:
            text = opened.text if opened else e.contents
            mark = {"opened": "", "sealed": "[sealed] ", "plain": "[NOT e2e] "}[opened.state] if opened else ""
            t.add_row(str(e.txid), Text(e.collection_id), Text(",".join(e.tags)), Text(mark + text[:80]))
        c.print(t)

    return _out(args, {"entries": [entry_json(e, o) for e, o in entries]}, table)


def _status(args: argparse.Namespace, client: Client) -> int:
    state = client.status(args.txid)
    return _out(args, {"transactionId": args.txid, "state": state.value}, lambda c: c.print(state.value))


def _receipt(args: argparse.Namespace, client: Client) -> int:
    if args.cose:
        data = client.cose_receipt(args.txid)
        if args.out is not None:
            args.out.write_bytes(data)
        return _out(
            args,
            {"transactionId": args.txid, "verified": True, "bytes": len(data), "file": str(args.out or "")},
            lambda c: c.print(f"COSE receipt of {args.txid} verified ({len(data)} bytes)"),
        )
    receipt = client.receipt(args.txid)
    body = receipt.to_json()
    if args.out is not None:
        args.out.write_text(json.dumps(body, indent=2) + "\n")
    if args.json:
        print(json.dumps({"ok": True, "verified": True, **body}))
        return EXIT_OK
    Console().print(f"receipt of {args.txid} verified against the pinned service certificate", highlight=False)
    if args.out is not None:
        Console().print(f"saved to {args.out}", highlight=False)
    return EXIT_OK


def _sync(args: argparse.Namespace, client: Client) -> int:
    before = client.trusted.root
    root = client.sync()
    return _out(
        args,
        {"trusted": root.to_json(), "previous": before.to_json() if before else None},
        lambda c: c.print(
            f"the ledger extends what was verified before: now trusting {root.txid} (tree size {root.tree_size})"
            if before
            else f"trusting {root.txid} (tree size {root.tree_size}) from now on",
            highlight=False,
        ),
    )


def _users(args: argparse.Namespace, client: Client) -> int:
    if args.action == "list":
        users = client.users()

        def table(c: Console) -> None:
            t = Table("user", "roles")
            for u in users:
                t.add_row(u.user_id, ", ".join(u.roles))
            c.print(t)

        return _out(args, {"users": [{"userId": u.user_id, "roles": u.roles} for u in users]}, table)
    if not args.user_id:
        raise ClientError(f"`users {args.action}` needs a USER_ID")
    if args.action == "add":
        user = client.set_user(args.user_id, args.roles or ["Reader"], args.issuer)
        return _out(
            args,
            {"userId": user.user_id, "roles": user.roles},
            lambda c: c.print(f"{user.user_id}: {', '.join(user.roles)}", highlight=False),
        )
    client.remove_user(args.user_id, args.issuer)
    return _out(args, {"userId": args.user_id, "removed": True}, lambda c: c.print(f"removed {args.user_id}"))


def _issuers(args: argparse.Namespace, client: Client) -> int:
    if args.action == "list":
        found = client.issuers()

        def table(c: Console) -> None:
            t = Table("issuer", "keys", "audiences", "user id claim", "keys from")
            for i in found:
                t.add_row(
                    i["issuer"],
                    ", ".join(i.get("keyIds", [])),
                    ", ".join(i.get("audiences", [])),
                    str(i.get("userIdClaim", "")),
                    str(i.get("jwksUri", "inline")),
                )
            c.print(t)

        return _out(args, {"issuers": found}, table)
    if not args.issuer:
        raise ClientError(f"`issuers {args.action}` needs an ISSUER")
    if args.action == "remove":
        client.remove_issuer(args.issuer)
        return _out(args, {"issuer": args.issuer, "removed": True}, lambda c: c.print(f"removed {args.issuer}"))
    config: dict[str, Any] = {"issuer": args.issuer}
    if args.jwks_uri:
        config["jwksUri"] = args.jwks_uri
    if args.jwks is not None:
        try:
            config["jwks"] = json.loads(args.jwks.read_text())
        except ValueError:
            raise ClientError(f"{args.jwks} is not a JSON JWK set") from None
    if args.ca_cert is not None:
        config["caCertificate"] = args.ca_cert.read_text()
    if args.audiences:
        config["audiences"] = args.audiences
    if args.user_id_claim:
        config["userIdClaim"] = args.user_id_claim
    added = client.set_issuer(config)
    return _out(
        args,
        {"issuer": added},
        lambda c: c.print(f"trusting {added['issuer']} (keys: {', '.join(added.get('keyIds', []))})", highlight=False),
    )


def _export(args: argparse.Namespace, client: Client) -> int:
    from notarium.client.export import ExportEvent, export_ledger  # noqa: PLC0415

    if sys.stderr.isatty() and not args.json:
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        ) as bar:
            task = bar.add_task("exporting", total=None)

            def show(e: ExportEvent) -> None:
                bar.update(task, total=e.total_bytes, completed=e.done_bytes, description=e.chunk or "exporting")

            result = export_ledger(client.http, args.out, client.service_cert_pem, progress=show)
    else:
        result = export_ledger(client.http, args.out, client.service_cert_pem)
    opened = export_collections(Sealer(args, client, args.loaded_profile), args.out, args.e2e_collection)

    def human(c: Console) -> None:
        c.print(
            f"{result.downloaded} chunk(s) downloaded and verified, {result.skipped} already there; "
            f"now run: notarium audit {args.out}",
            highlight=False,
        )
        for name, counts in opened.items():
            c.print(
                f"{name}: {counts['opened']} entries opened, {counts['sealed']} sealed, {counts['plain']} not e2e "
                f"-> {args.out}/e2e/ (plaintext: keep it private)",
                highlight=False,
                markup=False,
            )

    return _out(
        args,
        {
            "out": str(args.out),
            "downloaded": result.downloaded,
            "skipped": result.skipped,
            "bytes": result.bytes,
            "seconds": round(result.seconds, 3),
            "e2e": opened,
        },
        human,
    )


def _verify_receipt(args: argparse.Namespace) -> int:
    try:
        cert = x509.load_pem_x509_certificate(args.service_cert.read_bytes())
        text = args.file.read_text()
    except (OSError, ValueError) as exc:
        return _fail(args, ClientError(f"cannot read the receipt or the service certificate: {exc}"), EXIT_FAILED)
    try:
        try:
            body = json.loads(text)
        except ValueError:
            raise VerificationError("the file is not JSON") from None
        if not isinstance(body, dict):
            raise VerificationError("the file does not hold a receipt object")
        wrapped = body if "receipt" in body else {"receipt": body}  # a saved answer, or the bare receipt
        named = body.get("transactionId")
        txid = receipt_txid(wrapped["receipt"]) if named is None else _named_txid(named)
        result = check_json_receipt(wrapped, txid, ReceiptVerifier(cert))
    except VerificationError as exc:
        return _fail(args, exc, EXIT_VERIFY)
    return _out(
        args,
        {"transactionId": str(result.txid), "verified": True},
        lambda c: c.print(f"receipt of {result.txid} verifies against {args.service_cert}", highlight=False),
    )


def _named_txid(value: object) -> TxId:
    try:
        return TxId.parse(value) if isinstance(value, str) else TxId.parse("")
    except ValueError:
        raise VerificationError("the file's transactionId is not a transaction id") from None
