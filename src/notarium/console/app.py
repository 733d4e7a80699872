"""The console's aiohttp application: security headers, login, CSRF, templates, routes.

Pages are rendered on the server with Jinja2 (autoescaping on: every ledger value is text); a
little JavaScript (htmx, vendored, and ``console.js``) updates parts of pages. The
Content-Security-Policy allows scripts and styles from the console itself only: no inline script,
no ``eval``, no other origin.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from notarium.console.session import COOKIE, SECURE_COOKIE, SESSION_SECONDS, Session, Sessions
from notarium.errors import NotariumError
from notarium.verify import standalone

log = logging.getLogger("notarium.console")
HERE = Path(__file__).parent
STATIC = HERE / "static"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # never a Referer to another site (a page URL can name a transaction); same-origin keeps the
    # Origin header of the console's own POSTs, which "no-referrer" would turn into "null"
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
PUBLIC_PREFIXES = ("/static/", "/login", "/verifier")
MAX_BODY = 2 << 20  # a pasted or uploaded receipt (with its claims) is far smaller


@dataclass
class ConsoleState:
    sessions: Sessions
    env: jinja2.Environment
    secure: bool
    allowed_hosts: frozenset[str] | None
    mode: str  # "ledger" (--profile) or "host" (--host-dir)
    extra: dict[str, Any] = field(default_factory=dict)


STATE: web.AppKey[ConsoleState] = web.AppKey("console", ConsoleState)
SESSION: web.RequestKey[Session] = web.RequestKey("session", Session)


def state(request: web.Request) -> ConsoleState:
    return request.app[STATE]


class PageError(Exception):
    """A refusal shown as a page (HTML) or, under /api/, as ACL's error JSON."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def render(request: web.Request, template: str, http_status: int = 200, **values: Any) -> web.Response:
    st = state(request)
    session = request.get(SESSION)
    html = st.env.get_template(template).render(
        csrf=session.csrf if session is not None else "",
        mode=st.mode,
        request_path=request.path,
        **values,
    )
    return web.Response(text=html, status=http_status, content_type="text/html", charset="utf-8")


def _error_page(request: web.Request, status: int, code: str, message: str) -> web.Response:
    if request.path.startswith("/api/"):
        return web.json_response({"error": {"code": code, "message": message}}, status=status)
    return render(request, "error.html", http_status=status, code=code, message=message)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: Host check, session, CSRF, errors as pages, and the security headers."""
    try:
        response = await _guarded(request, handler)
    except PageError as exc:
        response = _error_page(request, exc.status, exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _error_page(request, exc.status, "NotFound" if exc.status == 404 else "InvalidRequest", exc.reason)
    except NotariumError as exc:  # the ledger refused or failed: say so (never a secret: errors carry none)
        status = getattr(exc, "status", 502)
        code = getattr(exc, "code", "LedgerError")
        response = _error_page(request, status if 400 <= status < 600 else 502, code, exc.diagnostics())
    except Exception:  # a bug: logged here, and the page says no more than that
        log.exception("%s %s failed", request.method, request.path)
        response = _error_page(request, 500, "InternalError", "The console failed to answer; its log says why.")
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if not request.path.startswith("/static/"):
        response.headers["Cache-Control"] = "no-store"
    return response


async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    st = state(request)
    if (
        st.allowed_hosts is not None and request.host.lower() not in st.allowed_hosts
    ):  # DNS rebinding: only the console's own names
        raise PageError(421, "MisdirectedRequest", "This console answers only to the address it printed.")
    if request.path.startswith(PUBLIC_PREFIXES):
        return await handler(request)
    session = st.sessions.find(request.cookies.get(SECURE_COOKIE if st.secure else COOKIE))
    if session is None:
        raise PageError(
            401,
            "InvalidAuthenticationInfo",
            "Open the URL that `notarium console` printed (it holds a one-time login token).",
        )
    request[SESSION] = session
    if request.method not in ("GET", "HEAD"):
        await _check_csrf(request, session)
    return await handler(request)


async def _check_csrf(request: web.Request, session: Session) -> None:
    """Every write: no other site's Origin, and the session's CSRF token (header or form field)."""
    origin = request.headers.get("Origin")
    if origin is not None:
        scheme = "https" if state(request).secure else "http"
        if origin != f"{scheme}://{request.host}":
            raise PageError(403, "CrossSiteRequest", "A request from another site was refused.")
    if request.headers.get("Sec-Fetch-Site") not in (None, "same-origin", "none"):
        raise PageError(403, "CrossSiteRequest", "A request from another site was refused.")
    presented = request.headers.get("X-CSRF-Token")
    if presented is None and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        field = (await request.post()).get("csrf")  # aiohttp keeps the parsed form for the handler
        presented = field if isinstance(field, str) else None
    if not session.csrf_ok(presented):
        raise PageError(403, "InvalidCsrfToken", "The page is out of date (no valid CSRF token): reload it.")


async def form(request: web.Request) -> dict[str, str]:
    """The POSTed form's text fields (its CSRF token was checked by the middleware)."""
    data = await request.post()
    return {k: v for k, v in data.items() if isinstance(v, str)}


async def upload(request: web.Request) -> tuple[dict[str, str], dict[str, bytes]]:
    """A multipart form's text fields and files (the receipt upload)."""
    data = await request.post()
    values: dict[str, str] = {}
    files: dict[str, bytes] = {}
    for k, v in data.items():
        if isinstance(v, str):
            values[k] = v
        elif isinstance(v, web.FileField):
            files[k] = v.file.read(MAX_BODY + 1)
    return values, files


async def login(request: web.Request) -> web.StreamResponse:
    st = state(request)
    opened = st.sessions.login(request.query.get("token", ""))
    if opened is None:
        raise PageError(
            401,
            "InvalidAuthenticationInfo",
            "This login link is not valid or was already used: restart `notarium console` for a new one.",
        )
    cookie, _session = opened
    response = web.HTTPSeeOther("/")  # the token leaves the address bar and the history
    response.set_cookie(
        SECURE_COOKIE if st.secure else COOKIE,
        cookie,
        httponly=True,
        samesite="Strict",
        secure=st.secure,
        path="/",
        max_age=SESSION_SECONDS,
    )
    return response


async def verifier(_request: web.Request) -> web.StreamResponse:
    """The standalone receipt verifier (the same file ``notarium serve`` answers at ``/verify``)."""
    return web.Response(
        body=standalone.page(),
        content_type="text/html",
        charset="utf-8",
        headers={"Content-Security-Policy": standalone.header_policy()},
    )


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("notarium.console", "templates"),
        autoescape=True,  # every value is text; nothing from a ledger is ever marked safe
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["short"] = lambda value, n=16: value if len(value) <= n else value[:n] + "…"
    return env


def create_app(
    mode: str,
    *,
    sessions: Sessions,
    secure: bool,
    allowed_hosts: frozenset[str],
    setup: Callable[[web.Application], None],
) -> web.Application:
    app = web.Application(middlewares=[guard], client_max_size=MAX_BODY)
    app[STATE] = ConsoleState(sessions, environment(), secure, allowed_hosts, mode)
    app.router.add_get("/login", login)
    app.router.add_get("/verifier", verifier)
    app.router.add_static("/static/", STATIC, append_version=False)
    setup(app)
    return app
