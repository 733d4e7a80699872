"""ACL's built-in roles (acl-rest-api.md §4.4) and the check every endpoint makes."""

from __future__ import annotations

import functools
from enum import StrEnum


class Role(StrEnum):
    READER = "Reader"
    CONTRIBUTOR = "Contributor"
    ADMINISTRATOR = "Administrator"


_RANK = {Role.READER: 1, Role.CONTRIBUTOR: 2, Role.ADMINISTRATOR: 3}


def parse_role(value: object) -> Role:
    """A built-in role name, exactly as ACL spells it; ``ValueError`` otherwise."""
    if not isinstance(value, str):
        raise ValueError("a role is a string")
    try:
        return Role(value)
    except ValueError:
        raise ValueError(f"unknown role {value[:40]!r}: use Administrator, Contributor or Reader") from None


@functools.cache
def rank(roles: frozenset[Role]) -> int:
    """The rank of the highest of ``roles`` (0 for none); cached, as every request asks it.
    ``roles`` grant a role of a lower or equal rank (Administrator ⊇ Contributor ⊇ Reader)."""
    return max((_RANK[r] for r in roles), default=0)


def rank_of(role: Role) -> int:
    return _RANK[role]


def highest(roles: frozenset[Role]) -> Role:
    return max(roles, key=_RANK.__getitem__)
