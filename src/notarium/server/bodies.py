"""Request bodies: never inflated, refused before they are read when they cannot be taken.

ACL's API has no compressed request bodies. aiohttp would inflate a ``Content-Encoding: gzip`` (or
deflate, br, zstd) body in its parser as the bytes arrive, for any caller, authenticated or not, even
after the request was answered (it drains an unread body): 2 MiB of gzip costs seconds of CPU. So:

- every server behind a :class:`~notarium.server.listener.Listener` is made with
  :data:`HTTP_OPTIONS`: its parser never inflates anything (``auto_decompress``), and a body left
  unread by an early answer is never drained (``lingering_time``): the connection closes instead
  (:mod:`notarium.server.connections`);
- :func:`request_bodies`, a middleware ahead of authentication and of every handler in every
  application that listens (the data plane, its plain identity listener, the ledger host, the
  recovery phase), refuses a body sent with a ``Content-Encoding`` other than ``identity`` (415
  ``UnsupportedMediaType``) and a body whose declared ``Content-Length`` exceeds the limit (413
  ``RequestTooLarge``), in ACL's error format, before a byte of the body is read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from notarium.server.errors import error_response

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# web.AppRunner(app, ..., **HTTP_OPTIONS) for every application served by a Listener
HTTP_OPTIONS: Final[dict[str, Any]] = {"auto_decompress": False, "lingering_time": 0.0}

UNSUPPORTED_ENCODING = (
    "Request bodies are accepted only without a Content-Encoding (or with identity): send the body uncompressed."
)


def encoded(request: web.BaseRequest) -> bool:
    """Whether ``request`` has a body sent with a content coding other than ``identity``."""
    if not request.body_exists:
        return False
    for value in request.headers.getall(hdrs.CONTENT_ENCODING, ()):
        for coding in value.split(","):
            if coding.strip().lower() not in ("", "identity"):
                return True
    return False


def refusal(request: web.BaseRequest, max_bytes: int) -> web.Response | None:
    """The answer to a request whose body cannot be taken, whatever route and caller; else ``None``."""
    if encoded(request):
        return error_response(415, "UnsupportedMediaType", UNSUPPORTED_ENCODING)
    length = request.content_length
    if length is not None and length > max_bytes:
        return error_response(
            413, "RequestTooLarge", f"The request body is larger than this server accepts ({max_bytes} bytes)."
        )
    return None


def request_bodies(max_bytes: int) -> Middleware:
    """A middleware refusing (:func:`refusal`) bodies with a content coding or over ``max_bytes``."""

    @web.middleware
    async def bodies(request: web.Request, handler: Handler) -> web.StreamResponse:
        answer = refusal(request, max_bytes)
        if answer is not None:
            return answer
        return await handler(request)

    return bodies
