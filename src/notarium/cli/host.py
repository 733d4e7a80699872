"""``notarium host DIR``: serve many ledgers, managed through an ARM-compatible API."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from notarium.cli.serve import _ENGINE_DEFAULTS, _SERVER_DEFAULTS, add_connection_options, connection_settings
from notarium.ledger import EngineConfig
from notarium.server.config import ServerConfig


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "host",
        help="serve many ledgers from DIR over HTTPS, managed through an ARM-compatible API",
        description="Serve the ledgers of a host directory (created on first use): the management API "
        "(Microsoft.ConfidentialLedger/ledgers, as azure-mgmt-confidentialledger speaks it) and each "
        "ledger's data plane under /ledgers/{name}. See docs/design/host.md.",
    )
    p.add_argument("directory", type=Path, metavar="DIR")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=9443, help="TLS port (default 9443; 0 picks a free one)")
    p.add_argument(
        "--host-name",
        action="append",
        default=[],
        metavar="NAME",
        help="a name or address clients use for this host, put in its TLS certificate "
        "(localhost and 127.0.0.1 always are); repeatable",
    )
    p.add_argument(
        "--advertise", metavar="URL", help="the base URL in ledgerUri/identityServiceUri (default: https://HOST:PORT)"
    )
    p.add_argument(
        "--retention-days",
        type=float,
        default=7.0,
        help="how long a deleted ledger's files are kept (and its name reserved) before they are removed "
        "(default 7; 0 removes them at the next purge)",
    )
    p.add_argument(
        "--purge-interval", type=float, default=3600.0, metavar="SECONDS", help="how often to purge (default 3600)"
    )
    p.add_argument("--list-page-size", type=int, default=100, help="ledgers per page of a management list")
    p.add_argument(
        "--max-entry-bytes",
        type=int,
        default=_SERVER_DEFAULTS.max_entry_bytes,
        help="largest entry contents accepted by every ledger (default 1 MiB; ACL uses 8192)",
    )
    p.add_argument("--page-size", type=int, default=_SERVER_DEFAULTS.page_size, help="entries per listing page")
    p.add_argument("--chunk-size", type=int, default=_ENGINE_DEFAULTS.chunk_size, help="ledger chunk size in bytes")
    add_connection_options(p)
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from notarium.host.credentials import HostLayout  # noqa: PLC0415  (the server's imports are heavier)
    from notarium.host.ledgers import LedgerSettings  # noqa: PLC0415
    from notarium.host.manager import HostConfig  # noqa: PLC0415
    from notarium.host.runner import run_host  # noqa: PLC0415

    config = HostConfig(
        host=args.host,
        port=args.port,
        host_names=tuple(args.host_name),
        advertise=args.advertise,
        retention_days=args.retention_days,
        purge_interval_s=args.purge_interval,
        list_page_size=args.list_page_size,
    )
    server = ServerConfig(
        host=args.host,
        port=args.port,
        max_entry_bytes=args.max_entry_bytes,
        max_body_bytes=max(_SERVER_DEFAULTS.max_body_bytes, 8 * args.max_entry_bytes),
        page_size=args.page_size,
        **connection_settings(args),
    )
    settings = LedgerSettings(server, EngineConfig(chunk_size=args.chunk_size))

    def announce(base_url: str, layout: HostLayout) -> None:
        # one write, the URL last: whoever waits for the URL has the rest too
        print(
            f"  host TLS CA (management clients pin it): {layout.ca_cert}\n"
            f"  management token (a secret: commands read this file; it is never printed): {layout.token}\n"
            f"  ledgers: {layout.ledgers}\n"
            f"notarium: serving {base_url}",
            flush=True,
        )

    return asyncio.run(run_host(args.directory, config, settings, announce=announce))
