"""Proposal actions: validating their arguments (pure) and applying them to a state view.

A proposal is ``{"actions": [{"name": ..., "args": {...}}, ...]}``. :func:`parse_proposal`
checks its shape and each action's arguments (a :class:`ValueError` says what is wrong: the
request's 400). :func:`apply_actions` applies the actions in order to an :class:`Overlay` of the
current state; an action that cannot apply to that state raises :class:`ActionFailedError` (the
proposal ends ``Failed`` and nothing of it is written). Actions the engine carries out after the
transaction (ledger rekey, re-issuing recovery shares) are returned as :data:`Effect` names.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from notarium.auth.identity import bind_unbound, certificate_key, check_user_ref, find_user_key, new_user_key
from notarium.auth.tokens import IssuerConfig, parse_jwks
from notarium.errors import VerificationError
from notarium.governance import tables as t
from notarium.governance.constitution import Constitution, ProposalState
from notarium.verify.keys import acl_user_id, cert_fingerprint, ec_public_key, load_pem_cert

MAX_ACTIONS = 64
MAX_DATA_BYTES = 64 << 10
MEMBER_STATUSES = ("Accepted", "Active")
RECOVERY_ROLES = ("NonParticipant", "Participant", "Owner")
BUILTIN_ROLES = frozenset({"Administrator", "Contributor", "Reader"})
MAX_RECOVERY_THRESHOLD = 254

# effects carried out after the proposal's transaction commits (see service.Effects)
REKEY = "trigger_ledger_rekey"
RESHARE = "refresh_recovery_shares"
RENEW = "renew_certificates"  # carried as (RENEW, service_days | None, node_days | None)
Effect = str | tuple[str, int | None, int | None]


class ActionFailedError(Exception):
    """An action cannot apply to the current state: the proposal is Failed, nothing is written."""


@dataclass(frozen=True, slots=True)
class ActionCall:
    name: str
    args: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "args": dict(self.args)}


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def _loads(data: bytes | None) -> Any:
    return None if data is None else json.loads(data)


class Overlay:
    """The state as it would be after the writes so far: a base snapshot plus pending writes.

    ``strict``: the base holds only the tables that were loaded (governance loads what a request
    needs, :data:`ACTION_READS`), and reading another one is a bug, raised as ``LookupError``
    rather than answered as an empty table."""

    def __init__(self, base: Mapping[str, Mapping[bytes, bytes]], *, strict: bool = False) -> None:
        self._base = base
        self._strict = strict
        self.writes: dict[str, dict[bytes, bytes | None]] = {}

    def _table(self, table: str) -> Mapping[bytes, bytes]:
        if self._strict and table not in self._base:
            raise LookupError(f"governance read the table {table}, which it did not load")
        return self._base.get(table, {})

    def get(self, table: str, key: bytes) -> bytes | None:
        pending = self.writes.get(table, {})
        if key in pending:
            return pending[key]
        return self._table(table).get(key)

    def items(self, table: str) -> dict[bytes, bytes]:
        merged = dict(self._table(table))
        for key, value in self.writes.get(table, {}).items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        return merged

    def put(self, table: str, key: bytes, value: bytes | None) -> None:
        self.writes.setdefault(table, {})[key] = value

    def get_json(self, table: str, key: bytes) -> Any:
        return _loads(self.get(table, key))


@dataclass
class ApplyContext:
    view: Overlay
    proposal_id: str
    state_digest: str  # the digest new members acknowledge
    effects: list[Effect] = field(default_factory=list)


# --- argument checks ---------------------------------------------------------------------------


def _object(args: object, allowed: set[str], required: set[str]) -> dict[str, Any]:
    if not isinstance(args, dict):
        raise ValueError("args must be an object")
    unknown = set(args) - allowed
    if unknown:
        raise ValueError(f"unknown arguments: {', '.join(sorted(map(str, unknown)))[:200]}")
    missing = required - set(args)
    if missing:
        raise ValueError(f"missing arguments: {', '.join(sorted(missing))}")
    return dict(args)


def _pem_cert(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a PEM certificate")
    try:
        ec_public_key(load_pem_cert(value, what), what)
    except VerificationError as exc:
        raise ValueError(str(exc)) from None
    return value


def _member_id(value: object) -> str:
    if not isinstance(value, str) or len(value) != 64 or any(c not in "0123456789abcdef" for c in value.lower()):
        raise ValueError("member_id must be a member id (64 hex digits)")
    return value.lower()


def _data(value: object, what: str) -> object:
    if len(_json(value)) > MAX_DATA_BYTES:
        raise ValueError(f"{what} is too large")
    return value


def _v_set_member(args: object) -> dict[str, Any]:
    a = _object(args, {"cert", "encryption_pub_key", "member_data", "recovery_role"}, {"cert"})
    a["cert"] = _pem_cert(a["cert"], "cert")
    enc = a.get("encryption_pub_key")
    if enc is not None:
        if not isinstance(enc, str):
            raise ValueError("encryption_pub_key must be a PEM RSA public key")
        try:
            key = serialization.load_pem_public_key(enc.encode())
        except (ValueError, UnsupportedAlgorithm):
            raise ValueError("encryption_pub_key must be a PEM RSA public key") from None
        if not isinstance(key, rsa.RSAPublicKey) or key.key_size < 2048:
            raise ValueError("encryption_pub_key must be an RSA public key of at least 2048 bits")
    role = a.get("recovery_role")
    if role is not None and role not in RECOVERY_ROLES:
        raise ValueError(f"recovery_role must be one of {', '.join(RECOVERY_ROLES)}")
    if role not in (None, "NonParticipant") and enc is None:
        raise ValueError("a recovery member needs an encryption_pub_key")
    _data(a.get("member_data"), "member_data")
    return a


def _v_member_ref(args: object) -> dict[str, Any]:
    a = _object(args, {"member_id", "cert"}, set())
    if ("member_id" in a) == ("cert" in a):
        raise ValueError("give the member's member_id or its cert (one of them)")
    if "cert" in a:
        a = {"member_id": cert_fingerprint(load_pem_cert(_pem_cert(a["cert"], "cert")))}
    return {"member_id": _member_id(a["member_id"])}


def _roles(value: object) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(r, str) and 0 < len(r) <= 64 for r in value):
        raise ValueError("roles must be a non-empty array of role names")
    return sorted(set(value))


def _user_ref(a: Mapping[str, Any]) -> tuple[str, str | None, str | None]:
    """(user id as shown, token issuer named or None, certificate PEM or None) of a set_user/remove_user.

    ``user_id`` follows the one rule for user ids (notarium.auth.identity): a fingerprint is a
    certificate user, anything else a token user, of ``issuer`` if given."""
    if ("user_id" in a) == ("cert" in a):
        raise ValueError("give the user's user_id or its cert (one of them)")
    if "cert" in a:
        if "issuer" in a:
            raise ValueError("issuer names a token user's issuer; a certificate user has none")
        pem = _pem_cert(a["cert"], "cert")
        return acl_user_id(load_pem_cert(pem)), None, pem
    try:
        user_id, issuer = check_user_ref(a["user_id"], a.get("issuer"))
    except ValueError as exc:
        raise ValueError(f"user_id: {exc}") from None
    return user_id, issuer, None


def _user_key(view: Overlay, a: Mapping[str, Any], *, create: bool) -> tuple[str, str, str | None, str | None]:
    """(key, user id as shown, issuer bound or None, certificate PEM or None) of the user a
    set_user/remove_user names in ``view``; for ``create``, a new user's if there is none."""
    user_id, issuer, pem = _user_ref(a)
    if pem is not None:
        key = certificate_key(user_id)
        return key, user_id, None, pem
    trusted = [k.decode() for k in view.items(t.JWT_ISSUERS)]
    try:
        found = find_user_key(user_id, issuer, [k.decode() for k in view.items(t.USERS)], trusted)
        if found is not None:
            record = view.get_json(t.USERS, found.encode()) or {}
            bound = record.get("issuer")
            return found, str(record.get("userId", user_id)), bound if isinstance(bound, str) else None, None
        if not create:
            raise ActionFailedError("no such user")
        key, bound = new_user_key(user_id, issuer, trusted)
    except ValueError as exc:
        raise ActionFailedError(str(exc)) from None
    return key, user_id, bound, None


