"""``notarium serve DIR --recover``, first phase: wait for the members' recovery shares.

The ledger secrets are gone (a new machine, a lost sealed file), so the ledger cannot open yet.
This phase serves, over TLS with the node certificate (clients still pin the service
certificate they had):

- ``GET /gov/recovery/encrypted-shares/{memberId}``: the member's share, RSA-OAEP-encrypted to
  its key as recorded in the ledger (public: only that member can decrypt it);
- ``POST /gov/recovery/members/{memberId}:recover`` ``{"share": "<base64>"}``: a decrypted share,
  checked at once against the commitment recorded when it was issued (a wrong share is 400, and
  counts for nothing);
- ``GET /gov/recovery/status``; ``/ledgerIdentity/{ledgerId}``, ``/healthz``; everything else 503.

With the threshold reached, every ledger secret is restored and sealed locally, this phase ends,
and the service opens as usual on the same port. No share is ever logged or echoed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from notarium.ledger.identity import load_cert, load_private_ec
from notarium.ledger.layout import Layout
from notarium.ledger.restore import DirectoryRecovery
from notarium.server.bodies import HTTP_OPTIONS, request_bodies
from notarium.server.config import ServerConfig
from notarium.server.errors import ApiError, error_response
from notarium.server.gate import Gate
from notarium.server.listener import listen
from notarium.server.tls import TLSServerProtocol, server_context

log = logging.getLogger("notarium.server.recovery")

RecoveryAnnounce = Callable[[str, int], None]
MAX_SHARE_BODY = 4096


def _json(body: object, status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status == 404:
            return error_response(
                503, "ServiceUnavailable", "The ledger is recovering: it waits for its members' recovery shares."
            )
        return error_response(exc.status if exc.status < 500 else 400, "InvalidInput", exc.reason or "Bad request.")


def recovery_app(recovery: DirectoryRecovery, layout: Layout, done: asyncio.Event) -> web.Application:
    app = web.Application(middlewares=[_errors, request_bodies(MAX_SHARE_BODY)], client_max_size=MAX_SHARE_BODY)

    def status_body() -> dict[str, object]:
        return {
            "status": "Open" if done.is_set() else "WaitingForRecoveryShares",
            "threshold": recovery.threshold,
            "submitted": len(recovery.submitted),
            "members": recovery.members,
        }

    async def status(_request: web.Request) -> web.StreamResponse:
        return _json(status_body())

    async def encrypted_share(request: web.Request) -> web.StreamResponse:
        member = request.match_info["memberId"]
        try:
            share = recovery.encrypted_share(member)
        except KeyError:
            raise ApiError(404, "ResourceNotFound", "This member holds no recovery share.") from None
        return _json({"memberId": member, "encryptedShare": base64.b64encode(share).decode()})

    async def submit(request: web.Request) -> web.StreamResponse:
        member = request.match_info["memberId"]
        if member not in recovery.members:
            raise ApiError(404, "ResourceNotFound", "This member holds no recovery share.")
        if done.is_set():
            raise ApiError(409, "InvalidState", "The ledger secrets are restored already.")
        try:
            body = await request.json()
            share = base64.b64decode(body["share"], validate=True)
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise ApiError(
                400, "InvalidInput", 'The body must be {"share": "<base64 of the decrypted share>"}.'
            ) from None
        try:
            count = recovery.submit_share(member, share)
        except ValueError:
            raise ApiError(
                400, "InvalidRecoveryShare", "This is not the share issued to this member: check the key used."
            ) from None
        if recovery.ready:
            recovery.restore()
            done.set()
        return _json({**status_body(), "submitted": count})

    async def identity(request: web.Request) -> web.StreamResponse:
        return _json(
            {"ledgerId": request.match_info["ledgerId"], "ledgerTlsCertificate": layout.service_cert.read_text()}
        )

    async def healthz(_request: web.Request) -> web.StreamResponse:
        return _json({"status": "recovering"})

    app.router.add_get("/gov/recovery/status", status)
    app.router.add_get("/gov/recovery/encrypted-shares/{memberId}", encrypted_share)
    app.router.add_post("/gov/recovery/members/{memberId}:recover", submit)
    app.router.add_get("/ledgerIdentity/{ledgerId}", identity)
    app.router.add_get("/healthz", healthz)
    return app


async def wait_for_shares(
    directory: Path, config: ServerConfig, stop: asyncio.Event, announce: RecoveryAnnounce | None = None
) -> int | None:
    """Serve the recovery phase until the ledger secrets are restored; return the port it used
    (``None`` if ``stop`` came first)."""
    layout = Layout(directory)
    recovery = DirectoryRecovery(directory)
    done = asyncio.Event()
    runner = web.AppRunner(recovery_app(recovery, layout, done), access_log=None, **HTTP_OPTIONS)
    await runner.setup()
    tls = server_context([load_cert(layout.node_cert)], load_private_ec(layout.node_key))
    handler = runner.server
    if handler is None:
        raise RuntimeError("the recovery app did not set up")
    gate = Gate(config)
    server = await listen(config.host, config.port, lambda: TLSServerProtocol(tls, handler, gate), gate)
    port = int(server.sockets[0].getsockname()[1])
    log.warning("recovering: waiting for %d of %d members' recovery shares", recovery.threshold, len(recovery.members))
    if announce is not None:
        announce(config.host, port)
    finished = asyncio.ensure_future(done.wait())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({finished, stopping}, return_when=asyncio.FIRST_COMPLETED)
    await asyncio.sleep(0.2)  # let the last submitter have its answer
    gate.closed = True
    server.close()
    await runner.shutdown()
    await runner.cleanup()
    for task in (finished, stopping):
        task.cancel()
    if not done.is_set():
        return None
    log.warning("recovery shares complete: the ledger secrets are restored; opening the ledger")
    return port
