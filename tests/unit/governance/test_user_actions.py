"""Governance's set_user/remove_user and jwt issuer actions follow the one rule for user ids
(notarium.auth.identity): any id ACL accepts, token users of one issuer, unbound token users bound
to the only issuer when the issuers change. Applied as the service applies them: a strict overlay
holding exactly the tables the actions declare they read."""

from __future__ import annotations

import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from notarium.auth.identity import token_key
from notarium.governance import tables as t
from notarium.governance.actions import (
    ActionFailedError,
    ApplyContext,
    Overlay,
    action_reads,
    apply_actions,
    parse_proposal,
)

A = "https://login.microsoftonline.com/tenant/v2.0"
B = "https://dex.example.com"
ADMIN = "5f" * 32
KEY = ec.generate_private_key(ec.SECP256R1())
JWKS = {"keys": [{**jwt.algorithms.ECAlgorithm.to_jwk(KEY.public_key(), as_dict=True), "kid": "k1", "use": "sig"}]}


def _row(user_id: str, *roles: str, **extra: str) -> bytes:
    return json.dumps({"assignedRoles": list(roles), "userId": user_id, **extra}).encode()


def _state(issuers: list[str], users: dict[str, bytes]) -> dict[str, dict[bytes, bytes]]:
    base = {ADMIN: _row(ADMIN.upper(), "Administrator")}
    return {
        t.USERS: {k.encode(): v for k, v in {**base, **users}.items()},
        t.USERS_INFO: {},
        t.ROLES: {},
        t.JWT_ISSUERS: {i.encode(): json.dumps({"issuer": i}).encode() for i in issuers},
    }


def apply(state: dict[str, dict[bytes, bytes]], *actions: dict[str, Any]) -> Overlay:
    calls = parse_proposal(json.dumps({"actions": list(actions)}).encode())
    view = Overlay({table: state[table] for table in action_reads(calls)}, strict=True)
    apply_actions(ApplyContext(view, "p1", "digest"), calls)
    return view


def set_user(user_id: str, **extra: Any) -> dict[str, Any]:
    return {"name": "set_user", "args": {"user_id": user_id, "roles": ["Reader"], **extra}}


@pytest.mark.parametrize("user_id", ["0" * 36, "auth0|abc", "alice"])
def test_set_user_takes_any_id_as_a_token_user_of_the_only_issuer(user_id: str) -> None:
    view = apply(_state([A], {}), set_user(user_id))
    assert json.loads(view.items(t.USERS)[token_key(A, user_id).encode()]) == {
        "assignedRoles": ["Reader"],
        "userId": user_id,
        "issuer": A,
    }


def test_set_user_with_several_issuers_needs_one_named() -> None:
    with pytest.raises(ActionFailedError, match="several token issuers"):
        apply(_state([A, B], {}), set_user("alice"))
    view = apply(_state([A, B], {}), set_user("alice", issuer=B))
    assert token_key(B, "alice").encode() in view.items(t.USERS)
    view = apply(_state([A], {}), set_user("AB:CD"))  # not a fingerprint: a token user (issue #16)
    assert token_key(A, "AB:CD").encode() in view.items(t.USERS)


def test_remove_user_finds_token_users_by_plain_id() -> None:
    state = _state([A], {token_key(A, "alice"): _row("alice", "Reader", issuer=A)})
    view = apply(state, {"name": "remove_user", "args": {"user_id": "alice"}})
    assert token_key(A, "alice").encode() not in view.items(t.USERS)
    with pytest.raises(ActionFailedError, match="no such user"):
        apply(state, {"name": "remove_user", "args": {"user_id": "bob"}})


@pytest.mark.parametrize(
    "change",
    [
        {"name": "set_jwt_issuer", "args": {"issuer": B, "jwks": JWKS}},
        {"name": "remove_jwt_issuer", "args": {"issuer": A}},
    ],
)
def test_changing_issuers_binds_unbound_users_to_the_only_one(change: dict[str, Any]) -> None:
    oid = "4f1b2c3d-0000-4000-8000-1234567890ab"
    state = _state([A], {token_key(None, "alice"): _row("alice", "Reader"), oid: _row(oid, "Contributor")})
    users = apply(state, change).items(t.USERS)
    assert token_key(None, "alice").encode() not in users
    assert oid.encode() not in users
    assert json.loads(users[token_key(A, "alice").encode()])["issuer"] == A
    assert json.loads(users[token_key(A, oid).encode()]) == {
        "assignedRoles": ["Contributor"],
        "userId": oid,
        "issuer": A,
    }
    assert ADMIN.encode() in users


def test_the_first_issuer_leaves_unbound_users_as_they_are() -> None:
    state = _state([], {token_key(None, "alice"): _row("alice", "Reader")})
    users = apply(state, {"name": "set_jwt_issuer", "args": {"issuer": A, "jwks": JWKS}}).items(t.USERS)
    assert token_key(None, "alice").encode() in users  # they are the only issuer's while it is the only one
