"""``notarium serve DIR``: the HTTPS data plane."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from notarium.auth.rbac import Role
from notarium.ledger import EngineConfig
from notarium.ledger.layout import Layout
from notarium.server.config import ServerConfig, url

_SERVER_DEFAULTS = ServerConfig()
_ENGINE_DEFAULTS = EngineConfig()


def add_server_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8443, help="TLS port (default 8443; 0 picks a free one)")
    p.add_argument("--identity-http-port", type=int, help="also serve /ledgerIdentity over plain HTTP on this port")
    p.add_argument(
        "--max-entry-bytes",
        type=int,
        default=_SERVER_DEFAULTS.max_entry_bytes,
        help="largest entry contents accepted (default 1 MiB; ACL uses 8192)",
    )
    p.add_argument("--page-size", type=int, default=_SERVER_DEFAULTS.page_size, help="entries per listing page")
    p.add_argument("--signature-interval-ms", type=float, default=_ENGINE_DEFAULTS.signature_interval_ms)
    p.add_argument(
        "--chunk-size",
        type=int,
        default=_ENGINE_DEFAULTS.chunk_size,
        help=f"complete a ledger chunk file at the first signature past this many bytes "
        f"(default {_ENGINE_DEFAULTS.chunk_size})",
    )
    p.add_argument(
        "--export-role",
        choices=[r.value for r in Role],
        default=_SERVER_DEFAULTS.export_role.value,
        help="least role that may download the ledger's chunk files (/app/ledger/chunks; default Administrator)",
    )
    add_connection_options(p)
    p.add_argument(
        "--auto-trust-virtual-nodes",
        action="store_true",
        help="admit joining nodes (notarium join) without a governance vote. UNSAFE outside tests: the "
        "virtual platform attests nothing, so any host that can reach this port can join and receive the "
        "service key and ledger secrets",
    )
    add_join_options(p)


def add_join_options(p: argparse.ArgumentParser) -> None:
    """The limits on POST /node/join, which asks no credential (docs/design/ha.md#limits-on-joining)."""
    d = _SERVER_DEFAULTS
    p.add_argument(
        "--join-rate",
        type=int,
        default=d.join_rate_per_minute,
        metavar="N",
        help=f"record at most N new joining nodes a minute, N at once (default {d.join_rate_per_minute}); "
        "beyond it a join is refused with 429",
    )
    p.add_argument(
        "--max-pending-nodes",
        type=int,
        default=d.max_pending_nodes,
        metavar="N",
        help=f"at most N nodes Pending at a time (default {d.max_pending_nodes}); beyond it a new join is "
        "refused with 503",
    )
    p.add_argument(
        "--pending-node-ttl",
        type=int,
        default=d.pending_node_ttl_s,
        metavar="SECONDS",
        help=f"remove a Pending node this long after it first asked, unless an Open proposal would trust it "
        f"(default {d.pending_node_ttl_s})",
    )


def add_connection_options(p: argparse.ArgumentParser) -> None:
    """Client connections' timeouts and limits (docs/design/server.md#connections)."""
    d = _SERVER_DEFAULTS
    p.add_argument(
        "--header-timeout",
        type=float,
        default=d.header_timeout_s,
        metavar="SECONDS",
        help=f"a request's headers must arrive within this long of its first byte (default {d.header_timeout_s:g})",
    )
    p.add_argument(
        "--body-timeout",
        type=float,
        default=d.body_timeout_s,
        metavar="SECONDS",
        help="the longest a request body may pause, or a response go untaken by the client "
        f"(default {d.body_timeout_s:g})",
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=d.idle_timeout_s,
        metavar="SECONDS",
        help=f"close a connection without a request after this long (default {d.idle_timeout_s:g})",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=d.max_connections,
        metavar="N",
        help=f"client connections at most (default {d.max_connections}; lowered to fit the open-files limit); "
        "at the limit a new connection sheds the newest idle one",
    )
    p.add_argument(
        "--max-connections-per-address",
        type=int,
        default=d.max_connections_per_address,
        metavar="N",
        help=f"client connections at most from one address (default {d.max_connections_per_address}; "
        "raise it behind a proxy or NAT)",
    )


def connection_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The ServerConfig fields of :func:`add_connection_options`."""
    return {
        "header_timeout_s": args.header_timeout,
        "body_timeout_s": args.body_timeout,
        "idle_timeout_s": args.idle_timeout,
        "max_connections": args.max_connections,
        "max_connections_per_address": args.max_connections_per_address,
    }


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("serve", help="serve the ledger in DIR over HTTPS")
    p.add_argument("directory", type=Path, metavar="DIR")
    add_server_options(p)
    p.add_argument(
        "--store",
        metavar="DSN",
        default=os.environ.get("NOTARIUM_STORE"),
        help="a node of a replicated service on PostgreSQL (postgresql://…; several hosts allowed); "
        "default $NOTARIUM_STORE, else the embedded local files. Keep passwords out of the command "
        "line: use PGPASSWORD or ~/.pgpass (docs/operations/ha.md)",
    )
    p.add_argument("--advertise", metavar="URL", help="https://host:port the other nodes forward writes to")
    p.add_argument(
        "--lease-ttl",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="primary lease; a dead primary is replaced about this long after its last renewal (default 3)",
    )
    p.add_argument(
        "--recover",
        action="store_true",
        help="the ledger secrets are gone: first wait for the members' recovery shares (docs/operations/recovery.md); "
        "with --store, DIR is a new node directory made from the log, and --service-cert is needed",
    )
    p.add_argument(
        "--service-cert",
        type=Path,
        metavar="FILE",
        help="with --store --recover: the service certificate the log must verify against (the one clients pin)",
    )
    p.set_defaults(handler=handle)


def configs(args: argparse.Namespace) -> tuple[ServerConfig, EngineConfig]:
    server = ServerConfig(
        host=args.host,
        port=args.port,
        identity_http_port=args.identity_http_port,
        max_entry_bytes=args.max_entry_bytes,
        max_body_bytes=max(_SERVER_DEFAULTS.max_body_bytes, 8 * args.max_entry_bytes),
        page_size=args.page_size,
        export_role=Role(args.export_role),
        auto_trust_virtual_nodes=args.auto_trust_virtual_nodes,
        join_rate_per_minute=args.join_rate,
        max_pending_nodes=args.max_pending_nodes,
        pending_node_ttl_s=args.pending_node_ttl,
        **connection_settings(args),
    )
    return server, EngineConfig(signature_interval_ms=args.signature_interval_ms, chunk_size=args.chunk_size)


def handle(args: argparse.Namespace) -> int:
    from notarium.server.runner import Replication, serve  # noqa: PLC0415  (the server's imports are heavier)

    server, engine = configs(args)
    layout = Layout(args.directory)
    if server.auto_trust_virtual_nodes:
        print(
            "warning: --auto-trust-virtual-nodes: any host that can reach this port can join the service "
            "and receive its service key and ledger secrets (for tests only; docs/design/ha.md)",
            file=sys.stderr,
            flush=True,
        )

    def announce(host: str, port: int, plain_port: int | None) -> None:
        profile = write_admin_profile(layout, url(host, port))
        plain = f"  identity over plain HTTP: {url(host, plain_port, 'http')}\n" if plain_port is not None else ""
        # one write, the URL last: whoever waits for the URL has the rest too
        print(
            f"  service certificate (pin it; it is also the receipts' trust anchor): {layout.service_cert}\n"
            f"  administrator credentials (certificate and key): {layout.user_file(0, 'combined')}\n"
            f"  connection profile for the notarium CLI: export NOTARIUM_PROFILE={profile}\n"
            f"{plain}"
            f"notarium: serving {url(host, port)}",
            flush=True,
        )

    def announce_recovery(host: str, port: int) -> None:
        print(
            f"notarium: recovering {url(host, port)}: waiting for the members' recovery shares "
            "(notarium recovery share / submit)",
            flush=True,
        )

    recover = bool(getattr(args, "recover", False))
    replication = None
    if getattr(args, "service_cert", None) is not None and not (recover and getattr(args, "store", None)):
        raise SystemExit("error: --service-cert is for --store --recover only")
    if getattr(args, "store", None):
        if not 0.5 <= args.lease_ttl <= 600:
            raise SystemExit("error: --lease-ttl must be from 0.5 to 600 seconds")
        replication = Replication(args.store, args.advertise, args.lease_ttl)
        if recover:
            prepare_store_recovery(args, layout)
    if not recover:
        check_openable(layout, replicated=replication is not None)
    asyncio.run(
        serve(
            args.directory,
            server,
            engine,
            announce=announce,
            recover=recover,
            announce_recovery=announce_recovery,
            replication=replication,
        )
    )
    return 0


def prepare_store_recovery(args: argparse.Namespace, layout: Layout) -> None:
    """``serve DIR --store DSN --recover --service-cert FILE``: DIR made from the log, under a new
    service identity (:mod:`notarium.cluster.storerecovery`); exit 1, DIR unchanged, when it cannot be."""
    from urllib.parse import urlsplit  # noqa: PLC0415

    from notarium.cluster.storerecovery import prepare_store_recovery as prepare  # noqa: PLC0415
    from notarium.errors import NotariumError  # noqa: PLC0415
    from notarium.ledger.storage.postgres import PostgresLog  # noqa: PLC0415
    from notarium.verify.keys import load_pem_cert  # noqa: PLC0415

    if args.service_cert is None:
        raise SystemExit(
            "error: --store --recover needs --service-cert FILE: the service certificate the log must verify against"
        )
    try:
        pinned = load_pem_cert(args.service_cert.read_bytes(), f"service certificate {args.service_cert}")
    except OSError as exc:
        raise SystemExit(f"error: cannot read {args.service_cert}: {exc.strerror}") from None
    except NotariumError as exc:
        raise SystemExit(f"error: {exc}") from None
    names = [args.host, urlsplit(args.advertise).hostname if args.advertise else None]
    hosts = tuple(dict.fromkeys(h for h in names if h and h not in ("0.0.0.0", "::")))  # noqa: S104
    try:
        with PostgresLog(args.store) as store:
            prepare(layout.root, store, pinned, hosts)
    except NotariumError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(
        f"notarium: the service recovers under a new identity: {layout.service_cert}\n"
        "  give it to the members to pin when they submit their shares, and to clients once it opens",
        flush=True,
    )


def check_openable(layout: Layout, *, replicated: bool) -> None:
    """Exit, changing nothing, when the directory cannot be served: above all when its ledger
    secrets are gone, saying so and what to run (docs/operations/recovery.md)."""
    from notarium.ledger.service import load_identity  # noqa: PLC0415
    from notarium.recovery.sealing import SealedSecretsMissingError  # noqa: PLC0415

    try:
        load_identity(layout)
    except SealedSecretsMissingError:
        situation = (
            f"error: the ledger secrets of {layout.root} are missing (there is no {layout.sealed_ledger_secret}): "
            "the ledger cannot be opened without them, so it is not served.\n"
        )
        if replicated:
            raise SystemExit(
                situation + "A node of a replicated service that lost them is replaced by a new one: "
                "notarium join NEWDIR --target URL --service-cert FILE (docs/operations/ha.md); if every node lost "
                "them, the members recover them: notarium serve NEWDIR --store DSN --recover --service-cert FILE "
                "(docs/operations/recovery.md)"
            ) from None
        raise SystemExit(
            situation + "If they are lost, the members recover them from their recovery shares: start the service "
            f"with\n  notarium serve {layout.root} --recover\nand follow docs/operations/recovery.md"
        ) from None


def write_admin_profile(layout: Layout, endpoint: str) -> Path:
    """``DIR/user0_profile.json``: a ready-to-use connection profile for the first Administrator
    (paths relative to the file; the last verified signed root is kept beside it)."""
    from notarium.client.profile import Profile  # noqa: PLC0415

    path = layout.root / "user0_profile.json"
    profile = Profile(
        endpoint=endpoint,
        service_cert=layout.service_cert.relative_to(layout.root),
        cert=layout.user_file(0, "combined").relative_to(layout.root),
        state=Path("user0_trusted_root.json"),
    )
    profile.save(path)
    return path.resolve()
