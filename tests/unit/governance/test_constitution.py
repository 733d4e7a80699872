"""The declarative constitution: parsing, and resolve() over ballots (a table of cases)."""

from __future__ import annotations

import json

import pytest

from notarium.governance.actions import ACTIONS
from notarium.governance.constitution import Constitution, ProposalState
from notarium.ledger.service import DEFAULT_CONSTITUTION

OPEN, A, R = ProposalState.OPEN, ProposalState.ACCEPTED, ProposalState.REJECTED
THREE = ["m1", "m2", "m3"]


def test_genesis_constitution_is_the_default() -> None:
    parsed = Constitution.loads(DEFAULT_CONSTITUTION)
    assert parsed == Constitution()
    assert parsed.dumps() == DEFAULT_CONSTITUTION


@pytest.mark.parametrize(
    ("ballots", "active", "want"),
    [
        ({}, ["m1"], OPEN),
        ({"m1": True}, ["m1"], A),
        ({"m1": False}, ["m1"], R),
        ({"m1": True}, THREE, OPEN),
        ({"m1": True, "m2": True}, THREE, A),
        ({"m1": True, "m2": False}, THREE, OPEN),
        ({"m1": False, "m2": False}, THREE, R),
        ({"m1": True, "m2": True}, ["m1", "m2", "m3", "m4"], OPEN),  # 2 of 4 is not a strict majority
        ({"m1": True, "m2": True, "m3": True}, ["m1", "m2", "m3", "m4"], A),
        ({"m1": True, "x": True}, THREE, OPEN),  # a non-active member's ballot does not count
    ],
)
def test_default_strict_majority(ballots: dict[str, bool], active: list[str], want: ProposalState) -> None:
    assert Constitution().resolve(["set_user"], ballots, active) == want


def test_per_action_threshold_and_the_largest_wins() -> None:
    c = Constitution.parse({"format": "notarium-constitution/1", "actions": {"set_user": {"approval": 3}}}, ACTIONS)
    assert c.resolve(["set_user"], {"m1": True, "m2": True}, THREE) == OPEN
    assert c.resolve(["set_user"], {"m1": True, "m2": True, "m3": True}, THREE) == A
    assert c.resolve(["set_user"], {"m1": False}, THREE) == R  # 3 can no longer be reached
    assert c.resolve(["remove_user"], {"m1": True, "m2": True}, THREE) == A
    assert c.resolve(["remove_user", "set_user"], {"m1": True, "m2": True}, THREE) == OPEN


def test_all_active_members() -> None:
    c = Constitution.parse({"format": "notarium-constitution/1", "default": {"approval": "all-active-members"}})
    assert c.resolve(["set_member"], {"m1": True, "m2": True}, THREE) == OPEN
    assert c.resolve(["set_member"], dict.fromkeys(THREE, True), THREE) == A


def test_veto_global_and_per_action() -> None:
    c = Constitution.parse({"format": "notarium-constitution/1", "veto": True})
    assert c.resolve(["set_user"], {"m1": True, "m2": False}, THREE) == R
    assert c.resolve(["set_user"], {"m1": True, "m2": True, "m3": False}, THREE) == R
    c = Constitution.parse({"format": "notarium-constitution/1", "actions": {"remove_member": {"veto": True}}}, ACTIONS)
    assert c.resolve(["set_user"], {"m1": True, "m2": False}, THREE) == OPEN
    assert c.resolve(["set_user", "remove_member"], {"m1": True, "m2": False}, THREE) == R


def test_round_trip() -> None:
    obj = {
        "format": "notarium-constitution/1",
        "default": {"approval": 2},
        "actions": {"set_user": {"approval": "all-active-members", "veto": True}},
        "veto": False,
    }
    c = Constitution.parse(obj, ACTIONS)
    assert c.to_json() == obj
    assert Constitution.loads(c.dumps()) == c


@pytest.mark.parametrize(
    "obj",
    [
        [],
        {},
        {"format": "notarium-constitution/2"},
        {"format": "notarium-constitution/1", "script": "export function resolve() {}"},
        {"format": "notarium-constitution/1", "veto": "yes"},
        {"format": "notarium-constitution/1", "default": {"approval": 0}},
        {"format": "notarium-constitution/1", "default": {"approval": True}},
        {"format": "notarium-constitution/1", "default": {"approval": "most"}},
        {"format": "notarium-constitution/1", "default": {"approval": 2, "quorum": 1}},
        {"format": "notarium-constitution/1", "actions": {"launch_missiles": {"approval": 1}}},
        {"format": "notarium-constitution/1", "actions": []},
    ],
)
def test_invalid(obj: object) -> None:
    with pytest.raises(ValueError, match=r"."):
        Constitution.parse(obj, ACTIONS)


def test_not_json() -> None:
    with pytest.raises(ValueError, match="not JSON"):
        Constitution.loads(b"export function resolve() {}")
    assert json.loads(Constitution().dumps())["default"] == {"approval": "majority-of-active-members"}
