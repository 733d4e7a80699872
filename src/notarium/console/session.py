"""Who may use the console: a one-time login token, then a session cookie; CSRF tokens for writes.

``notarium console`` prints one URL holding a random login token. Its first use opens a session
(a random cookie, ``HttpOnly``, ``SameSite=Strict``, ``Secure`` under TLS) and spends the token:
the same URL never opens a second session. Every page needs the session (401 otherwise). Every
POST must carry the session's CSRF token (a form field or the ``X-CSRF-Token`` header) and, when
the browser sends one, an ``Origin`` that is the console's own. Only digests of the secrets are
kept, compared in constant time; none is ever logged.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

COOKIE = "notarium_console"
SECURE_COOKIE = "__Host-notarium_console"  # under TLS: the cookie cannot be set by another host or path
SESSION_SECONDS = 12 * 3600


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class Session:
    csrf: str
    expires: float

    def csrf_ok(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented.encode(), self.csrf.encode())


class Sessions:
    """The login token and the sessions it opened (one, normally)."""

    def __init__(self, token: str | None = None) -> None:
        self.login_token = token or secrets.token_urlsafe(32)
        self._token_digest = _digest(self.login_token)
        self._spent = False
        self._sessions: dict[str, Session] = {}

    def login(self, presented: str) -> tuple[str, Session] | None:
        """Spend the login token: a new session's cookie value and the session, or None."""
        if self._spent or not hmac.compare_digest(_digest(presented), self._token_digest):
            return None
        self._spent = True
        cookie = secrets.token_urlsafe(32)
        session = Session(csrf=secrets.token_urlsafe(32), expires=time.monotonic() + SESSION_SECONDS)
        self._sessions[_digest(cookie)] = session
        return cookie, session

    def find(self, cookie: str | None) -> Session | None:
        if not cookie:
            return None
        session = self._sessions.get(_digest(cookie))
        if session is None:
            return None
        if session.expires < time.monotonic():
            del self._sessions[_digest(cookie)]
            return None
        return session
