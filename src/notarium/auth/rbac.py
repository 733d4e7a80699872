"""Authorization: the catalogue of actions, ACL's built-in roles as sets of actions, role names.

Every endpoint is guarded by exactly one :class:`Action` (``requires(action)`` in
:mod:`notarium.server.handlers`). A caller may call it iff one of its roles holds that action: a user's
allowed actions are the union over its roles. Roles are ACL's three built-in ones (acl-rest-api.md
§4.4), each a superset of the one before (Reader ⊂ Contributor ⊂ Administrator), and the
user-defined roles an Administrator creates (``/app/roles``, :mod:`notarium.auth.roles`).

An action is named in ACL's style, ``Microsoft.ConfidentialLedger/ledger/<resource>/<verb>``; the
catalogue is notarium's own (ACL does not publish its list), small on purpose, and documented in
docs/api.md. Each action has a *least built-in role*: that role and those above it hold it. The
export action's least role is an operator's setting (``ServerConfig.export_role``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType


class Role(StrEnum):
    READER = "Reader"
    CONTRIBUTOR = "Contributor"
    ADMINISTRATOR = "Administrator"


_RANK = {Role.READER: 1, Role.CONTRIBUTOR: 2, Role.ADMINISTRATOR: 3}

ACTION_PREFIX = "Microsoft.ConfidentialLedger/ledger/"


class Action(StrEnum):
    TRANSACTIONS_READ = ACTION_PREFIX + "transactions/read"
    TRANSACTIONS_WRITE = ACTION_PREFIX + "transactions/write"
    GOVERNANCE_READ = ACTION_PREFIX + "governance/read"
    USERS_READ = ACTION_PREFIX + "users/read"
    USERS_WRITE = ACTION_PREFIX + "users/write"
    ROLES_READ = ACTION_PREFIX + "roles/read"
    ROLES_WRITE = ACTION_PREFIX + "roles/write"
    CHUNKS_READ = ACTION_PREFIX + "chunks/read"
    JWT_ISSUERS_READ = ACTION_PREFIX + "jwtIssuers/read"
    JWT_ISSUERS_WRITE = ACTION_PREFIX + "jwtIssuers/write"
    ENDPOINTS_WRITE = ACTION_PREFIX + "endpoints/write"


@dataclass(frozen=True, slots=True)
class ActionInfo:
    least: Role  # the least built-in role holding the action (by default, when ``setting`` is set)
    summary: str
    setting: str | None = None  # a ServerConfig field holding a Role that replaces ``least`` at run time


CATALOGUE: Mapping[Action, ActionInfo] = MappingProxyType(
    {
        Action.TRANSACTIONS_READ: ActionInfo(
            Role.READER,
            "read entries, transaction statuses, receipts, collections, signed roots and consistency proofs; ping",
        ),
        Action.TRANSACTIONS_WRITE: ActionInfo(Role.CONTRIBUTOR, "append entries"),
        Action.GOVERNANCE_READ: ActionInfo(Role.READER, "read the constitution, consortium members, enclave quotes"),
        Action.USERS_READ: ActionInfo(Role.ADMINISTRATOR, "read users and their roles"),
        Action.USERS_WRITE: ActionInfo(Role.ADMINISTRATOR, "create, change and delete users"),
        Action.ROLES_READ: ActionInfo(Role.ADMINISTRATOR, "read roles and their actions"),
        Action.ROLES_WRITE: ActionInfo(Role.ADMINISTRATOR, "create, change and delete user-defined roles"),
        Action.CHUNKS_READ: ActionInfo(
            Role.ADMINISTRATOR, "download the ledger's chunk files (export)", setting="export_role"
        ),
        Action.JWT_ISSUERS_READ: ActionInfo(Role.ADMINISTRATOR, "read the trusted token issuers"),
        Action.JWT_ISSUERS_WRITE: ActionInfo(Role.ADMINISTRATOR, "add, change and remove trusted token issuers"),
        Action.ENDPOINTS_WRITE: ActionInfo(
            Role.ADMINISTRATOR, "user-defined endpoints and functions (not supported: 501 NotImplemented)"
        ),
    }
)


def rank_of(role: Role) -> int:
    return _RANK[role]


def highest(roles: frozenset[Role]) -> Role:
    return max(roles, key=_RANK.__getitem__)


def builtin_role(name: str) -> Role | None:
    """The built-in role spelled exactly ``name``, or ``None``."""
    try:
        return Role(name)
    except ValueError:
        return None


def least_role(action: Action, settings: object | None = None) -> Role:
    """The least built-in role that holds ``action``, under ``settings`` (a ServerConfig; ``None``: defaults)."""
    info = CATALOGUE[action]
    if info.setting is not None and settings is not None:
        configured = getattr(settings, info.setting)
        if not isinstance(configured, Role):
            raise TypeError(f"{info.setting} must be a Role, not {configured!r}")
        return configured
    return info.least


def builtin_actions(settings: object | None = None) -> dict[Role, frozenset[Action]]:
    """Each built-in role's actions: those whose least role it is or ranks above."""
    return {role: frozenset(a for a in Action if _RANK[role] >= _RANK[least_role(a, settings)]) for role in Role}


