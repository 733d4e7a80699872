"""Limits on joining, the service side's pure parts (docs/design/ha.md §Limits on joining; applied
by ``server/joins.py``).

:class:`JoinBudget` (new nodes a minute), :func:`pending_records` (the Pending ones, for the
cap) and :func:`expired_pending` (by each record's own ``pending_since``, never a node an Open
proposal would trust).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Any

from notarium.cluster.join import NODE_PENDING, PENDING_SINCE


class JoinBudget:
    """How many new nodes may be recorded: a token bucket holding at most ``per_minute`` tokens,
    refilled at ``per_minute`` a minute (a burst of ``per_minute``, then one every ``60 / per_minute``
    seconds). Pure: the caller passes a monotonic ``now``."""

    def __init__(self, per_minute: int, now: float) -> None:
        if per_minute < 1:
            raise ValueError("the join rate must be at least 1 a minute")
        self.per_minute = per_minute
        self._tokens = float(per_minute)
        self._at = now

    def take(self, now: float) -> float:
        """0.0 if a new node may be recorded now (a token is spent), else the seconds until one may."""
        if now > self._at:
            self._tokens = min(float(self.per_minute), self._tokens + (now - self._at) * self.per_minute / 60)
            self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) * 60 / self.per_minute


def pending_records(nodes: Mapping[bytes, bytes]) -> dict[bytes, dict[str, Any]]:
    """The Pending records of ``public:ccf.gov.nodes.info`` (node id -> record); others, and
    records that are not JSON objects, are left out."""
    pending = {}
    for key, raw in nodes.items():
        try:
            info = json.loads(raw)
        except ValueError:
            continue
        if isinstance(info, dict) and info.get("status") == NODE_PENDING:
            pending[key] = info
    return pending


def pending_since(info: Mapping[str, Any]) -> int | None:
    """When a Pending node first asked (its record's ``pending_since``), None if not recorded."""
    since = info.get(PENDING_SINCE)
    return since if type(since) is int else None


def expired_pending(
    pending: Mapping[bytes, Mapping[str, Any]],
    *,
    now: float,
    ttl_s: float,
    protected: Collection[str],
    first_seen: Mapping[bytes, float],
) -> list[bytes]:
    """The Pending nodes to remove at ``now``: those that asked more than ``ttl_s`` seconds ago
    (``pending_since``; for a record without it, when the caller first saw it: ``first_seen``),
    except the ``protected`` ones (node ids an Open proposal would trust). Only a record's own age
    counts: nothing another node does (asking to join, filling the cap) removes it sooner."""
    expired = []
    for key, info in sorted(pending.items()):
        since = pending_since(info)
        start = float(since) if since is not None else first_seen.get(key)
        if start is None or now - start <= ttl_s or key.decode(errors="replace") in protected:
            continue
        expired.append(key)
    return expired
