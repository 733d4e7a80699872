"""The aiohttp application: routes, authentication, ACL errors, access log, metrics."""

from __future__ import annotations

import datetime
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from notarium.auth.identity import CertificateRefusedError, CertificateWindows, Principal, principal_from_certificate
from notarium.auth.rbac import CATALOGUE, Action
from notarium.auth.tokens import TokenError
from notarium.auth.users import User
from notarium.errors import NotariumError
from notarium.server.bodies import request_bodies
from notarium.server.config import API_VERSIONS
from notarium.server.connections import failure_response
from notarium.server.context import ServerContext
from notarium.server.errors import ApiError, error_response
from notarium.server.forward import FORWARDED_CERT, SAFE_METHODS, forwarded_peer_cert
from notarium.server.tls import PEER_CERT_DER

access_log = logging.getLogger("notarium.access")
log = logging.getLogger("notarium.server")

CTX: web.AppKey[ServerContext] = web.AppKey("notarium", ServerContext)
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal", Principal)
USER: web.RequestKey[User] = web.RequestKey("user", User)
TXID_HEADER = "x-ms-ccf-transaction-id"
IDENTITY_MAX_BODY = 1024  # the plain identity listener's requests have no body
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# the validity periods of users' certificates (by digest; nothing is kept for other certificates)
CERTIFICATE_WINDOWS = CertificateWindows()


def context(request: web.Request) -> ServerContext:
    return request.app[CTX]


# --- authentication and authorization ---------------------------------------------------------


async def authenticate(request: web.Request) -> Principal:
    """The caller's identity: a bearer token if one is sent (ACL's SDK sends one kind only), else
    the client certificate. Refusals are 401 ``InvalidAuthenticationInfo`` saying why."""
    authorization = request.headers.get("Authorization")
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "InvalidAuthenticationInfo", "Only Bearer tokens are accepted in Authorization.")
        try:
            return await context(request).issuers.principal(token.strip())
        except TokenError as exc:
            raise ApiError(401, "InvalidAuthenticationInfo", f"The bearer token is refused: {exc}.") from None
    der = request.transport.get_extra_info(PEER_CERT_DER) if request.transport is not None else None
    forwarded = request.headers.get(FORWARDED_CERT)
    if forwarded is not None:  # from a follower node, for its caller
        der = forwarded_peer_cert(der, forwarded, context(request).service_cert)
    if der is None:
        raise ApiError(401, "InvalidAuthenticationInfo", "No client certificate or token was presented.")
    principal = principal_from_certificate(der)
    if context(request).users.get(principal.key) is not None:  # a user's: it must be within its validity
        try:
            CERTIFICATE_WINDOWS.check(principal.key, der, datetime.datetime.now(datetime.UTC))
        except CertificateRefusedError as exc:
            raise ApiError(401, "InvalidAuthenticationInfo", str(exc)) from None
    return principal


def authorize(request: web.Request, principal: Principal, action: Action) -> User:
    """The user ``principal`` is, if one of its roles holds ``action``: else 401 (not a user) or 403."""
    ctx = context(request)
    user = ctx.users.find(principal, ctx.issuers.trusted())
    if user is None:
        message = f"The caller {principal.display_id[:200]} is not a user of this ledger."
        if ctx.users.unbound(principal):
            message += (
                " A token user recorded without its issuer belongs to the ledger's only issuer, and this ledger"
                " trusts several: an Administrator adds the user again, naming its issuer (?issuer=)."
            )
        raise ApiError(401, "InvalidAuthenticationInfo", message)
    if action not in ctx.roles.actions_of(user.roles):
        raise ApiError(403, "NotAllowed", f"Not allowed to call {request.method} {request.path}.")
    return user


def requires(action: Action | None) -> Callable[[Handler], Handler]:
    """Guard a handler with the one action a caller must hold (``None``: anyone, unauthenticated).

    The caller is authenticated, must be a user, and one of its roles must hold ``action``
    (:func:`authorize`). The handler gets ``required_action``, ``required_role`` (the least built-in
    role holding the action by default: what the role matrix and the OpenAPI document show) and
    ``role_setting`` (the ServerConfig field that can move that role, e.g. ``export_role``, or None).
    """
    if action is not None and not isinstance(action, Action):
        raise TypeError(f"requires() takes an Action (notarium.auth.rbac.Action) or None, not {action!r}")
    info = CATALOGUE[action] if action is not None else None

    def wrap(handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            if action is not None:
                principal = await authenticate(request)
                request[PRINCIPAL] = principal
                request[USER] = authorize(request, principal, action)
            return await handler(request)

        guarded.__name__ = handler.__name__
        guarded.__doc__ = handler.__doc__
        guarded.required_action = action  # type: ignore[attr-defined]
        guarded.required_role = info.least if info is not None else None  # type: ignore[attr-defined]
        guarded.role_setting = info.setting if info is not None else None  # type: ignore[attr-defined]
        guarded.authentication = None  # type: ignore[attr-defined]
        return guarded

    return wrap


MEMBER_SIGNATURE = "member-signature"


def member_signed(handler: Handler) -> Handler:
    """A governance request (routes/gov.py): no TLS client certificate, token or role is asked for;
    the body is a COSE_Sign1 that the handler verifies against the consortium's members. Declared
    as ``required_action = None`` with ``authentication = "member-signature"``."""
    guarded = requires(None)(handler)
    guarded.authentication = MEMBER_SIGNATURE  # type: ignore[attr-defined]
    return guarded


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


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps(body, separators=(",", ":")),
        content_type="application/json",
        headers=headers,
    )
