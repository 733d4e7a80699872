"""The declarative constitution: JSON rules, no code (docs/design/governance.md §Constitution).

::

    {"format": "notarium-constitution/1",
     "default": {"approval": "majority-of-active-members"},
     "actions": {"set_user": {"approval": 3}, "remove_member": {"approval": "all-active-members", "veto": true}},
     "veto": false}

``approval`` is ``"majority-of-active-members"`` (strictly more than half of the Active members),
``"all-active-members"``, or a number N of votes for (at least 1). A proposal needs, for each of its
actions, that action's approval (``actions``, else ``default``): the largest of them. With ``veto``
(top level, or on any action of the proposal) one member voting against rejects it. Without a veto,
a proposal is rejected once the votes against leave too few members to reach the approval.
Only ballots of members who are Active when the proposal is resolved count.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

FORMAT = "notarium-constitution/1"
MAJORITY = "majority-of-active-members"
ALL = "all-active-members"
MAX_VOTES = 10_000


class ProposalState(StrEnum):
    OPEN = "Open"
    ACCEPTED = "Accepted"
    REJECTED = "Rejected"
    WITHDRAWN = "Withdrawn"
    FAILED = "Failed"
    DROPPED = "Dropped"


Approval = str | int


@dataclass(frozen=True, slots=True)
class Rule:
    approval: Approval = MAJORITY
    veto: bool = False

    def required(self, active: int) -> int:
        """Votes for needed with ``active`` Active members."""
        if self.approval == MAJORITY:
            return active // 2 + 1
        if self.approval == ALL:
            return max(active, 1)
        return int(self.approval)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"approval": self.approval}
        if self.veto:
            body["veto"] = True
        return body


def _rule(obj: object, where: str, known_actions: Iterable[str] | None) -> Rule:
    if not isinstance(obj, Mapping):
        raise ValueError(f"{where} must be an object")
    unknown = set(obj) - {"approval", "veto"}
    if unknown:
        raise ValueError(f"{where}: unknown fields {', '.join(sorted(map(str, unknown)))}")
    approval = obj.get("approval", MAJORITY)
    if isinstance(approval, bool) or not (
        approval in (MAJORITY, ALL) or (isinstance(approval, int) and 1 <= approval <= MAX_VOTES)
    ):
        raise ValueError(f"{where}.approval must be {MAJORITY!r}, {ALL!r} or a number of votes from 1 to {MAX_VOTES}")
    veto = obj.get("veto", False)
    if not isinstance(veto, bool):
        raise ValueError(f"{where}.veto must be true or false")
    return Rule(approval, veto)


@dataclass(frozen=True, slots=True)
class Constitution:
    default: Rule = Rule()
    actions: Mapping[str, Rule] = field(default_factory=dict)
    veto: bool = False

    @classmethod
    def parse(cls, obj: object, known_actions: Iterable[str] | None = None) -> Constitution:
        """A constitution from its JSON value; ``ValueError`` saying what is wrong."""
        if not isinstance(obj, Mapping):
            raise ValueError("the constitution must be a JSON object")
        unknown = set(obj) - {"format", "default", "actions", "veto"}
        if unknown:
            raise ValueError(f"unknown constitution fields: {', '.join(sorted(map(str, unknown)))}")
        if obj.get("format") != FORMAT:
            raise ValueError(f"the constitution's format must be {FORMAT!r}")
        default = _rule(obj.get("default", {}), "default", known_actions)
        actions_obj = obj.get("actions", {})
        if not isinstance(actions_obj, Mapping):
            raise ValueError("actions must be an object (action name -> rule)")
        names = None if known_actions is None else frozenset(known_actions)
        actions = {}
        for name, rule in actions_obj.items():
            if names is not None and name not in names:
                raise ValueError(f"actions: unknown action {str(name)[:64]!r}")
            actions[str(name)] = _rule(rule, f"actions.{name}", known_actions)
        veto = obj.get("veto", False)
        if not isinstance(veto, bool):
            raise ValueError("veto must be true or false")
        return cls(default, actions, veto)

    @classmethod
    def loads(cls, text: bytes | str) -> Constitution:
        try:
            obj = json.loads(text)
        except (ValueError, UnicodeDecodeError):
            raise ValueError("the constitution is not JSON") from None
        return cls.parse(obj)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "default": self.default.to_json(),
            "actions": {name: rule.to_json() for name, rule in sorted(self.actions.items())},
            "veto": self.veto,
        }

    def dumps(self) -> str:
        """The stored form: indented, sorted keys (as genesis writes it)."""
        return json.dumps(self.to_json(), indent=2, sort_keys=True)

    def rule_for(self, action: str) -> Rule:
        return self.actions.get(action, self.default)

    def resolve(self, action_names: Iterable[str], ballots: Mapping[str, bool], active: Iterable[str]) -> ProposalState:
        """``Accepted``, ``Rejected`` or ``Open`` for a proposal of these actions with these ballots
        (member id -> vote for), counting only the ballots of ``active`` members."""
        members = frozenset(active)
        count = len(members)
        rules = [self.rule_for(a) for a in action_names] or [self.default]
        required = max(rule.required(count) for rule in rules)
        veto = self.veto or any(rule.veto for rule in rules)
        votes = {m: v for m, v in ballots.items() if m in members}
        votes_for = sum(1 for v in votes.values() if v)
        votes_against = len(votes) - votes_for
        if veto and votes_against:
            return ProposalState.REJECTED
        if votes_for >= required:
            return ProposalState.ACCEPTED
        if votes and count - votes_against < required:
            return ProposalState.REJECTED
        return ProposalState.OPEN


DEFAULT = Constitution()
