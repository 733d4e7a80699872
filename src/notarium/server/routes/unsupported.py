"""ACL features notarium does not run: user-defined endpoints and functions (no JavaScript runtime)."""

from __future__ import annotations

from aiohttp import web

from notarium.auth.rbac import Action
from notarium.server.app import requires
from notarium.server.errors import ApiError

PATHS = [
    "/app/userDefinedEndpoints",
    "/app/userDefinedEndpoints/runtimeOptions",
    "/app/userDefinedEndpoints/modules",
    "/app/userDefinedFunctions",
    "/app/userDefinedFunctions/{functionId}",
]


def register(router: web.UrlDispatcher) -> None:
    for path in PATHS:
        router.add_route("*", path, not_implemented)


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
