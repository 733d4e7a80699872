"""``notarium host DIR``: serve many ledgers, managed through an ARM-compatible API."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from notarium.cli.serve import _ENGINE_DEFAULTS, _SERVER_DEFAULTS, add_connection_options, connection_settings
from notarium.ledger import EngineConfig
from notarium.server.config import ServerConfig

if TYPE_CHECKING:
    from notarium.host.storehost import StoreSettings


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
        "--retention",
        type=float,
        metavar="SECONDS",
        help="the retention in seconds (instead of --retention-days)",
    )
    p.add_argument(
        "--purge-interval", type=float, default=3600.0, metavar="SECONDS", help="how often to purge (default 3600)"
    )
    store = p.add_argument_group("on PostgreSQL (docs/operations/ha.md)")
    store.add_argument(
        "--store",
        metavar="DSN",
        help="keep the registry and every ledger in PostgreSQL (postgresql://…; several hosts allowed): "
        "host processes started on the same store are one host. Keep passwords out of the command line: "
        "use PGPASSWORD or ~/.pgpass",
    )
    store.add_argument(
        "--node-address",
        metavar="URL",
        help="https://host:port where the other host processes reach this one (default https://HOST:PORT)",
    )
    store.add_argument(
        "--lease-ttl",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="each ledger's primary lease: a dead host process's ledgers are taken over about this long "
        "after its last renewal (default 3)",
    )
    store.add_argument(
        "--sync-interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="how often this process follows the shared registry and heartbeats (default 1)",
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

    retention_days = args.retention_days if args.retention is None else args.retention / 86400
    config = HostConfig(
        host=args.host,
        port=args.port,
        host_names=tuple(args.host_name),
        advertise=args.advertise,
        retention_days=retention_days,
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

    return asyncio.run(run_host(args.directory, config, settings, announce=announce, store=_store(args)))


def _store(args: argparse.Namespace) -> StoreSettings | None:
    from notarium.host.credentials import HostLayout  # noqa: PLC0415
    from notarium.host.storehost import StoreSettings  # noqa: PLC0415
    from notarium.host.vault import load_or_create_key  # noqa: PLC0415

    if not args.store:
        return None
    if not 0.5 <= args.lease_ttl <= 600:
        raise SystemExit("error: --lease-ttl must be from 0.5 to 600 seconds")
    if not 0.1 <= args.sync_interval <= 60:
        raise SystemExit("error: --sync-interval must be from 0.1 to 60 seconds")
    layout = HostLayout(args.directory.absolute())
    layout.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = load_or_create_key(layout.store_key, create=True)
    return StoreSettings(args.store, key, args.node_address, args.lease_ttl, args.sync_interval)