def _v_set_user(args: object) -> dict[str, Any]:
    a = _object(args, {"user_id", "cert", "issuer", "roles", "user_data"}, {"roles"})
    _user_ref(a)
    a["roles"] = _roles(a["roles"])
    _data(a.get("user_data"), "user_data")
    return a


def _v_remove_user(args: object) -> dict[str, Any]:
    a = _object(args, {"user_id", "cert", "issuer"}, set())
    _user_ref(a)
    return a


def _v_set_jwt_issuer(args: object) -> dict[str, Any]:
    a = _object(args, {"issuer", "audiences", "userIdClaim", "jwks"}, {"issuer", "jwks"})
    IssuerConfig.from_json({k: v for k, v in a.items() if k != "jwks"})
    parse_jwks(a["jwks"])
    return a


def _v_remove_jwt_issuer(args: object) -> dict[str, Any]:
    a = _object(args, {"issuer"}, {"issuer"})
    if not isinstance(a["issuer"], str) or not 0 < len(a["issuer"]) <= 2048:
        raise ValueError("issuer must be the issuer's URL")
    return a


def _v_set_recovery_threshold(args: object) -> dict[str, Any]:
    a = _object(args, {"recovery_threshold"}, {"recovery_threshold"})
    n = a["recovery_threshold"]
    if type(n) is not int or not 1 <= n <= MAX_RECOVERY_THRESHOLD:
        raise ValueError(f"recovery_threshold must be an integer from 1 to {MAX_RECOVERY_THRESHOLD}")
    return a


