"""Token issuers the ledger trusts (notarium's own API; Administrators, until governance takes it over).

``GET /app/jwtIssuers``, ``PUT /app/jwtIssuers`` (an issuer and its keys: inline ``jwks`` or a
``jwksUri`` fetched now and later), ``DELETE /app/jwtIssuers?issuer=…``. Every change is a ledger
transaction, committed before the answer.
"""

from __future__ import annotations

from aiohttp import web

from notarium.auth.rbac import Action
from notarium.auth.tokens import IssuerConfig
from notarium.server.errors import ApiError, bad_input
from notarium.server.handlers import context, json_response, requires
from notarium.server.issuers import IssuerError
from notarium.server.routes.common import json_object, query


def register(router: web.UrlDispatcher) -> None:
    router.add_get("/app/jwtIssuers", list_issuers)
    router.add_put("/app/jwtIssuers", put_issuer)
    router.add_delete("/app/jwtIssuers", delete_issuer)


def _issuer_json(config: IssuerConfig, key_ids: list[str]) -> dict[str, object]:
    return {**config.to_json(), "keyIds": key_ids}


@requires(Action.JWT_ISSUERS_READ)
async def list_issuers(request: web.Request) -> web.StreamResponse:
    found = context(request).issuers.issuers()
    return json_response({"issuers": [_issuer_json(c, kids) for c, kids in found]})


@requires(Action.JWT_ISSUERS_WRITE)
async def put_issuer(request: web.Request) -> web.StreamResponse:
    """Trust an issuer (or replace its configuration); its keys are recorded with it."""
    body = await json_object(request)
    try:
        config = IssuerConfig.from_json(body)
    except ValueError as exc:
        raise bad_input(str(exc)) from None
    ctx = context(request)
    directory = ctx.issuers
    async with ctx.access_changes:  # the change may bind unbound token users (server/issuers.py)
        try:
            await directory.set_issuer(config, body.get("jwks"))
        except IssuerError as exc:
            raise bad_input(str(exc)) from None
        finally:
            await ctx.users.reload()
    for c, kids in directory.issuers():
        if c.issuer == config.issuer:
            return json_response(_issuer_json(c, kids))
    raise ApiError(503, "ServiceUnavailable", "The issuer was recorded but is not in force yet; retry.")


@requires(Action.JWT_ISSUERS_WRITE)
async def delete_issuer(request: web.Request) -> web.StreamResponse:
    issuer = query(request).get("issuer")
    if not issuer:
        raise ApiError(400, "InvalidQueryParameterValue", "Name the issuer to remove: ?issuer=<its iss value>.")
    ctx = context(request)
    async with ctx.access_changes:
        try:
            removed = await ctx.issuers.remove_issuer(issuer)
        finally:
            await ctx.users.reload()
    if not removed:
        raise ApiError(404, "ResourceNotFound", f"No trusted issuer {issuer[:200]!r}.")
    return web.Response(status=204)
