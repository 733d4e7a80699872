"""``notarium audit PATH``: verify a whole ledger offline."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

from notarium.auditing import AuditTarget, audit, directory_secrets, find_target
from notarium.errors import LedgerAuditError
from notarium.ledger.layout import Layout
from notarium.types import TxId


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "audit", help="verify every entry, signature and root of a ledger (a service directory or chunk folder)"
    )
    p.add_argument(
        "path",
        type=Path,
        metavar="PATH",
        nargs="?",
        help="a service directory, an export (notarium export) or a folder of chunk files",
    )
    p.add_argument(
        "--store",
        metavar="DSN",
        help="audit the replicated log in PostgreSQL (postgresql://…) instead of files; needs --service-cert, or "
        "PATH naming one of the service's node directories (its certificate is pinned, and its ledger secrets "
        "name the transaction of a changed row)",
    )
    p.add_argument(
        "--service-cert",
        type=Path,
        metavar="FILE",
        help="the service certificate to pin (default: PATH/service_cert.pem for a service directory)",
    )
    p.add_argument(
        "--expect",
        type=TxId.parse,
        metavar="VIEW.SEQNO",
        help="fail unless the ledger is signed at least up to this transaction",
    )
    p.add_argument(
        "--ledger",
        metavar="NAME",
        help="with --store: the ledger NAME of a host on PostgreSQL (notarium host --store), also during its "
        "retention after a deletion; PATH, if given, is a host process's directory (its copy of the ledger "
        "pins the certificate and names a changed transaction)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    if args.path is None and args.store is None:
        raise SystemExit("error: audit a PATH or a --store")
    if args.ledger is not None and args.store is None:
        raise SystemExit("error: --ledger names a ledger of a host on PostgreSQL: it needs --store")
    if args.store is not None:
        return _audit_store(args)
    return _audit(args, find_target(args.path, args.service_cert))


def _audit_store(args: argparse.Namespace) -> int:
    """The replicated log, written out as chunk files and audited as such. With a node's
    directory, its ledger secrets name the transaction of a changed row (else the audit can only
    name the signature whose root no longer matches)."""
    cert, secrets = args.service_cert, None
    schema = "notarium"
    if args.ledger is not None:
        schema, node_dir = _hosted_ledger(args.store, args.ledger, args.path)
        args.path = node_dir
    if args.path is not None:
        layout = Layout(args.path)
        if not layout.config.is_file():
            raise SystemExit(f"error: {args.path} is not a service directory (with --store, PATH is a node's)")
        cert = cert or layout.service_cert
        secrets = directory_secrets(layout)
        if secrets is None:
            raise SystemExit(f"error: cannot read the ledger secrets of {args.path}")
    if cert is None:
        raise SystemExit("error: --store needs --service-cert (the certificate to pin) or a node's directory")
    with tempfile.TemporaryDirectory(prefix="notarium-audit-") as tmp:
        from notarium.cluster.dump import dump_log  # noqa: PLC0415  (psycopg only when used)
        from notarium.ledger.storage.postgres import PostgresLog  # noqa: PLC0415

        with PostgresLog(args.store, schema=schema) as store:
            dump_log(store, Path(tmp) / "ledger")
        target = dataclasses.replace(find_target(Path(tmp) / "ledger", cert), entry_secrets=secrets)
        return _audit(args, target)


def _hosted_ledger(dsn: str, name: str, host_dir: Path | None) -> tuple[str, Path | None]:
    """The schema of the hosted ledger ``name`` in the host's registry, and its directory in the
    host process directory ``host_dir`` (if given)."""
    from notarium.errors import StorageError  # noqa: PLC0415  (psycopg only when used)
    from notarium.host.store import StoreRegistry  # noqa: PLC0415

    registry = StoreRegistry(dsn, "audit")
    try:
        record = registry.get(name)
    except StorageError as exc:
        raise SystemExit(f"error: cannot read the host's registry: {exc}") from None
    finally:
        registry.close()
    if record is None or record.schema is None:
        raise SystemExit(f"error: the host on this store has no ledger named {name!r} (purged, or never created)")
    node_dir = None
    if host_dir is not None:
        node_dir = host_dir / "ledgers" / record.key
        if not Layout(node_dir).config.is_file():
            raise SystemExit(f"error: {host_dir} holds no copy of ledger {name!r} (is it a host process's directory?)")
    return record.schema, node_dir


def _audit(args: argparse.Namespace, target: AuditTarget) -> int:
    show = sys.stderr.isatty() and not args.json
    try:
        if show:
            with Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                DownloadColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            ) as bar:
                task = bar.add_task("auditing", total=target.total_bytes)
                report = audit(target, expect=args.expect, progress=lambda n: bar.advance(task, n))
        else:
            report = audit(target, expect=args.expect)
    except LedgerAuditError as exc:
        if args.json:
            print(json.dumps({"ok": False, "txid": exc.txid, "check": exc.check, "error": str(exc)}))
            return 1
        raise
    if args.json:
        print(
            json.dumps(
                {
                    "ok": True,
                    "transactions": report.transactions,
                    "signatures": report.signatures,
                    "chunks": report.chunks,
                    "lastSigned": str(report.last_signed),
                    "unsignedTail": report.unsigned_tail,
                    "serviceCertPinned": report.service_cert_pinned,
                    "secretsChecked": report.secrets_checked,
                    "warnings": report.warnings,
                }
            )
        )
    else:
        print(report.summary())
    return 0