def _v_set_constitution(args: object) -> dict[str, Any]:
    a = _object(args, {"constitution"}, {"constitution"})
    Constitution.parse(a["constitution"], ACTIONS)
    return a


def _v_node(args: object) -> dict[str, Any]:
    a = _object(args, {"node_id"}, {"node_id"})
    node = a["node_id"]
    if not isinstance(node, str) or len(node) != 64 or any(c not in "0123456789abcdef" for c in node):
        raise ValueError("node_id must be a node id (64 lower-case hex digits)")
    return a


def _v_empty(args: object) -> dict[str, Any]:
    return _object({} if args is None else args, set(), set())


def _v_renew(args: object) -> dict[str, Any]:
    a = _object({} if args is None else args, {"node_id", "valid_from", "validity_period_days"}, set())
    days = a.get("validity_period_days")
    if days is not None and (type(days) is not int or not 1 <= days <= 3650):
        raise ValueError("validity_period_days must be an integer from 1 to 3650")
    if "valid_from" in a and not isinstance(a["valid_from"], str):
        raise ValueError("valid_from must be a date-time string")
    if "node_id" in a:
        _v_node({"node_id": a["node_id"]})
    return a


def _v_open(args: object) -> dict[str, Any]:
    a = _object(args, {"next_service_identity", "previous_service_identity"}, {"next_service_identity"})
    for name in ("next_service_identity", "previous_service_identity"):
        if name in a:
            try:
                load_pem_cert(a[name], name)
            except (VerificationError, TypeError, AttributeError):
                raise ValueError(f"{name} must be a PEM certificate") from None
    return a


# --- application --------------------------------------------------------------------------------


def _members(view: Overlay) -> dict[str, dict[str, Any]]:
    return {k.decode(): json.loads(v) for k, v in view.items(t.MEMBERS_INFO).items()}


def active_members(view: Overlay) -> list[str]:
    return sorted(m for m, info in _members(view).items() if info.get("status") == "Active")


def recovery_members(view: Overlay) -> list[str]:
    keys = view.items(t.MEMBERS_ENC_KEYS)
    return sorted(
        m
        for m, info in _members(view).items()
        if m.encode() in keys and info.get("recovery_role", "Participant") != "NonParticipant"
    )


def recovery_threshold(view: Overlay) -> int:
    config = view.get_json(t.SERVICE_CONFIG, t.SINGLETON_KEY) or {}
    value = config.get("recovery_threshold", 1)
    return value if type(value) is int else 1


def _check_recovery(view: Overlay) -> None:
    if len(recovery_members(view)) < recovery_threshold(view):
        raise ActionFailedError(
            f"the recovery threshold ({recovery_threshold(view)}) would exceed the number of recovery members"
        )


