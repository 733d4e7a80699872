"""Ledger users and their roles, kept in the ledger (``public:notarium.users``)."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass

from notarium.auth.rbac import Role, parse_role
from notarium.ledger import Ledger
from notarium.types import TxId
from notarium.verify import tables


@dataclass(frozen=True, slots=True)
class User:
    key: str
    user_id: str  # as the caller first wrote it
    roles: frozenset[Role]

    def to_json(self) -> bytes:
        return json.dumps(
            {"assignedRoles": sorted(r.value for r in self.roles), "userId": self.user_id}, separators=(",", ":")
        ).encode()

    @classmethod
    def from_json(cls, key: str, data: bytes) -> User:
        obj = json.loads(data)
        return cls(key, str(obj["userId"]), frozenset(parse_role(r) for r in obj["assignedRoles"]))


class UserStore:
    """Reads from a cache of the committed table; writes go through the ledger."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._lock = threading.Lock()
        self._cache: dict[str, User] = {}
        self.reload()

    def reload(self) -> None:
        users = {k.decode(): User.from_json(k.decode(), v) for k, v in self._ledger.state(tables.USERS).items()}
        with self._lock:
            self._cache = users

    def get(self, key: str) -> User | None:
        with self._lock:
            return self._cache.get(key)

    def all(self) -> list[User]:
        with self._lock:
            return sorted(self._cache.values(), key=lambda u: u.key)

    def put(self, user: User) -> TxId:
        """Record the user; the cache follows once the write commits (call :meth:`reload`)."""
        return self._ledger.append({tables.USERS: {user.key.encode(): user.to_json()}})

    def delete(self, key: str) -> TxId:
        return self._ledger.append({tables.USERS: {key.encode(): None}})
