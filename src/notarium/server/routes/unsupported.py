"""ACL features notarium does not run: user-defined endpoints and functions (no JavaScript runtime)."""

from __future__ import annotations

from aiohttp import web

from notarium.auth.rbac import Action
from notarium.server.errors import ApiError
from notarium.server.handlers import requires
from notarium.server.routes.common import path_id

FUNCTION = "/app/userDefinedFunctions/" + path_id("functionId", "execute")
# ACL's operations (acl-rest-api.md §3.12-3.13), each with its own methods: another method is 405
# with an Allow header naming these, as on every other route (GET also answers HEAD)
ROUTES = {
    "/app/userDefinedEndpoints": ("GET", "PUT"),
    "/app/userDefinedEndpoints/runtimeOptions": ("GET", "PATCH"),
    "/app/userDefinedEndpoints/modules": ("GET",),
    "/app/userDefinedFunctions": ("GET",),
    FUNCTION: ("GET", "PUT", "DELETE"),
    "/app/userDefinedFunctions/{functionId}:execute": ("POST",),
}


def register(router: web.UrlDispatcher) -> None:
    for path, methods in ROUTES.items():
        for method in methods:
            if method == "GET":
                router.add_get(path, not_implemented)
            else:
                router.add_route(method, path, not_implemented)


@requires(Action.ENDPOINTS_WRITE)
async def not_implemented(request: web.Request) -> web.StreamResponse:
    """501 NotImplemented (never retried by the SDK): there is no JavaScript runtime.

    Only callers holding ``endpoints/write`` (Administrators, who could manage these in ACL) are
    told so; others get 403 as in ACL.
    """
    raise ApiError(
        501,
        "NotImplemented",
        f"{request.method} {request.path} is not supported by this ledger "
        "(user-defined endpoints and functions are not available).",
    )
