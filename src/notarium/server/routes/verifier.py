"""``GET /verify``: the standalone receipt verifier page, unauthenticated (notarium.verify.standalone)."""

from __future__ import annotations

from aiohttp import web

from notarium.server.handlers import requires
from notarium.verify import standalone


def register(router: web.UrlDispatcher) -> None:
    router.add_get("/verify", verify_page)


@requires(None)
async def verify_page(request: web.Request) -> web.StreamResponse:
    """The page verifies receipts in the browser; it asks nothing of this server once loaded."""
    return web.Response(
        body=standalone.page(),
        content_type="text/html",
        charset="utf-8",
        headers={
            "Content-Security-Policy": standalone.header_policy(),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )
