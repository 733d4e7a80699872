"""``notarium audit PATH``: verify a whole ledger offline."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

from notarium.auditing import AuditTarget, audit, find_target
from notarium.errors import LedgerAuditError
from notarium.types import TxId


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "audit", help="verify every entry, signature and root of a ledger (a service directory or chunk folder)"
    )
    p.add_argument("path", type=Path, metavar="PATH", nargs="?")
    p.add_argument(
        "--store",
        metavar="DSN",
        help="audit the replicated log in PostgreSQL (postgresql://…) instead of files; needs --service-cert",
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
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    if (args.path is None) == (args.store is None):
        raise SystemExit("error: audit a PATH or a --store, one of them")
    if args.store is not None:
        if args.service_cert is None:
            raise SystemExit("error: --store needs --service-cert (the certificate to pin)")
        with tempfile.TemporaryDirectory(prefix="notarium-audit-") as tmp:
            from notarium.cluster.dump import dump_log  # noqa: PLC0415  (psycopg only when used)
            from notarium.ledger.storage.postgres import PostgresLog  # noqa: PLC0415

            with PostgresLog(args.store) as store:
                dump_log(store, Path(tmp) / "ledger")
            return _audit(args, find_target(Path(tmp) / "ledger", args.service_cert))
    return _audit(args, find_target(args.path, args.service_cert))


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
