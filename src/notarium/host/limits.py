"""Per-ledger settings of a host: the largest entry a ledger accepts and the rate of its requests.

They are set through the ledger's ARM resource, as **tags** (docs/design/host.md#per-ledger-settings):
neither version of azure-mgmt-confidentialledger has a property for them, and tags pass unchanged
through both SDKs, the Azure CLI and ARM templates:

- ``notarium.maxEntryBytes``: entry contents larger than this (UTF-8 bytes) are refused with the data
  plane's 400 ``EntrySizeCapacityExceeded``. At most the host's ``--max-entry-bytes`` (the ceiling the
  host operator sets); without the tag, the host's value applies.
- ``notarium.requestsPerSecond``: the ledger's data-plane requests are admitted at this rate (a token
  bucket holding one second of requests, at least one); beyond it 429 ``TooManyRequests`` with
  ``Retry-After``, nothing applied. Without the tag, no limit.

Tag names are compared regardless of case (as ARM does); any other tag starting with ``notarium.`` is
refused, so that a misspelt setting is never silently ignored.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from aiohttp import web

from notarium.host.names import InvalidRequestError
from notarium.server.errors import error_response

MAX_ENTRY_TAG = "notarium.maxEntryBytes"
RATE_TAG = "notarium.requestsPerSecond"
SETTING_TAGS = (MAX_ENTRY_TAG, RATE_TAG)
MIN_RATE = 0.001  # one request every 1,000 s
MAX_RATE = 1_000_000.0


@dataclass(frozen=True, slots=True)
class LedgerLimits:
    """One ledger's own settings (``None``: the host's default)."""

    max_entry_bytes: int | None = None
    requests_per_second: float | None = None


def _tag(tags: dict[str, str], name: str) -> str | None:
    for key, value in tags.items():
        if key.lower() == name.lower():
            return value
    return None


def ledger_limits(tags: dict[str, str], ceiling: int) -> LedgerLimits:
    """The settings a resource's tags carry; :class:`InvalidRequestError` (400
    ``InvalidRequestContent``) for a malformed or unknown one."""
    known = {t.lower() for t in SETTING_TAGS}
    for key in tags:
        if key.lower().startswith("notarium.") and key.lower() not in known:
            raise InvalidRequestError(
                f"The tag {key[:64]!r} is not a notarium setting; the settings are {', '.join(SETTING_TAGS)}.",
                code="InvalidRequestContent",
            )
    entry = _tag(tags, MAX_ENTRY_TAG)
    rate = _tag(tags, RATE_TAG)
    limits = LedgerLimits()
    if entry is not None:
        text = entry.strip()
        if not text.isdigit() or not 1 <= int(text) <= ceiling:
            raise InvalidRequestError(
                f"The tag {MAX_ENTRY_TAG} must be a whole number of bytes from 1 to {ceiling} (this host's "
                "--max-entry-bytes).",
                code="InvalidRequestContent",
            )
        limits = LedgerLimits(int(text), None)
    if rate is not None:
        try:
            value = float(rate.strip())
        except ValueError:
            value = math.nan
        if not MIN_RATE <= value <= MAX_RATE:  # NaN and infinities fail too
            raise InvalidRequestError(
                f"The tag {RATE_TAG} must be a number of requests a second from {MIN_RATE:g} to {MAX_RATE:g}.",
                code="InvalidRequestContent",
            )
        limits = LedgerLimits(limits.max_entry_bytes, value)
    return limits


@dataclass(slots=True)
class RequestRate:
    """A token bucket: ``rate`` requests a second, up to ``burst`` at once (one second's worth)."""

    rate: float
    burst: float = field(init=False)
    tokens: float = field(init=False)
    updated: float = field(init=False)

    def __post_init__(self) -> None:
        self.burst = max(1.0, self.rate)
        self.tokens = self.burst
        self.updated = time.monotonic()

    def take(self, now: float) -> float:
        """0 if a request may go now (and count it), else the seconds until one may."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class LimitBook:
    """The settings and request buckets of a host's ledgers (by name key), kept by this process:
    each host process admits a ledger's requests at the ledger's rate on its own."""

    def __init__(self) -> None:
        self._limits: dict[str, LedgerLimits] = {}
        self._rates: dict[str, RequestRate] = {}

    def get(self, key: str) -> LedgerLimits:
        return self._limits.get(key, LedgerLimits())

    def set(self, key: str, limits: LedgerLimits) -> None:
        """Record a ledger's settings; a changed rate starts a full bucket."""
        if self._limits.get(key) == limits:
            return
        self._limits[key] = limits
        self._rates.pop(key, None)
        if limits.requests_per_second is not None:
            self._rates[key] = RequestRate(limits.requests_per_second)

    def forget(self, key: str) -> None:
        self._limits.pop(key, None)
        self._rates.pop(key, None)

    def admit(self, key: str, now: float | None = None) -> float:
        """0 if a request to the ledger may go now, else the seconds to wait."""
        bucket = self._rates.get(key)
        if bucket is None:
            return 0.0
        return bucket.take(time.monotonic() if now is None else now)


def too_many_requests(name: str, rate: float | None, wait: float) -> web.Response:
    """429 ``TooManyRequests`` with ``Retry-After`` (whole seconds): nothing was applied, so a client
    may send the request again then (azure-core does, by itself)."""
    seconds = max(1, math.ceil(wait))
    shown = f"{rate:g}" if rate is not None else "its"
    response = error_response(
        429,
        "TooManyRequests",
        f"The ledger {name[:64]} takes at most {shown} requests a second; retry in {seconds} s.",
    )
    response.headers["Retry-After"] = str(seconds)
    return response
