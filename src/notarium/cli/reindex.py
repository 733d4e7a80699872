"""``notarium reindex DIR``: rebuild the lookup index from the chunk files alone."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from notarium.ledger.layout import Layout, ServiceConfig
from notarium.ledger.service import open_ledger


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("reindex", help="rebuild DIR's index from its chunk files")
    p.add_argument("directory", type=Path, metavar="DIR")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    layout = Layout(args.directory)
    ServiceConfig.load(layout)  # a clear error if DIR is not a service directory
    for suffix in ("", "-wal", "-shm"):
        path = Path(str(layout.index_file) + suffix)
        if path.exists():
            path.unlink()
    ledger = open_ledger(args.directory)
    try:
        print(f"reindexed {args.directory}: last committed transaction {ledger.committed}")
    finally:
        ledger.close()
    return 0
