"""Ledger users and their roles, kept in the ledger (``public:notarium.users``).

A user's roles are names: built-in roles (:class:`~notarium.auth.rbac.Role`) and user-defined ones
(:mod:`notarium.auth.roles`); what they allow is the union of their actions. Users are keyed as
:mod:`notarium.auth.identity` says: a certificate user by its digest, a token user by its issuer
and id.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass

from notarium.auth.identity import Principal, find_user_key, new_user_key, unbound_keys
from notarium.ledger.remote import RemoteLedger
from notarium.types import TxId
from notarium.verify import tables


@dataclass(frozen=True, slots=True)
class User:
    key: str
    user_id: str  # as the caller first wrote it
    roles: frozenset[str]  # role names, built-in or user-defined
    issuer: str | None = None  # a token user's issuer (None: a certificate user, or an unbound token user)

    def to_json(self) -> bytes:
        body: dict[str, object] = {"assignedRoles": sorted(str(r) for r in self.roles), "userId": self.user_id}
        if self.issuer is not None:
            body["issuer"] = self.issuer
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, key: str, data: bytes) -> User:
        obj = json.loads(data)
        issuer = obj.get("issuer")
        return cls(
            key,
            str(obj["userId"]),
            frozenset(str(r) for r in obj["assignedRoles"]),
            issuer if isinstance(issuer, str) else None,
        )


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

    def find(self, principal: Principal, trusted: Collection[str]) -> User | None:
        """The user an authenticated caller is: its key's; for a token of the ledger's only issuer,
        also an unbound token user with its id (docs/design/trust-model.md, "User ids")."""
        user = self._cache.get(principal.key)
        if user is None and principal.kind == "token" and list(trusted) == [principal.issuer]:
            user = next((u for k in unbound_keys(principal.display_id) if (u := self._cache.get(k))), None)
        return user

    def unbound(self, principal: Principal) -> bool:
        """Whether an unbound token user has the id of token ``principal`` (to say why it is refused)."""
        return principal.kind == "token" and any(k in self._cache for k in unbound_keys(principal.display_id))

    def lookup(self, user_id: str, issuer: str | None, trusted: Collection[str]) -> User | None:
        """The user an Administrator names (``ValueError`` if the id is malformed or ambiguous)."""
        key = find_user_key(user_id, issuer, self._cache.keys(), trusted)
        return self._cache[key] if key is not None else None

    def new_key(self, user_id: str, issuer: str | None, trusted: Collection[str]) -> tuple[str, str | None]:
        """(key, issuer) of a new user named ``user_id`` (``ValueError`` saying why it cannot be)."""
        return new_user_key(user_id, issuer, trusted)

    def all(self) -> list[User]:
        return sorted(self._cache.values(), key=lambda u: u.key)

    async def put(self, user: User) -> TxId:
        """Record the user; the copy follows once the write commits (call :meth:`reload`)."""
        return await self._ledger.append({tables.USERS: {user.key.encode(): user.to_json()}})

    async def delete(self, key: str) -> TxId:
        return await self._ledger.append({tables.USERS: {key.encode(): None}})