# --- user-defined role names ---------------------------------------------------------------------

MAX_ROLE_NAME = 64
_ROLE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
_BUILTIN_FOLDED = {r.value.casefold() for r in Role}


def check_custom_role_name(value: object) -> str:
    """A valid name for a user-defined role; ``ValueError`` (saying why) otherwise.

    1 to 64 characters: ASCII letters, digits, ``_``, ``.``, ``-``, starting with a letter. The
    built-in names are reserved in any case (``reader`` would read like ``Reader``).
    """
    if not isinstance(value, str):
        raise ValueError("a role name is a string")
    if not _ROLE_NAME.fullmatch(value):
        shown = value[:MAX_ROLE_NAME] + ("…" if len(value) > MAX_ROLE_NAME else "")
        raise ValueError(
            f"invalid role name {shown!r}: 1 to {MAX_ROLE_NAME} ASCII letters, digits, '_', '.' or '-', "
            "starting with a letter"
        )
    if value.casefold() in _BUILTIN_FOLDED:
        raise ValueError(f"{value!r} is a built-in role name; built-in roles cannot be defined or changed")
    return value


# --- application actions --------------------------------------------------------------------------

MAX_APP_ACTION = 256
_APP_ACTION = re.compile(r"/[\x21-\x7e]{1,255}")


def is_app_action(value: str) -> bool:
    """An *application action*: what ACL's user-defined roles name for its user-defined endpoints
    (``/content/read``, ``/banking/accounts/post``): ``/`` then 1 to 255 printable ASCII characters,
    no spaces. Kept with the role and shown back; it allows no operation of notarium's own (notarium
    has no user-defined endpoints)."""
    return bool(_APP_ACTION.fullmatch(value))


def parse_actions(value: object) -> frozenset[str]:
    """A non-empty array of actions (duplicates collapse): catalogue actions, as :class:`Action`
    members, and application actions (:func:`is_app_action`), as plain strings. ``ValueError``
    naming anything else (a catalogue action misspelt would otherwise quietly allow nothing)."""
    if not isinstance(value, list) or not value:
        raise ValueError("expected a non-empty array of actions")
    if not all(isinstance(a, str) for a in value):
        raise ValueError("every action is a string")
    known = {a.value for a in Action}
    unknown = sorted({a for a in value if a not in known and not is_app_action(a)})
    if unknown:
        shown = ", ".join(repr(a[:100]) for a in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise ValueError(
            f"unknown action(s) {shown}{more}: GET /app/roles?roleName=Administrator lists the catalogue; "
            "an application action starts with '/' (printable ASCII, no spaces, at most "
            f"{MAX_APP_ACTION} characters)"
        )
    return frozenset(Action(a) if a in known else a for a in value)