def _a_set_member(ctx: ApplyContext, a: Mapping[str, Any]) -> None:
    view = ctx.view
    cert = load_pem_cert(a["cert"])
    member_id = cert_fingerprint(cert).encode()
    existing = view.get_json(t.MEMBERS_INFO, member_id)
    info = {
        "member_data": a.get("member_data"),
        "recovery_role": a.get("recovery_role") or ("Participant" if a.get("encryption_pub_key") else "NonParticipant"),
        "status": existing["status"] if existing else "Accepted",
    }
    view.put(t.MEMBERS_CERTS, member_id, a["cert"].encode())
    view.put(t.MEMBERS_INFO, member_id, _json(info))
    old_key = view.get(t.MEMBERS_ENC_KEYS, member_id)
    new_key = a["encryption_pub_key"].encode() if a.get("encryption_pub_key") else None
    view.put(t.MEMBERS_ENC_KEYS, member_id, new_key)
    if existing is None:
        view.put(t.MEMBERS_ACKS, member_id, _json({"state_digest": ctx.state_digest}))
    if old_key != new_key or (existing or {}).get("recovery_role") != info["recovery_role"]:
        ctx.effects.append(RESHARE)


def _a_remove_member(ctx: ApplyContext, a: Mapping[str, Any]) -> None:
    view = ctx.view
    member_id = a["member_id"].encode()
    if view.get(t.MEMBERS_INFO, member_id) is None:
        raise ActionFailedError(f"{a['member_id'][:16]}… is not a member")
    was_recovery = a["member_id"] in recovery_members(view)
    for table in (t.MEMBERS_CERTS, t.MEMBERS_INFO, t.MEMBERS_ENC_KEYS, t.MEMBERS_ACKS):
        view.put(table, member_id, None)
    if not active_members(view):
        raise ActionFailedError("this would leave the consortium without an Active member")
    if was_recovery:
        _check_recovery(view)
        ctx.effects.append(RESHARE)


def _role_names(view: Overlay) -> frozenset[str]:
    return BUILTIN_ROLES | {k.decode() for k in view.items(t.ROLES)}


def _admins_left(view: Overlay) -> bool:
    return any("Administrator" in json.loads(v).get("assignedRoles", []) for v in view.items(t.USERS).values())


def _a_set_user(ctx: ApplyContext, a: Mapping[str, Any]) -> None:
    view = ctx.view
    key, shown, issuer, pem = _user_key(view, a, create=True)
    unknown = [r for r in a["roles"] if r not in _role_names(view)]
    if unknown:
        raise ActionFailedError(f"unknown role {unknown[0][:64]!r}")
    existing = view.get_json(t.USERS, key.encode())
    if existing:
        shown = existing["userId"]
    record = {"assignedRoles": a["roles"], "userId": shown, **({"issuer": issuer} if issuer is not None else {})}
    view.put(t.USERS, key.encode(), _json(record))
    if pem is not None:
        view.put(t.USERS_CERTS, key.encode(), pem.encode())
    info = {"user_data": {"assignedRoles": a["roles"], **({"data": a["user_data"]} if "user_data" in a else {})}}
    view.put(t.USERS_INFO, key.encode(), _json(info))
    if not _admins_left(view):
        raise ActionFailedError("this would leave the ledger without an Administrator")


def _a_remove_user(ctx: ApplyContext, a: Mapping[str, Any]) -> None:
    view = ctx.view
    key = _user_key(view, a, create=False)[0].encode()
    if view.get(t.USERS, key) is None:
        raise ActionFailedError("no such user")
    for table in (t.USERS, t.USERS_CERTS, t.USERS_INFO):
        view.put(table, key, None)
    if not _admins_left(view):
        raise ActionFailedError("this would leave the ledger without an Administrator")


def _a_set_jwt_issuer(ctx: ApplyContext, a: Mapping[str, Any]) -> None:
    config = IssuerConfig.from_json({k: v for k, v in a.items() if k != "jwks"})
    keys = parse_jwks(a["jwks"])
    body = json.dumps({"keys": [keys[k] for k in sorted(keys)]}, sort_keys=True, separators=(",", ":")).encode()
    issuer = config.issuer.encode()
    _bind_unbound_users(ctx.view)
    ctx.view.put(t.JWT_ISSUERS, issuer, json.dumps(config.to_json(), sort_keys=True).encode())
    ctx.view.put(t.JWT_KEYS, issuer, body)


def _a_remove_jwt_issuer(ctx: ApplyContext, a: Mapping[str, Any]) -> None:
    issuer = a["issuer"].encode()
    if ctx.view.get(t.JWT_ISSUERS, issuer) is None:
        raise ActionFailedError("no such issuer")
    _bind_unbound_users(ctx.view)
    ctx.view.put(t.JWT_ISSUERS, issuer, None)
    ctx.view.put(t.JWT_KEYS, issuer, None)


