"""Ledger users: one role each (``/app/users``) or several (``/app/ledgerUsers``), one store.

Roles are built-in (Administrator, Contributor, Reader) or user-defined (``/app/roles``). The
one-role view shows the highest built-in role a user has, or, for a user with user-defined roles
only, the first of them by name.

ACL's semantics, as its own SDK tests expect them (docs/api.md, "Users"):

- ``PATCH /app/users/{userId}`` (``assignedRole``) creates the user or replaces its roles with that
  one; ``PATCH /app/ledgerUsers/{userId}`` (``assignedRoles``) creates the user or **adds** the roles
  (a merge: a role is removed by deleting the user and creating it again), and answers with the
  roles the request assigned.
- ``DELETE`` of either is idempotent: a user that does not exist is 204 too, nothing written.
- From api-version 2024-08-22-preview on (the versions with ``/app/ledgerUsers``), ``PATCH`` and
  ``DELETE /app/users/{userId}`` are 400 ``ApiVersionRedirect``: those versions manage users
  through ``/app/ledgerUsers``. Earlier versions (and requests without one) are served as before.

``{userId}`` follows the one rule of :mod:`notarium.auth.identity`: a fingerprint is a certificate
user, anything else a token user. The optional query parameter ``issuer`` (notarium's) names a
token user's issuer; without it, the id names the only token user with that id, and a new one
belongs to the ledger's only issuer (or is unbound while the ledger trusts none).
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import unquote

from aiohttp import web

from notarium.auth.rbac import Action, Role, builtin_role, highest
from notarium.auth.users import User
from notarium.server.context import ServerContext
from notarium.server.errors import ApiError, bad_input
from notarium.server.handlers import context, json_response, requires
from notarium.server.routes.common import json_object, query
from notarium.types import TxStatus

# api-versions that manage users through /app/ledgerUsers only: /app/users changes are redirected
LEDGER_USERS_VERSIONS = frozenset({"2024-08-22-preview", "2024-12-09-preview"})


def register(router: web.UrlDispatcher) -> None:
    router.add_get("/app/users", list_users)
    router.add_get("/app/users/{userId}", get_user)
    router.add_patch("/app/users/{userId}", patch_user)
    router.add_delete("/app/users/{userId}", delete_user)
    router.add_get("/app/ledgerUsers", list_ledger_users)
    router.add_get("/app/ledgerUsers/{userId}", get_ledger_user)
    router.add_patch("/app/ledgerUsers/{userId}", patch_ledger_user)
    router.add_delete("/app/ledgerUsers/{userId}", delete_ledger_user)


def _redirect_old_endpoint(request: web.Request) -> None:
    """ACL's answer to a change through ``/app/users/{userId}`` under an api-version that has
    ``/app/ledgerUsers``: 400 ``ApiVersionRedirect``, nothing written."""
    version = request.query.get("api-version")
    if version in LEDGER_USERS_VERSIONS:
        raise ApiError(
            400,
            "ApiVersionRedirect",
            f"With api-version {version}, users are managed through /app/ledgerUsers/{{userId}} "
            '(body {"assignedRoles": [...]}); /app/users/{userId} changes users up to api-version '
            "2024-07-26-preview.",
        )


def one_role(roles: frozenset[str]) -> str:
    """The role ``/app/users`` shows: the highest built-in one, else the first user-defined one by name."""
    builtin = frozenset(r for r in map(builtin_role, roles) if r is not None)
    return highest(builtin).value if builtin else min(roles)


def _v1(user: User) -> dict[str, object]:
    return {"assignedRole": one_role(user.roles), "userId": user.user_id}


def _v2(user: User) -> dict[str, object]:
    return {"assignedRoles": sorted(user.roles), "userId": user.user_id}


def _named(request: web.Request) -> tuple[str, str | None]:
    """(user id, issuer or None) as the caller wrote them. The id is percent-decoded strictly (raw
    ``:`` as SDK 1.x sends it and ``%3A`` as 2.x does agree; invalid UTF-8 is a 400)."""
    raw = request.rel_url.raw_path.rsplit("/", 1)[-1]
    try:
        user_id = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise bad_input("The user id is not valid UTF-8.") from None
    issuer = query(request).get("issuer")
    if issuer is not None and not 0 < len(issuer) <= 2048:
        raise ApiError(400, "InvalidQueryParameterValue", "issuer names a token issuer (its iss value).")
    return user_id, issuer


def _find(request: web.Request) -> tuple[User | None, str, str | None]:
    """(the user named, or None; the id; the issuer named)."""
    user_id, issuer = _named(request)
    ctx = context(request)
    try:
        return ctx.users.lookup(user_id, issuer, ctx.issuers.trusted()), user_id, issuer
    except ValueError as exc:
        raise bad_input(str(exc)) from None


def _existing(request: web.Request) -> User:
    user, user_id, issuer = _find(request)
    if user is None:
        of = f" of issuer {issuer[:200]}" if issuer is not None else ""
        raise ApiError(404, "UserNotFound", f"User {user_id[:200]}{of} is not a user of this ledger.")
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
    *,
    merge: bool,
) -> web.StreamResponse:
    """Merge-patch a user: create it (``field`` required) or set its roles (``field`` given): with
    ``merge``, the roles given are added to the user's and the answer shows those given (ACL's
    ``/app/ledgerUsers``); otherwise they replace the user's (``/app/users``)."""
    _find(request)  # a malformed id is refused before the body is read
    body = await json_object(request)
    ctx = context(request)
    async with ctx.access_changes:  # the roles named must still exist when the change is written
        existing, user_id, issuer = _find(request)  # again: users and issuers may have changed meanwhile
        if field not in body:
            if existing is None:
                raise bad_input(f"At #/: {field} is required to create a user.")
            return json_response(render(existing))
        try:
            roles = roles_of(ctx, body[field])
        except ValueError as exc:
            raise bad_input(f"At #/{field}: {exc}") from None
        if existing is not None:
            held = existing.roles | roles if merge else roles
            user = User(existing.key, existing.user_id, held, existing.issuer)
        else:
            try:
                key, bound = ctx.users.new_key(user_id, issuer, ctx.issuers.trusted())
            except ValueError as exc:
                raise bad_input(str(exc)) from None
            user = User(key, user_id, roles, bound)
        if user != existing:  # roles already held: answered without a write
            await _store(ctx, user, user.key)
    return json_response(render(User(user.key, user.user_id, roles, user.issuer)))


@requires(Action.USERS_WRITE)
async def patch_user(request: web.Request) -> web.StreamResponse:
    """Create or update a user with one role (merge-patch: ``{"assignedRole": ...}`` replaces its roles)."""
    _redirect_old_endpoint(request)
    return await _patch(request, "assignedRole", _one_role, _v1, merge=False)


@requires(Action.USERS_WRITE)
async def patch_ledger_user(request: web.Request) -> web.StreamResponse:
    """Create a user with several roles, or add roles to it (merge-patch: ``{"assignedRoles": [...]}``)."""
    return await _patch(request, "assignedRoles", _several_roles, _v2, merge=True)


async def _delete(request: web.Request) -> web.StreamResponse:
    """Remove the user named; one that does not exist is already removed (204, nothing written)."""
    ctx = context(request)
    async with ctx.access_changes:
        user, _, _ = _find(request)
        if user is not None:
            await _store(ctx, None, user.key)
    return web.Response(status=204)


@requires(Action.USERS_WRITE)
async def delete_user(request: web.Request) -> web.StreamResponse:
    _redirect_old_endpoint(request)
    return await _delete(request)


@requires(Action.USERS_WRITE)
async def delete_ledger_user(request: web.Request) -> web.StreamResponse:
    return await _delete(request)
