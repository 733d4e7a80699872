"""Ledger users: one role each (``/app/users``) or several (``/app/ledgerUsers``), one store.

Roles are built-in (Administrator, Contributor, Reader) or user-defined (``/app/roles``). The
one-role view shows the highest built-in role a user has, or, for a user with user-defined roles
only, the first of them by name.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from notarium.auth.identity import normalise_user_id
from notarium.auth.rbac import Action, Role, builtin_role, highest
from notarium.auth.users import User
from notarium.server.app import context, json_response, requires
from notarium.server.context import ServerContext
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


def one_role(roles: frozenset[str]) -> str:
    """The role ``/app/users`` shows: the highest built-in one, else the first user-defined one by name."""
    builtin = frozenset(r for r in map(builtin_role, roles) if r is not None)
    return highest(builtin).value if builtin else min(roles)


def _v1(user: User) -> dict[str, object]:
    return {"assignedRole": one_role(user.roles), "userId": user.user_id}


def _v2(user: User) -> dict[str, object]:
    return {"assignedRoles": sorted(user.roles), "userId": user.user_id}


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


async def _store(ctx: ServerContext, user: User | None, key: str) -> None:
    """Write (or remove) a user, refusing to leave the ledger without an Administrator (a built-in
    one: a user-defined role never counts as Administrator, whatever actions it holds).
    The caller holds ``ctx.access_changes``."""
    if user is None or Role.ADMINISTRATOR not in user.roles:
        admins = [u for u in ctx.users.all() if Role.ADMINISTRATOR in u.roles and u.key != key]
        if not admins:
            raise bad_input("This would leave the ledger without an Administrator; add another one first.")
    txid = await (ctx.users.put(user) if user is not None else ctx.users.delete(key))
    if await ctx.commits.wait(txid) != TxStatus.COMMITTED:
        raise ApiError(503, "ServiceUnavailable", "The change could not be committed; retry.")
    await ctx.users.reload()


@requires(Action.USERS_READ)
async def list_users(request: web.Request) -> web.StreamResponse:
    return json_response({"ledgerUsers": [_v1(u) for u in context(request).users.all()]})


@requires(Action.USERS_READ)
async def list_ledger_users(request: web.Request) -> web.StreamResponse:
    return json_response({"ledgerUsers": [_v2(u) for u in context(request).users.all()]})


@requires(Action.USERS_READ)
async def get_user(request: web.Request) -> web.StreamResponse:
    return json_response(_v1(_existing(request)))


@requires(Action.USERS_READ)
async def get_ledger_user(request: web.Request) -> web.StreamResponse:
    return json_response(_v2(_existing(request)))


def _role_name(ctx: ServerContext, value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("a role is a string")
    if not ctx.roles.exists(value):
        raise ValueError(
            f"unknown role {value[:64]!r}: use Administrator, Contributor, Reader or a user-defined role (/app/roles)"
        )
    return value


def _one_role(ctx: ServerContext, value: object) -> frozenset[str]:
    return frozenset({_role_name(ctx, value)})


def _several_roles(ctx: ServerContext, value: object) -> frozenset[str]:
    if not isinstance(value, list) or not value:
        raise ValueError("Expected a non-empty array of roles.")
    return frozenset(_role_name(ctx, r) for r in value)


async def _patch(
    request: web.Request,
    field: str,
    roles_of: Callable[[ServerContext, object], frozenset[str]],
    render: Callable[[User], dict[str, object]],
) -> web.StreamResponse:
    """Merge-patch a user: create it (``field`` required) or replace its roles (``field`` given)."""
    key, user_id = _key(request)
    body = await json_object(request)
    ctx = context(request)
    async with ctx.access_changes:  # the roles named must still exist when the change is written
        existing = ctx.users.get(key)
        if field not in body:
            if existing is None:
                raise bad_input(f"At #/: {field} is required to create a user.")
            return json_response(render(existing))
        try:
            roles = roles_of(ctx, body[field])
        except ValueError as exc:
            raise bad_input(f"At #/{field}: {exc}") from None
        user = User(key, existing.user_id if existing else user_id, roles)
        await _store(ctx, user, key)
    return json_response(render(user))


@requires(Action.USERS_WRITE)
async def patch_user(request: web.Request) -> web.StreamResponse:
    """Create or update a user with one role (merge-patch: ``{"assignedRole": ...}``)."""
    return await _patch(request, "assignedRole", _one_role, _v1)


@requires(Action.USERS_WRITE)
async def patch_ledger_user(request: web.Request) -> web.StreamResponse:
    """Create or update a user with several roles (merge-patch: ``{"assignedRoles": [...]}``)."""
    return await _patch(request, "assignedRoles", _several_roles, _v2)


@requires(Action.USERS_WRITE)
async def delete_user(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    async with ctx.access_changes:
        user = _existing(request)
        await _store(ctx, None, user.key)
    return web.Response(status=204)
