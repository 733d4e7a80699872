"""``notarium init DIR``: create a new ledger service."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from notarium.ledger import identity as ids
from notarium.ledger.service import init_service


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("init", help="create a new ledger service in DIR")
    p.add_argument("directory", type=Path, metavar="DIR")
    p.add_argument("--ledger-id", help="the ledger's name (default: derived from DIR)")
    p.add_argument(
        "--ledger-type",
        choices=["private", "public"],
        default="private",
        help="private (default) encrypts entry contents; public keeps them in the clear",
    )
    p.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="NAME",
        help="extra host name or IP for the node certificate (localhost and 127.0.0.1 are always in)",
    )
    p.add_argument("--service-cert-days", type=int, default=ids.SERVICE_CERT_DAYS)
    p.add_argument("--node-cert-days", type=int, default=ids.NODE_CERT_DAYS)
    p.add_argument(
        "--client-cert-days",
        type=int,
        default=ids.USER_CERT_DAYS,
        help="validity of the first member's and user's certificates",
    )
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    for name in ("service_cert_days", "node_cert_days", "client_cert_days"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    config = init_service(
        args.directory,
        ledger_id=args.ledger_id,
        ledger_type=args.ledger_type,
        hosts=tuple(args.host),
        service_cert_days=args.service_cert_days,
        node_cert_days=args.node_cert_days,
        client_cert_days=args.client_cert_days,
    )
    d = args.directory
    print(f"created {config.ledger_type.lower()} ledger {config.ledger_id!r} in {d}")
    print(f"  service certificate (trust anchor): {d / 'service_cert.pem'}")
    print(f"  administrator: {d / 'user0_cert.pem'} + {d / 'user0_privk.pem'}")
    print(f"  consortium member: {d / 'member0_cert.pem'} + {d / 'member0_privk.pem'}")
    return 0
