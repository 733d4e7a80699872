"""``notarium console``: a local web console for a ledger (``--profile``) or a host (``--host-dir``)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from notarium.console.run import DEFAULT_PORT, ConsoleUsageError, check_listen, host_setup, profile_setup, serve

EXIT_OK, EXIT_USAGE = 0, 2


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "console",
        help="a web console in your browser: browse, append and verify; with --host-dir, manage a host's ledgers",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--profile", type=Path, metavar="FILE", help="the connection profile (default: $NOTARIUM_PROFILE)"
    )
    which.add_argument(
        "--host-dir", type=Path, metavar="DIR", help="a ledger host's directory (notarium host): manage its ledgers"
    )
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 picks a free one)")
    p.add_argument(
        "--bind",
        default=None,
        metavar="ADDRESS",
        help="address to listen on (default 127.0.0.1); any other than loopback needs --tls-cert and --tls-key",
    )
    p.add_argument("--tls-cert", type=Path, metavar="FILE", help="serve over HTTPS with this certificate (PEM)")
    p.add_argument("--tls-key", type=Path, metavar="FILE", help="the certificate's private key (PEM)")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    try:
        listen = check_listen(args.bind, args.port, args.tls_cert, args.tls_key)
        setup, mode = host_setup(args.host_dir) if args.host_dir is not None else profile_setup(args.profile)
        asyncio.run(serve(listen, setup, mode))
    except ConsoleUsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK
