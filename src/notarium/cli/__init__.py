"""The ``notarium`` command line."""

from __future__ import annotations

import argparse
import logging
import sys

from notarium.cli import (
    anchor,
    audit,
    console,
    e2e,
    gov,
    host,
    init,
    join,
    ledger,
    ledgers,
    pg,
    recovery,
    reindex,
    run,
    serve,
)
from notarium.errors import NotariumError
from notarium.server.config import LOG_FORMAT

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="notarium", description="A self-hostable confidential ledger.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (init, run, serve, join, host, ledgers, audit, reindex, ledger, anchor, gov, recovery, pg, console):
        module.register(sub)
    e2e.register(sub)  # keys, readers: end-to-end encrypted collections
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format=LOG_FORMAT)
    try:
        return int(args.handler(args))
    except NotariumError as exc:
        print(f"error: {exc.diagnostics()}", file=sys.stderr)
        if args.verbose:
            raise
        return EXIT_FAILED
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
