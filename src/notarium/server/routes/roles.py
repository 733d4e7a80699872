"""Roles (``/app/roles``, ACL 2024-07-26-preview): read every role, manage user-defined ones.

A role is shown with ACL's field names, ``{"role_name": X, "role_actions": [...]}``, in ACL's
envelope ``{"roles": [...]}`` (what 2.0.0b*'s ``get_user_defined_role`` reads as its ``Roles``
model, and what ACL's own tests read back). Requests may name the fields as ACL does or in camelCase
(``roleName``, ``roleActions``), as notarium's earlier clients and the SDK 2.x models send them.

- ``GET /app/roles?roleName=X``: ``{"roles": [X]}`` (built-in or user-defined; 404 if there is
  none); without ``roleName``: every role, built-in ones first.
- ``PUT /app/roles``: create or replace user-defined roles (their actions become exactly the ones
  given).
- ``PATCH /app/roles``: add actions to existing user-defined roles (ACL: "if the desire is to remove
  an existing action, the role must be deleted and recreated"); a role that does not exist is 404.
- ``DELETE /app/roles?roleName=X``: remove a user-defined role no user holds.

PUT and PATCH take ACL's two body forms: a bare array of roles (SDK 1.2.0b1) or ``{"roles": [...]}``
(2.0.0b*); they answer 200 with ``{"roles": [...]}`` as stored, DELETE 200 without a body (what the
SDKs accept). A request is checked whole before anything is written, and is one ledger transaction,
committed before the answer: the next request sees the change.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from notarium.auth.rbac import Action, builtin_role, check_custom_role_name, parse_actions
from notarium.auth.roles import MAX_CUSTOM_ROLES, RoleDefinition
from notarium.server.context import ServerContext
from notarium.server.errors import ApiError, bad_input
from notarium.server.handlers import context, json_response, requires
from notarium.server.routes.common import json_value, query
from notarium.types import TxId, TxStatus

MAX_LISTED_USERS = 5  # users named when a role still assigned cannot be deleted


def register(router: web.UrlDispatcher) -> None:
    router.add_get("/app/roles", get_roles)
    router.add_put("/app/roles", put_roles)
    router.add_patch("/app/roles", patch_roles)
    router.add_delete("/app/roles", delete_role)


def _bad_query(message: str) -> ApiError:
    return ApiError(400, "InvalidQueryParameterValue", message)


def _role_name_query(request: web.Request) -> str | None:
    """``?roleName=``, if given: a built-in role's exact name or a valid user-defined role name."""
    name = query(request).get("roleName")
    if name is not None and builtin_role(name) is None:
        try:
            check_custom_role_name(name)
        except ValueError as exc:
            raise _bad_query(f"roleName: {exc}.") from None
    return name


def _not_found(name: str) -> ApiError:
    return ApiError(404, "ResourceNotFound", f"There is no role {name!r}.")


# (ACL's name, camelCase name) of a role's fields; either spelling is accepted, not both at once
NAME_FIELDS = ("role_name", "roleName")
ACTIONS_FIELDS = ("role_actions", "roleActions")


def _field(item: dict[str, Any], names: tuple[str, str], where: str) -> tuple[str, object]:
    """(the spelling used, its value) of a role's field; ACL's spelling when it is missing."""
    given = [n for n in names if n in item]
    if len(given) > 1:
        raise bad_input(f"At {where}: give {names[0]} or {names[1]}, not both.")
    name = given[0] if given else names[0]
    return name, item.get(name)


def _parse_roles(body: Any) -> list[RoleDefinition]:
    """Either body form, checked whole: valid names, known actions, no name twice."""
    if isinstance(body, dict):
        if "roles" not in body:
            raise bad_input('At #/: Expected an array of roles or {"roles": [...]}.')
        items, where = body["roles"], "#/roles"
    else:
        items, where = body, "#"
    if not isinstance(items, list) or not items:
        raise bad_input(f"At {where}: Expected a non-empty array of roles.")
    if len(items) > MAX_CUSTOM_ROLES:
        raise bad_input(f"At {where}: At most {MAX_CUSTOM_ROLES} roles per request.")
    roles: dict[str, RoleDefinition] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise bad_input(f'At {where}/{i}: Expected an object {{"role_name": ..., "role_actions": [...]}}.')
        name_field, value = _field(item, NAME_FIELDS, f"{where}/{i}")
        try:
            name = check_custom_role_name(value)
        except ValueError as exc:
            raise bad_input(f"At {where}/{i}/{name_field}: {exc}.") from None
        if name in roles:
            raise bad_input(f"At {where}/{i}/{name_field}: the role {name!r} is given twice.")
        actions_field, value = _field(item, ACTIONS_FIELDS, f"{where}/{i}")
        try:
            actions = parse_actions(value)
        except ValueError as exc:
            raise bad_input(f"At {where}/{i}/{actions_field}: {exc}.") from None
        roles[name] = RoleDefinition(name, actions)
    return list(roles.values())


