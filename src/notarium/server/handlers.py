"""What every request handler builds on: the server's context, authentication, the action guard
(:func:`requires`), and JSON responses.

:mod:`notarium.server.app` (the application and its middlewares) and every route module under
:mod:`notarium.server.routes` import this module; it imports neither, so the routes never import
the application that registers them.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from notarium.auth.identity import CertificateRefusedError, CertificateWindows, Principal, principal_from_certificate
from notarium.auth.rbac import CATALOGUE, Action
from notarium.auth.tokens import TokenError
from notarium.auth.users import User
from notarium.server.context import ServerContext
from notarium.server.errors import ApiError
from notarium.server.forward import FORWARDED_CERT, forwarded_peer_cert
from notarium.server.tls import PEER_CERT_DER

CTX: web.AppKey[ServerContext] = web.AppKey("notarium", ServerContext)
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal", Principal)
USER: web.RequestKey[User] = web.RequestKey("user", User)
TXID_HEADER = "x-ms-ccf-transaction-id"
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


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps(body, separators=(",", ":")),
        content_type="application/json",
        headers=headers,
    )
