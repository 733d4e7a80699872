"""The aiohttp application: its middlewares (ACL errors, access log, metrics, forwarding, api-version)
and the routes it registers. What handlers share (context, authentication, the action guard, JSON
responses) is in :mod:`notarium.server.handlers`, which the route modules import instead of this one."""

from __future__ import annotations

import json
import logging
import time

from aiohttp import web

from notarium.errors import NotariumError
from notarium.server.bodies import request_bodies
from notarium.server.config import API_VERSIONS
from notarium.server.connections import failure_response
from notarium.server.context import ServerContext
from notarium.server.errors import ApiError, error_response
from notarium.server.forward import FORWARDED_CERT, SAFE_METHODS
from notarium.server.handlers import CTX, PRINCIPAL, TXID_HEADER, Handler, context
from notarium.server.tls import PEER_CERT_DER

access_log = logging.getLogger("notarium.access")
log = logging.getLogger("notarium.server")

IDENTITY_MAX_BODY = 1024  # the plain identity listener's requests have no body


# --- middlewares ---------------------------------------------------------------------------------


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: ACL-shaped errors for everything, the transaction-id header, access log, metrics."""
    start = time.perf_counter()
    try:
        response = await handler(request)
    except ApiError as exc:
        response = exc.response()
    except web.HTTPException as exc:
        if exc.status == 404 and request.method == "CONNECT":
            exc = await _connect_refusal(request, exc)
        response = _http_error(exc)
    except NotariumError as exc:  # the engine refused or is gone (closing, failed): the caller may retry
        log.warning("%s %s: the ledger engine could not answer: %s", request.method, request.path, exc)
        response = error_response(503, "ServiceUnavailable", "The ledger is not available; retry later.")
    except Exception as exc:  # the client gone (only the access log sees it), or a 500
        response = failure_response(request, exc, log, "server")
    ctx = context(request)
    if TXID_HEADER not in response.headers:
        response.headers[TXID_HEADER] = str(ctx.ledger.committed)
    elapsed = time.perf_counter() - start
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    ctx.metrics.observe(request.method, route, response.status, elapsed)
    if not access_log.isEnabledFor(logging.INFO):
        return response
    principal = request.get(PRINCIPAL)
    access_log.info(
        json.dumps(
            {
                "method": request.method,
                "path": request.path,  # the query string is left out: it never authenticates, but keep logs lean
                "route": route,
                "status": response.status,
                "ms": round(elapsed * 1000, 3),
                "user": principal.display_id if principal else None,
                "txid": response.headers.get(TXID_HEADER),
                "remote": request.remote,
            },
            separators=(",", ":"),
        )
    )
    return response


async def _connect_refusal(request: web.Request, exc: web.HTTPException) -> web.HTTPException:
    """CONNECT, which notarium never serves: aiohttp reads its target as an authority (host:port)
    and routes nothing, so a path there is routed here: 405 naming the path's methods, as for any
    other method a route lacks (else the 404 stands)."""
    target = request.raw_path
    if not target.startswith("/"):
        return exc
    match = await request.app.router.resolve(request.clone(rel_url=target))
    return match.http_exception if match.http_exception is not None else exc


def _http_error(exc: web.HTTPException) -> web.Response:
    codes = {
        404: ("ResourceNotFound", "No such resource."),
        405: ("MethodNotAllowed", "This method is not allowed on this resource."),
        413: ("RequestTooLarge", "The request body is too large."),
    }
    code, message = codes.get(exc.status, ("InvalidInput", exc.reason or "The request is invalid."))
    status = exc.status if exc.status < 500 else 400
    response = error_response(status, code, message)
    if "Allow" in exc.headers:  # 405 names the methods that are allowed (RFC 9110 §15.5.6)
        response.headers["Allow"] = exc.headers["Allow"]
    return response


@web.middleware
async def forward_writes(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A follower of a replicated service sends writes to the primary (server/forward.py); a primary
    that cannot reach the replicated log refuses them (it could not commit them)."""
    ctx = context(request)
    if request.method in SAFE_METHODS:
        return await handler(request)
    role, forwarder = ctx.ledger.role, ctx.forwarder
    if ctx.ledger.primary:
        if role is not None and not role.store_reachable:
            raise ApiError(
                503, "ServiceUnavailable", "The replicated log (PostgreSQL) cannot be reached right now; retry later."
            )
        return await handler(request)
    if FORWARDED_CERT in request.headers or forwarder is None or role is None or role.primary_address is None:
        raise ApiError(503, "ServiceUnavailable", "This node has no primary to send writes to right now; retry.")
    der = request.transport.get_extra_info(PEER_CERT_DER) if request.transport is not None else None
    return await forwarder.forward(request, role.primary_address, der)


@web.middleware
async def check_api_version(request: web.Request, handler: Handler) -> web.StreamResponse:
    version = request.query.get("api-version")
    if version is not None and version not in API_VERSIONS:
        raise ApiError(
            400,
            "InvalidQueryParameterValue",
            f"Unsupported api-version {version[:40]!r}; supported: {', '.join(sorted(API_VERSIONS))}.",
        )
    return await handler(request)


def create_app(ctx: ServerContext) -> web.Application:
    from notarium.server.routes import (  # noqa: PLC0415
        consistency,
        export,
        gov,
        governance,
        issuers,
        nodes,
        ops,
        roles,
        transactions,
        unsupported,
        users,
        verifier,
    )

    # a node of a replicated service forwards writes while it is a backup (server/forward.py)
    forwarding = [forward_writes] if ctx.forwarder is not None else []
    # bodies with a Content-Encoding, or declared over the limit, are refused before anything reads them
    limit = ctx.config.max_body_bytes
    app = web.Application(
        middlewares=[observe, request_bodies(limit), *forwarding, check_api_version], client_max_size=limit
    )
    app[CTX] = ctx
    modules = (ops, transactions, users, roles, governance, gov, nodes, export, consistency, issuers, verifier)
    for module in (*modules, unsupported):
        module.register(app.router)
    return app


def create_identity_app(ctx: ServerContext) -> web.Application:
    """The plain-HTTP listener: only ``/ledgerIdentity/{ledgerId}`` (public, and needed to bootstrap TLS)."""
    from notarium.server.routes import governance  # noqa: PLC0415

    app = web.Application(
        middlewares=[observe, request_bodies(IDENTITY_MAX_BODY), no_tokens_in_clear, check_api_version],
        client_max_size=IDENTITY_MAX_BODY,
    )
    app[CTX] = ctx
    app.router.add_get("/ledgerIdentity/{ledgerId}", governance.ledger_identity)
    return app


@web.middleware
async def no_tokens_in_clear(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Plain HTTP never authenticates anyone: a bearer token sent in clear is refused, not used."""
    if "Authorization" in request.headers:
        raise ApiError(
            401,
            "InvalidAuthenticationInfo",
            "Tokens are accepted only over HTTPS; this one was sent in clear: consider it exposed.",
        )
    return await handler(request)
