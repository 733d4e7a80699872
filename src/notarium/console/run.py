"""Start the console: check where it may listen, build the application, print the login URL."""

from __future__ import annotations

import asyncio
import ipaddress
import signal
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from notarium.client import AsyncClient, load_profile
from notarium.console import pages
from notarium.console.app import STATE, create_app
from notarium.console.ledger import LedgerView
from notarium.console.session import Sessions

DEFAULT_PORT = 8600
LOOPBACK_NAMES = frozenset({"localhost"})


class ConsoleUsageError(ValueError):
    """The console was asked for something it refuses (exit status 2, the message says why)."""


@dataclass(frozen=True)
class Listen:
    bind: str
    port: int
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @property
    def secure(self) -> bool:
        return self.tls_cert is not None


def is_loopback(address: str) -> bool:
    if address.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def check_listen(bind: str | None, port: int, tls_cert: Path | None, tls_key: Path | None) -> Listen:
    """The console listens on loopback unless ``--bind`` names another address explicitly, and then
    only with TLS (``--tls-cert`` and ``--tls-key``): its pages show a ledger to whoever reaches them
    with the session cookie, which must never cross a network in clear."""
    address = bind if bind is not None else "127.0.0.1"
    if (tls_cert is None) != (tls_key is None):
        raise ConsoleUsageError("--tls-cert and --tls-key go together")
    if not is_loopback(address):
        try:
            ipaddress.ip_address(address.strip("[]"))
        except ValueError:
            raise ConsoleUsageError(f"--bind takes an IP address (or localhost), not {address[:80]!r}") from None
        if tls_cert is None:
            raise ConsoleUsageError(
                f"refusing to serve the console on {address} without TLS: it is reachable from the network. "
                "Give --tls-cert FILE --tls-key FILE, or keep the default loopback address (127.0.0.1)"
            )
    if not 0 <= port <= 65535:
        raise ConsoleUsageError(f"--port must be from 0 to 65535, not {port}")
    return Listen(address, port, tls_cert, tls_key)


def _allowed_hosts(listen: Listen, port: int) -> frozenset[str] | None:
    """The Host headers the console answers (DNS rebinding); None: any (an unspecified address
    under TLS, where the browser's certificate check already binds the name)."""
    address = ipaddress.ip_address(listen.bind.strip("[]")) if not is_loopback(listen.bind) else None
    if address is not None and address.is_unspecified:
        return None
    names = {f"[{listen.bind}]"} if ":" in listen.bind else {listen.bind}
    if is_loopback(listen.bind):
        names |= {"127.0.0.1", "localhost", "[::1]"}
    return frozenset(f"{n}:{port}".lower() for n in names) | frozenset(n.lower() for n in names)


def profile_setup(profile_path: Path | None) -> tuple[Callable[[web.Application], None], str]:
    profile = load_profile(profile_path)
    client = AsyncClient.from_profile(profile)
    view = LedgerView(client, name=profile.endpoint, base="")

    async def resolve(_request: web.Request) -> LedgerView:
        return view

    def setup(app: web.Application) -> None:
        pages.register(app, "", resolve)

        async def close(_app: web.Application) -> None:
            await view.close()

        app.on_cleanup.append(close)

    return setup, "ledger"


def host_setup(host_dir: Path) -> tuple[Callable[[web.Application], None], str]:
    from notarium.console import hostpages  # noqa: PLC0415

    return hostpages.setup(host_dir), "host"


async def serve(
    listen: Listen,
    setup: Callable[[web.Application], None],
    mode: str,
    *,
    announce: Callable[[str], None] | None = None,
) -> None:
    sessions = Sessions()
    app = create_app(mode, sessions=sessions, secure=listen.secure, allowed_hosts=frozenset(), setup=setup)
    context = None
    if listen.secure:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(listen.tls_cert), str(listen.tls_key))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, listen.bind, listen.port, ssl_context=context)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConsoleUsageError(f"cannot listen on {listen.bind} port {listen.port}: {exc.strerror or exc}") from None
    sockets = getattr(site._server, "sockets", None) or []
    port = sockets[0].getsockname()[1] if sockets else listen.port
    app[STATE].allowed_hosts = _allowed_hosts(listen, port)  # known once the port is (--port 0)
    scheme = "https" if listen.secure else "http"
    host = f"[{listen.bind}]" if ":" in listen.bind else listen.bind
    url = f"{scheme}://{host}:{port}/login?token={sessions.login_token}"
    (announce or _print)(url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def _print(url: str) -> None:
    print("notarium console: open this URL in your browser (it logs you in once; keep it private):", flush=True)
    print(f"    {url}", flush=True)
    print("Stop with Ctrl-C.", file=sys.stderr, flush=True)
