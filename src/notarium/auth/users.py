"""Ledger users and their roles, kept in the ledger (``public:notarium.users``).

A user's roles are names: built-in roles (:class:`~notarium.auth.rbac.Role`) and user-defined ones
(:mod:`notarium.auth.roles`); what they allow is the union of their actions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from notarium.ledger.remote import RemoteLedger
from notarium.types import TxId
from notarium.verify import tables


@dataclass(frozen=True, slots=True)
class User:
    key: str
    user_id: str  # as the caller first wrote it
    roles: frozenset[str]  # role names, built-in or user-defined

    def to_json(self) -> bytes:
        return json.dumps(
            {"assignedRoles": sorted(str(r) for r in self.roles), "userId": self.user_id}, separators=(",", ":")
        ).encode()

    @classmethod
    def from_json(cls, key: str, data: bytes) -> User:
        obj = json.loads(data)
        return cls(key, str(obj["userId"]), frozenset(str(r) for r in obj["assignedRoles"]))


class UserStore:
    """Reads from a copy of the committed table; writes go through the ledger. Event-loop only."""

    def __init__(self, ledger: RemoteLedger) -> None:
        self._ledger = ledger
        self._cache: dict[str, User] = {}

    @classmethod
    async def load(cls, ledger: RemoteLedger) -> UserStore:
        store = cls(ledger)
        await store.reload()
        return store

    async def reload(self) -> None:
        table = await self._ledger.state(tables.USERS)
        self._cache = {k.decode(): User.from_json(k.decode(), v) for k, v in table.items()}

    def get(self, key: str) -> User | None:
        return self._cache.get(key)

    def all(self) -> list[User]:
        return sorted(self._cache.values(), key=lambda u: u.key)

    async def put(self, user: User) -> TxId:
        """Record the user; the copy follows once the write commits (call :meth:`reload`)."""
        return await self._ledger.append({tables.USERS: {user.key.encode(): user.to_json()}})

    async def delete(self, key: str) -> TxId:
        return await self._ledger.append({tables.USERS: {key.encode(): None}})
