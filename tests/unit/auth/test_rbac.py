"""The action catalogue and the built-in roles as sets of actions (notarium.auth.rbac), on their own."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from notarium.auth.rbac import (
    CATALOGUE,
    Action,
    Role,
    builtin_actions,
    check_custom_role_name,
    least_role,
    parse_actions,
)

A = "Microsoft.ConfidentialLedger/ledger/"


@dataclass(frozen=True)
class Settings:  # what builtin_actions reads of a ServerConfig
    export_role: Role = Role.ADMINISTRATOR


def test_every_action_is_catalogued_in_acl_style() -> None:
    assert set(CATALOGUE) == set(Action)
    for action in Action:
        resource, _, verb = action.value.removeprefix(A).rpartition("/")
        assert action.value.startswith(A), action
        assert resource, action
        assert verb in ("read", "write"), action


def test_built_in_roles_nest_and_match_the_documented_defaults() -> None:
    roles = builtin_actions()
    assert roles[Role.READER] == {Action.TRANSACTIONS_READ, Action.GOVERNANCE_READ}
    assert roles[Role.CONTRIBUTOR] == roles[Role.READER] | {Action.TRANSACTIONS_WRITE}
    assert roles[Role.ADMINISTRATOR] == set(Action)
    assert builtin_actions(Settings()) == roles


@pytest.mark.parametrize("export_role", list(Role))
def test_the_export_role_and_those_above_it_hold_chunks_read(export_role: Role) -> None:
    roles = builtin_actions(Settings(export_role))
    holders = {role for role, actions in roles.items() if Action.CHUNKS_READ in actions}
    ranks = {Role.READER: 1, Role.CONTRIBUTOR: 2, Role.ADMINISTRATOR: 3}
    assert holders == {r for r in Role if ranks[r] >= ranks[export_role]}
    assert least_role(Action.CHUNKS_READ, Settings(export_role)) == export_role
    # nothing else moves
    for role, actions in roles.items():
        assert actions - {Action.CHUNKS_READ} == builtin_actions()[role] - {Action.CHUNKS_READ}


@pytest.mark.parametrize("name", ["a", "auditor", "Auditor-2", "x.y_z", "A" + "b" * 63])
def test_valid_role_names(name: str) -> None:
    assert check_custom_role_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "1st", "-x", "a b", "a/b", "prüfer", "A" + "b" * 64, "Reader", "reader", "ADMINISTRATOR", 5, None]
)
def test_invalid_role_names(name: object) -> None:
    with pytest.raises(ValueError, match="role name"):
        check_custom_role_name(name)


def test_actions_are_parsed_exactly() -> None:
    assert parse_actions([A + "transactions/read", A + "transactions/read"]) == {Action.TRANSACTIONS_READ}
    for bad in ([], None, A + "transactions/read"):
        with pytest.raises(ValueError, match="non-empty array"):
            parse_actions(bad)
    with pytest.raises(ValueError, match="is a string"):
        parse_actions([1])
    for bad_action in (A + "Transactions/read", A + "transactions/delete"):
        with pytest.raises(ValueError, match="unknown action"):
            parse_actions([A + "transactions/read", bad_action])
    with pytest.raises(ValueError, match="and 2 more"):
        parse_actions([f"{A}unknown/{n}" for n in range(7)])


def test_application_actions_are_kept_as_written() -> None:
    """ACL's actions for user-defined endpoints (issue #16): ``/`` then printable ASCII, no spaces."""
    parsed = parse_actions(["/content/read", "/content/write", A + "transactions/read", "/content/read"])
    assert parsed == {"/content/read", "/content/write", Action.TRANSACTIONS_READ}
    assert isinstance(next(a for a in parsed if a.startswith(A)), Action)
    assert parse_actions(["/" + "x" * 255]) == {"/" + "x" * 255}
    for bad in ("/", "/has space", "/tab\there", "/" + "x" * 256, "content/read", "/caf\u00e9", "\\content"):
        with pytest.raises(ValueError, match="unknown action"):
            parse_actions([bad])


def test_a_role_record_keeps_application_actions() -> None:
    from notarium.auth.roles import RoleDefinition

    role = RoleDefinition("modify", frozenset({"/content/write", Action.TRANSACTIONS_READ, "/content/read"}))
    assert role.to_api() == {
        "role_name": "modify",
        "role_actions": ["/content/read", "/content/write", A + "transactions/read"],
    }
    assert role.to_json() == (
        b'{"roleName":"modify","roleActions":["/content/read","/content/write",'
        b'"Microsoft.ConfidentialLedger/ledger/transactions/read"]}'
    )
    again = RoleDefinition.from_json("modify", role.to_json())
    assert again == role
    # a catalogue action of a later version allows nothing here and is dropped; so is garbage
    later = b'{"roleName":"m","roleActions":["' + A.encode() + b'future/read","/ok",5,"no slash"]}'
    assert RoleDefinition.from_json("m", later).actions == {"/ok"}
