"""What the SDK scenario scripts share (sdk_scenario, mgmt_scenario, host_data_scenario).

Those scripts run inside the SDKs' own venvs with ``-I``, so they import this module by adding
their own directory to ``sys.path``; it uses the standard library only (and azure-core, which
every SDK venv has, inside :class:`StaticToken`). A check records its
failure (with the SDK's status, error code and traceback) and the scenario goes on.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from typing import Any

MAX_ERROR = 4000


class CheckFailedError(Exception):
    """A check found the server (or the SDK) not doing what the contract says."""


def expect(condition: object, message: str) -> None:
    if not condition:
        raise CheckFailedError(message)


def describe(exc: BaseException) -> str:
    parts = [f"{type(exc).__name__}: {exc}"]
    status = getattr(exc, "status_code", None)
    if status is not None:
        parts.append(f"status_code={status}")
    error = getattr(exc, "error", None)
    if error is not None:
        parts.append(f"error.code={getattr(error, 'code', None)}")
    if exc.__cause__ is not None:
        parts.append(f"caused by {type(exc.__cause__).__name__}: {exc.__cause__}")
    if not isinstance(exc, CheckFailedError):
        parts.append("".join(traceback.format_exception(exc)))
    return "\n".join(parts)[-MAX_ERROR:]


def error_code(exc: BaseException) -> str | None:
    """The service's error code (ACL's or ARM's) the SDK parsed out of an error answer."""
    return getattr(getattr(exc, "error", None), "code", None)


def raises(
    exc_type: type[BaseException],
    call: Callable[..., Any],
    *args: Any,
    status: int | None = None,
    code: str | None = None,
    **kwargs: Any,
) -> BaseException:
    """Call and require ``exc_type`` (with this HTTP status and error code, if given)."""
    try:
        result = call(*args, **kwargs)
    except exc_type as exc:
        if status is not None:
            got = getattr(exc, "status_code", None)
            expect(got == status, f"expected HTTP {status}, got {got}: {exc}")
        if code is not None:
            expect(error_code(exc) == code, f"expected error code {code}, got {error_code(exc)}: {exc}")
        return exc
    raise CheckFailedError(f"{getattr(call, '__name__', call)} did not raise {exc_type.__name__}: {result!r}")


class StaticToken:
    """The smallest azure-core TokenCredential: one fixed bearer token, whatever the scope."""

    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken(self.token, int(time.time()) + 3600)


class Checks:
    """The report's named checks: each runs once, its outcome and time recorded."""

    def __init__(self) -> None:
        self.checks: dict[str, dict[str, Any]] = {}

    def check(self, name: str, fn: Callable[[], Any]) -> Any:
        start = time.monotonic()
        try:
            result = fn()
        except Exception as exc:  # every failure is reported, never raised
            self.checks[name] = {"ok": False, "error": describe(exc), "seconds": round(time.monotonic() - start, 3)}
            return None
        self.checks[name] = {"ok": True, "error": None, "seconds": round(time.monotonic() - start, 3)}
        return result