def _bind_unbound_users(view: Overlay) -> None:
    """Before the trusted issuers change: unbound token users become users of the only issuer
    trusted so far (as the front does for /app/jwtIssuers; notarium.auth.identity.bind_unbound)."""
    issuers = view.items(t.JWT_ISSUERS)
    if len(issuers) != 1:
        return
    (only,) = issuers
    user_writes, info_writes = bind_unbound(view.items(t.USERS), view.items(t.USERS_INFO), only.decode())
    for key, value in user_writes.items():
        view.put(t.USERS, key, value)
    for key, value in info_writes.items():
        view.put(t.USERS_INFO, key, value)


def _a_set_recovery_threshold(ctx: ApplyContext, a: Mapping[str, Any]) -> None:
    config = dict(ctx.view.get_json(t.SERVICE_CONFIG, t.SINGLETON_KEY) or {})
    if config.get("recovery_threshold") == a["recovery_threshold"]:
        return
    config["recovery_threshold"] = a["recovery_threshold"]
    ctx.view.put(t.SERVICE_CONFIG, t.SINGLETON_KEY, _json(config))
    _check_recovery(ctx.view)
    ctx.effects.append(RESHARE)


def _a_set_constitution(ctx: ApplyContext, a: Mapping[str, Any]) -> None:
    constitution = Constitution.parse(a["constitution"], ACTIONS)
    ctx.view.put(t.CONSTITUTION, t.SINGLETON_KEY, constitution.dumps().encode())
    for key, value in ctx.view.items(t.PROPOSALS_INFO).items():  # a new constitution drops open proposals
        info = json.loads(value)
        if info.get("state") == ProposalState.OPEN and key.decode() != ctx.proposal_id:
            info["state"] = ProposalState.DROPPED.value
            ctx.view.put(t.PROPOSALS_INFO, key, _json(info))


def _node(ctx: ApplyContext, node_id: str) -> dict[str, Any]:
    info = ctx.view.get_json(t.NODES_INFO, node_id.encode())
    if info is None:
        raise ActionFailedError(f"no node {node_id[:16]}…")
    return dict(info)


def _a_trust_node(ctx: ApplyContext, a: Mapping[str, Any]) -> None:
    info = _node(ctx, a["node_id"])
    if info.get("status") == "Trusted":
        return
    if info.get("status") != "Pending":
        raise ActionFailedError(f"node {a['node_id'][:16]}… is {info.get('status')}, not Pending")
    info["status"] = "Trusted"
    ctx.view.put(t.NODES_INFO, a["node_id"].encode(), _json(info))


def _a_remove_node(ctx: ApplyContext, a: Mapping[str, Any]) -> None:
    info = _node(ctx, a["node_id"])
    if info.get("status") == "Pending":
        ctx.view.put(t.NODES_INFO, a["node_id"].encode(), None)
        return
    trusted = [k for k, v in ctx.view.items(t.NODES_INFO).items() if json.loads(v).get("status") == "Trusted"]
    if trusted == [a["node_id"].encode()]:
        raise ActionFailedError("this would retire the service's last trusted node")
    info["status"] = "Retired"
    ctx.view.put(t.NODES_INFO, a["node_id"].encode(), _json(info))


def _intent(name: str, effect: Effect | None = None) -> Callable[[ApplyContext, Mapping[str, Any]], None]:
    """Record the request in ``INTENTS`` (for the engine or the operator); optionally an effect."""

    def apply(ctx: ApplyContext, a: Mapping[str, Any]) -> None:
        ctx.view.put(t.INTENTS, name.encode(), _json({"args": dict(a), "proposal_id": ctx.proposal_id}))
        if effect is not None:
            ctx.effects.append(effect)

    return apply


def _renewal(name: str, *, service: bool) -> Callable[[ApplyContext, Mapping[str, Any]], None]:
    """Recorded like an intent, and carried out by the engine once committed (a new validity for
    the same keys): the service certificate (with the node's), or the node certificate."""
    record = _intent(name)

    def apply(ctx: ApplyContext, a: Mapping[str, Any]) -> None:
        record(ctx, a)
        days = a.get("validity_period_days")
        ctx.effects.append((RENEW, days or 3650, None) if service else (RENEW, None, days or 365))

    return apply


Validator = Callable[[object], dict[str, Any]]
Applier = Callable[[ApplyContext, Mapping[str, Any]], None]

