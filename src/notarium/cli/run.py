"""``notarium run DIR``: create the service on first use, then serve it (what ``make run`` does)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from notarium.cli import serve
from notarium.ledger.layout import Layout
from notarium.ledger.service import init_service


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("run", help="initialise DIR on first use, then serve it over HTTPS")
    p.add_argument("directory", type=Path, metavar="DIR")
    serve.add_server_options(p)
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    d: Path = args.directory
    if not Layout(d).config.exists():
        config = init_service(d)
        print(f"created private ledger {config.ledger_id!r} in {d}", flush=True)
    return serve.handle(args)