def _answer(roles: list[RoleDefinition]) -> web.StreamResponse:
    return json_response({"roles": [r.to_api() for r in roles]})


async def _commit(ctx: ServerContext, txid: TxId) -> None:
    if await ctx.commits.wait(txid) != TxStatus.COMMITTED:
        raise ApiError(503, "ServiceUnavailable", "The change could not be committed; retry.")
    await ctx.roles.reload()


async def _write(ctx: ServerContext, roles: list[RoleDefinition]) -> None:
    """Record the roles that differ from the committed ones, in one transaction (none: no write)."""
    changed = [r for r in roles if ctx.roles.get_custom(r.name) != r]
    if changed:
        await _commit(ctx, await ctx.roles.put(changed))


@requires(Action.ROLES_READ)
async def get_roles(request: web.Request) -> web.StreamResponse:
    """One role (``?roleName=``) or all of them, in ACL's envelope ``{"roles": [...]}``."""
    roles = context(request).roles
    name = _role_name_query(request)
    if name is None:
        return _answer([*roles.builtin(), *roles.custom()])
    role = roles.get(name)
    if role is None:
        raise _not_found(name)
    return _answer([role])


@requires(Action.ROLES_WRITE)
async def put_roles(request: web.Request) -> web.StreamResponse:
    """Create user-defined roles, or replace the actions of existing ones."""
    roles = _parse_roles(await json_value(request))
    ctx = context(request)
    async with ctx.access_changes:
        new = {r.name for r in roles if ctx.roles.get_custom(r.name) is None}
        total = len(ctx.roles.custom()) + len(new)
        if total > MAX_CUSTOM_ROLES:
            raise bad_input(f"A ledger holds at most {MAX_CUSTOM_ROLES} user-defined roles; delete some first.")
        await _write(ctx, roles)
    return _answer(roles)


@requires(Action.ROLES_WRITE)
async def patch_roles(request: web.Request) -> web.StreamResponse:
    """Add actions to existing user-defined roles (their other actions stay)."""
    given = _parse_roles(await json_value(request))
    ctx = context(request)
    async with ctx.access_changes:
        merged = []
        for role in given:
            existing = ctx.roles.get_custom(role.name)
            if existing is None:
                raise _not_found(role.name)
            merged.append(RoleDefinition(role.name, existing.actions | role.actions))
        await _write(ctx, merged)
    return _answer(merged)


@requires(Action.ROLES_WRITE)
async def delete_role(request: web.Request) -> web.StreamResponse:
    """Remove a user-defined role; refused while a user still holds it (users never hold unknown roles)."""
    name = _role_name_query(request)
    if name is None:
        raise _bad_query("Name the role to delete: ?roleName=<name>.")
    if builtin_role(name) is not None:
        raise bad_input(f"{name!r} is a built-in role; built-in roles cannot be deleted.")
    ctx = context(request)
    async with ctx.access_changes:
        if ctx.roles.get_custom(name) is None:
            raise _not_found(name)
        holders = [u.user_id for u in ctx.users.all() if name in u.roles]
        if holders:
            shown = ", ".join(holders[:MAX_LISTED_USERS])
            more = f" and {len(holders) - MAX_LISTED_USERS} more" if len(holders) > MAX_LISTED_USERS else ""
            raise bad_input(
                f"The role {name!r} is assigned to {len(holders)} user(s): {shown}{more}; "
                "assign them other roles first (/app/ledgerUsers)."
            )
        await _commit(ctx, await ctx.roles.delete(name))
    return web.Response(status=200)
