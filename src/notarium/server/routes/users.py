"""Ledger users: one role each (``/app/users``) or several (``/app/ledgerUsers``), one store."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from notarium.auth.identity import normalise_user_id
from notarium.auth.rbac import Role, highest, parse_role
from notarium.auth.users import User
from notarium.server.app import context, json_response, requires
from notarium.server.errors import ApiError, bad_input
from notarium.server.routes.common import json_object
from notarium.types import TxStatus


def register(router: web.UrlDispatcher) -> None:
    router.add_get("/app/users", list_users)
    router.add_get("/app/users/{userId}", get_user)
    router.add_patch("/app/users/{userId}", patch_user)
    router.add_delete("/app/users/{userId}", delete_user)
    router.add_get("/app/ledgerUsers", list_ledger_users)
    router.add_get("/app/ledgerUsers/{userId}", get_ledger_user)
    router.add_patch("/app/ledgerUsers/{userId}", patch_ledger_user)
    router.add_delete("/app/ledgerUsers/{userId}", delete_user)


def _v1(user: User) -> dict[str, object]:
    return {"assignedRole": highest(user.roles).value, "userId": user.user_id}


def _v2(user: User) -> dict[str, object]:
    return {"assignedRoles": sorted(r.value for r in user.roles), "userId": user.user_id}


def _key(request: web.Request) -> tuple[str, str]:
    user_id = request.match_info["userId"]  # aiohttp percent-decodes: raw (1.x) and encoded (2.x) ids agree
    try:
        return normalise_user_id(user_id), user_id
    except ValueError as exc:
        raise bad_input(str(exc)) from None


def _existing(request: web.Request) -> User:
    key, user_id = _key(request)
    user = context(request).users.get(key)
    if user is None:
        raise ApiError(404, "UserNotFound", f"User {user_id} is not a user of this ledger.")
    return user


async def _store(request: web.Request, user: User | None, key: str) -> None:
    """Write (or remove) a user, refusing to leave the ledger without an Administrator."""
    ctx = context(request)
    if user is None or Role.ADMINISTRATOR not in user.roles:
        admins = [u for u in ctx.users.all() if Role.ADMINISTRATOR in u.roles and u.key != key]
        if not admins:
            raise bad_input("This would leave the ledger without an Administrator; add another one first.")
    txid = await (ctx.users.put(user) if user is not None else ctx.users.delete(key))
    if await ctx.commits.wait(txid) != TxStatus.COMMITTED:
        raise ApiError(503, "ServiceUnavailable", "The change could not be committed; retry.")
    await ctx.users.reload()


@requires(Role.ADMINISTRATOR)
async def list_users(request: web.Request) -> web.StreamResponse:
    return json_response({"ledgerUsers": [_v1(u) for u in context(request).users.all()]})


@requires(Role.ADMINISTRATOR)
async def list_ledger_users(request: web.Request) -> web.StreamResponse:
    return json_response({"ledgerUsers": [_v2(u) for u in context(request).users.all()]})


@requires(Role.ADMINISTRATOR)
async def get_user(request: web.Request) -> web.StreamResponse:
    return json_response(_v1(_existing(request)))


@requires(Role.ADMINISTRATOR)
async def get_ledger_user(request: web.Request) -> web.StreamResponse:
    return json_response(_v2(_existing(request)))


def _one_role(value: object) -> frozenset[Role]:
    return frozenset({parse_role(value)})


def _several_roles(value: object) -> frozenset[Role]:
    if not isinstance(value, list) or not value:
        raise ValueError("Expected a non-empty array of roles.")
    return frozenset(parse_role(r) for r in value)


async def _patch(
    request: web.Request,
    field: str,
    roles_of: Callable[[object], frozenset[Role]],
    render: Callable[[User], dict[str, object]],
) -> web.StreamResponse:
    """Merge-patch a user: create it (``field`` required) or replace its roles (``field`` given)."""
    key, user_id = _key(request)
    body = await json_object(request)
    existing = context(request).users.get(key)
    if field not in body:
        if existing is None:
            raise bad_input(f"At #/: {field} is required to create a user.")
        return json_response(render(existing))
    try:
        roles = roles_of(body[field])
    except ValueError as exc:
        raise bad_input(f"At #/{field}: {exc}") from None
    user = User(key, existing.user_id if existing else user_id, roles)
    await _store(request, user, key)
    return json_response(render(user))


@requires(Role.ADMINISTRATOR)
async def patch_user(request: web.Request) -> web.StreamResponse:
    """Create or update a user with one role (merge-patch: ``{"assignedRole": ...}``)."""
    return await _patch(request, "assignedRole", _one_role, _v1)


@requires(Role.ADMINISTRATOR)
async def patch_ledger_user(request: web.Request) -> web.StreamResponse:
    """Create or update a user with several roles (merge-patch: ``{"assignedRoles": [...]}``)."""
    return await _patch(request, "assignedRoles", _several_roles, _v2)


@requires(Role.ADMINISTRATOR)
async def delete_user(request: web.Request) -> web.StreamResponse:
    user = _existing(request)
    await _store(request, None, user.key)
    return web.Response(status=204)