ACTIONS: Mapping[str, tuple[Validator, Applier]] = {
    "set_member": (_v_set_member, _a_set_member),
    "remove_member": (_v_member_ref, _a_remove_member),
    "set_user": (_v_set_user, _a_set_user),
    "remove_user": (_v_remove_user, _a_remove_user),
    "set_jwt_issuer": (_v_set_jwt_issuer, _a_set_jwt_issuer),
    "remove_jwt_issuer": (_v_remove_jwt_issuer, _a_remove_jwt_issuer),
    "set_recovery_threshold": (_v_set_recovery_threshold, _a_set_recovery_threshold),
    "set_constitution": (_v_set_constitution, _a_set_constitution),
    "transition_node_to_trusted": (_v_node, _a_trust_node),
    "remove_node": (_v_node, _a_remove_node),
    "trigger_ledger_rekey": (_v_empty, _intent("trigger_ledger_rekey", REKEY)),
    "renew_service_certificate": (_v_renew, _renewal("renew_service_certificate", service=True)),
    "renew_node_certificate": (_v_renew, _renewal("renew_node_certificate", service=False)),
    "transition_service_to_open": (_v_open, _intent("transition_service_to_open")),
}

# the tables each action reads (whole or in part) from the committed state: governance loads these,
# and only these, for an accepted proposal (with a strict Overlay: a table missing here is an error)
_MEMBERSHIP = frozenset({t.MEMBERS_INFO, t.MEMBERS_ENC_KEYS, t.SERVICE_CONFIG})
ACTION_READS: Mapping[str, frozenset[str]] = {
    "set_member": _MEMBERSHIP,
    "remove_member": _MEMBERSHIP,
    "set_user": frozenset({t.ROLES, t.USERS, t.JWT_ISSUERS}),
    "remove_user": frozenset({t.USERS, t.JWT_ISSUERS}),
    "set_jwt_issuer": frozenset({t.JWT_ISSUERS, t.USERS, t.USERS_INFO}),  # unbound token users get bound
    "remove_jwt_issuer": frozenset({t.JWT_ISSUERS, t.USERS, t.USERS_INFO}),
    "set_recovery_threshold": _MEMBERSHIP,
    "set_constitution": frozenset({t.PROPOSALS_INFO}),
    "transition_node_to_trusted": frozenset({t.NODES_INFO}),
    "remove_node": frozenset({t.NODES_INFO}),
    "trigger_ledger_rekey": frozenset(),
    "renew_service_certificate": frozenset(),
    "renew_node_certificate": frozenset(),
    "transition_service_to_open": frozenset(),
}


def action_reads(calls: list[ActionCall]) -> frozenset[str]:
    """The tables applying ``calls`` reads."""
    return frozenset().union(*(ACTION_READS[c.name] for c in calls))


def parse_proposal(payload: bytes) -> list[ActionCall]:
    """The actions of a proposal body; ``ValueError`` saying what is wrong."""
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("the proposal is not JSON") from None
    if not isinstance(obj, dict) or set(obj) != {"actions"}:
        raise ValueError('a proposal is {"actions": [{"name": ..., "args": {...}}, ...]}')
    items = obj["actions"]
    if not isinstance(items, list) or not 0 < len(items) <= MAX_ACTIONS:
        raise ValueError(f"actions must be an array of 1 to {MAX_ACTIONS} actions")
    calls = []
    for n, item in enumerate(items):
        if not isinstance(item, dict) or not {"name"} <= set(item) <= {"name", "args"}:
            raise ValueError(f"actions[{n}] must be {{name, args}}")
        name = item["name"]
        if not isinstance(name, str) or name not in ACTIONS:
            raise ValueError(f"actions[{n}]: unknown action {str(name)[:64]!r}")
        validate, _ = ACTIONS[name]
        try:
            args = validate(item.get("args", {}))
        except ValueError as exc:
            raise ValueError(f"actions[{n}] ({name}): {exc}") from None
        calls.append(ActionCall(name, args))
    return calls


def apply_actions(ctx: ApplyContext, calls: list[ActionCall]) -> None:
    """Apply ``calls`` in order to ``ctx.view``; :class:`ActionFailedError` if one cannot apply."""
    for call in calls:
        _, apply = ACTIONS[call.name]
        try:
            apply(ctx, call.args)
        except ActionFailedError as exc:
            raise ActionFailedError(f"{call.name}: {exc}") from None
