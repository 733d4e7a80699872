"""Roles as sets of actions: the built-in ones (fixed by the settings) and the user-defined ones,
kept in the ledger (``public:notarium.roles``: key = role name, value = JSON ``{"roleName",
"roleActions"}``).

A user-defined role's actions are catalogue actions (:class:`~notarium.auth.rbac.Action`, which
allow notarium's operations) and application actions (:func:`~notarium.auth.rbac.is_app_action`,
ACL's actions for user-defined endpoints: kept and shown, allowing nothing here). The API shows a
role with ACL's field names (:meth:`RoleDefinition.to_api`); the ledger record keeps its own."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from notarium.auth.rbac import Action, Role, is_app_action
from notarium.ledger.remote import RemoteLedger
from notarium.types import TxId
from notarium.verify import tables

MAX_CUSTOM_ROLES = 1000


@dataclass(frozen=True, slots=True)
class RoleDefinition:
    name: str
    actions: frozenset[str]  # catalogue actions (Action members) and application actions

    def action_names(self) -> list[str]:
        return sorted(str(a) for a in self.actions)

    def to_api(self) -> dict[str, object]:
        """The role as ACL's API shows it (``role_name``, ``role_actions``; actions sorted)."""
        return {"role_name": self.name, "role_actions": self.action_names()}

    def to_json(self) -> bytes:
        """The ledger record (``public:notarium.roles``)."""
        record = {"roleName": self.name, "roleActions": self.action_names()}
        return json.dumps(record, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, name: str, data: bytes) -> RoleDefinition:
        """Catalogue actions this version does not know (written by a later one) allow nothing and
        are dropped; application actions are kept."""
        obj = json.loads(data)
        known = {a.value for a in Action}
        kept: set[str] = set()
        for a in obj.get("roleActions", []):
            if not isinstance(a, str):
                continue
            if a in known:
                kept.add(Action(a))
            elif is_app_action(a):
                kept.add(a)
        return cls(name, frozenset(kept))


class RoleStore:
    """Built-in roles and a copy of the committed user-defined roles; writes go through the ledger.

    :meth:`actions_of` answers every request's authorization: the union of the actions of a set of
    role names (unknown names grant nothing), memoised until the roles change. Event-loop only.
    """

    def __init__(self, ledger: RemoteLedger, builtin: Mapping[Role, frozenset[Action]]) -> None:
        self._ledger = ledger
        self._builtin = {role.value: actions for role, actions in builtin.items()}
        self._custom: dict[str, RoleDefinition] = {}
        self._grants: dict[frozenset[str], frozenset[str]] = {}

    @classmethod
    async def load(cls, ledger: RemoteLedger, builtin: Mapping[Role, frozenset[Action]]) -> RoleStore:
        store = cls(ledger, builtin)
        await store.reload()
        return store

    async def reload(self) -> None:
        table = await self._ledger.state(tables.ROLES)
        custom = {k.decode(): RoleDefinition.from_json(k.decode(), v) for k, v in table.items()}
        self._custom, self._grants = custom, {}

    def actions_of(self, roles: frozenset[str]) -> frozenset[str]:
        granted = self._grants.get(roles)
        if granted is None:
            union: set[str] = set()
            for name in roles:
                actions: frozenset[str] | None = self._builtin.get(name)
                if actions is None:
                    custom = self._custom.get(name)
                    actions = custom.actions if custom is not None else frozenset()
                union.update(actions)
            granted = self._grants[roles] = frozenset(union)
        return granted

    def builtin(self) -> list[RoleDefinition]:
        return [RoleDefinition(name, self._builtin[name]) for name in sorted(self._builtin)]

    def custom(self) -> list[RoleDefinition]:
        return [self._custom[name] for name in sorted(self._custom)]

    def get(self, name: str) -> RoleDefinition | None:
        """A role by its exact name, built-in or user-defined."""
        if name in self._builtin:
            return RoleDefinition(name, self._builtin[name])
        return self._custom.get(name)

    def get_custom(self, name: str) -> RoleDefinition | None:
        return self._custom.get(name)

    def exists(self, name: str) -> bool:
        return name in self._builtin or name in self._custom

    async def put(self, roles: Iterable[RoleDefinition]) -> TxId:
        """Record the roles in one transaction; the copy follows once it commits (call :meth:`reload`)."""
        return await self._ledger.append({tables.ROLES: {r.name.encode(): r.to_json() for r in roles}})

    async def delete(self, name: str) -> TxId:
        return await self._ledger.append({tables.ROLES: {name.encode(): None}})
