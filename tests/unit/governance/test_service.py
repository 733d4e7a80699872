"""Governance against an in-memory ledger store: the proposal/ballot state machine and the actions."""

from __future__ import annotations

import asyncio
import datetime
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from notarium.governance import tables as t
from notarium.governance.actions import parse_proposal
from notarium.governance.request import RequestRefusedError, sign_request
from notarium.governance.service import Governance, Writes
from notarium.ledger.identity import cert_pem, public_pem, self_signed_identity
from notarium.verify.keys import acl_user_id, cert_fingerprint

NOW = 1_800_000_000
ADMIN = "A" * 64
TICKS = itertools.count()  # distinct created_at values: identical requests at the same second are replays


class FakeStore:
    def __init__(self) -> None:
        self.tables: dict[str, dict[bytes, bytes]] = {}
        self.transactions: list[Writes] = []
        self.digest = "11" * 32
        self.reads: list[tuple[str, bytes | None]] = []  # (table, key): a key read; (table, None): a whole table

    async def state(self, table: str) -> dict[bytes, bytes]:
        self.reads.append((table, None))
        return dict(self.tables.get(table, {}))

    async def state_get(self, table: str, key: bytes) -> bytes | None:
        self.reads.append((table, key))
        return self.tables.get(table, {}).get(key)

    async def commit(self, writes: Writes) -> bool:
        self.transactions.append(writes)
        for table, kv in writes.items():
            target = self.tables.setdefault(table, {})
            for k, v in kv.items():
                if v is None:
                    target.pop(k, None)
                else:
                    target[k] = v
        return True

    async def state_digest(self) -> str:
        return self.digest


@dataclass
class FakeEffects:
    calls: list[str] = field(default_factory=list)

    async def trigger_ledger_rekey(self) -> None:
        self.calls.append("rekey")

    async def refresh_recovery_shares(self) -> None:
        self.calls.append("reshare")


@dataclass
class Member:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    enc: str

    @property
    def id(self) -> str:
        return cert_fingerprint(self.cert)

    def sign(self, msg_type: str, payload: object, proposal_id: str | None = None, at: int | None = None) -> bytes:
        at = NOW - 250 + next(TICKS) % 500 if at is None else at
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return sign_request(self.key, self.cert, msg_type, body, proposal_id=proposal_id, created_at=at)

    def set_member(self) -> dict[str, Any]:
        return {"name": "set_member", "args": {"cert": cert_pem(self.cert).decode(), "encryption_pub_key": self.enc}}


def new_member(name: str) -> Member:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = self_signed_identity(key, name, now=datetime.datetime.now(datetime.UTC), days=10)
    enc = public_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()).decode()
    return Member(key, cert, enc)


@pytest.fixture(scope="module")
def people() -> list[Member]:
    return [new_member(f"member{n}") for n in range(4)]


@dataclass
class World:
    store: FakeStore
    gov: Governance
    effects: FakeEffects
    m: list[Member]

    def run(self, coro: Any) -> Any:
        return asyncio.run(coro)

    def propose(self, who: int, *actions: dict[str, Any]) -> str:
        out = self.run(self.gov.create_proposal(self.m[who].sign("proposal", {"actions": list(actions)})))
        assert out.body["proposalState"] == "Open"
        return str(out.body["proposalId"])

    def vote(self, who: int, pid: str, vote: bool = True) -> str:
        body = self.m[who].sign("ballot", {"ballot": vote}, pid)
        return str(self.run(self.gov.submit_ballot(pid, self.m[who].id, body)).body["proposalState"])

    def join(self, who: int) -> None:
        self.run(self.gov.update_state_digest(self.m[who].id, self.m[who].sign("state_digest", b"")))
        digest = self.run(self.gov.state_digest(self.m[who].id))["stateDigest"]
        out = self.run(self.gov.ack(self.m[who].id, self.m[who].sign("ack", {"stateDigest": digest})))
        assert out.body["status"] == "Active"

    def refused(self, coro: Any) -> RequestRefusedError:
        before = len(self.store.transactions)
        with pytest.raises(RequestRefusedError) as info:
            self.run(coro)
        assert len(self.store.transactions) == before, "a refused request wrote something"
        return info.value

    def info(self, pid: str) -> dict[str, Any]:
        return dict(json.loads(self.store.tables[t.PROPOSALS_INFO][pid.encode()]))

    def users(self) -> dict[str, Any]:
        return {k.decode(): json.loads(v) for k, v in self.store.tables.get(t.USERS, {}).items()}


@pytest.fixture
def world(people: list[Member]) -> World:
    store = FakeStore()
    m0 = people[0]
    store.tables = {
        t.MEMBERS_CERTS: {m0.id.encode(): cert_pem(m0.cert)},
        t.MEMBERS_INFO: {m0.id.encode(): b'{"member_data":null,"recovery_role":"Participant","status":"Active"}'},
        t.MEMBERS_ENC_KEYS: {m0.id.encode(): m0.enc.encode()},
        t.USERS: {ADMIN.lower().encode(): b'{"assignedRoles":["Administrator"],"userId":"admin"}'},
    }
    effects = FakeEffects()
    return World(store, Governance(store, effects, clock=lambda: NOW), effects, people)


def three(w: World) -> None:
    pid = w.propose(0, w.m[1].set_member(), w.m[2].set_member())
    assert w.vote(0, pid) == "Accepted"  # one Active member: its own vote is a majority
    info = json.loads(w.store.tables[t.MEMBERS_INFO][w.m[1].id.encode()])
    assert info["status"] == "Accepted"
    w.join(1)
    w.join(2)


def set_user(cert: x509.Certificate, roles: list[str]) -> dict[str, Any]:
    return {"name": "set_user", "args": {"cert": cert_pem(cert).decode(), "roles": roles}}


def test_three_members_two_votes_add_a_user(world: World) -> None:
    three(world)
    assert world.effects.calls == ["reshare"]  # two new recovery members
    pid = world.propose(1, set_user(world.m[3].cert, ["Reader"]))
    assert world.vote(1, pid) == "Open"
    key = acl_user_id(world.m[3].cert).replace(":", "").lower()
    assert key not in world.users()
    transactions = len(world.store.transactions)
    assert world.vote(2, pid) == "Accepted"
    assert len(world.store.transactions) == transactions + 1  # the ballot, the outcome and the action: one
    assert world.users()[key]["assignedRoles"] == ["Reader"]
    assert world.info(pid)["final_votes"] == {world.m[1].id: True, world.m[2].id: True}
    e = world.refused(world.gov.submit_ballot(pid, world.m[0].id, world.m[0].sign("ballot", {"ballot": True}, pid)))
    assert (e.status, e.code) == (409, "ProposalNotOpen")


def test_rejected_and_withdrawn_change_nothing(world: World) -> None:
    three(world)
    before = world.users()
    pid = world.propose(0, set_user(world.m[3].cert, ["Reader"]))
    assert world.vote(1, pid, False) == "Open"
    assert world.vote(2, pid, False) == "Rejected"
    pid2 = world.propose(0, set_user(world.m[3].cert, ["Reader"]))
    assert world.vote(0, pid2) == "Open"
    e = world.refused(world.gov.withdraw(pid2, world.m[1].sign("withdrawal", b"", pid2)))
    assert (e.status, e.code) == (403, "NotProposer")
    assert world.run(world.gov.withdraw(pid2, world.m[0].sign("withdrawal", b"", pid2))).body["proposalState"] == (
        "Withdrawn"
    )
    e = world.refused(world.gov.submit_ballot(pid2, world.m[1].id, world.m[1].sign("ballot", {"ballot": True}, pid2)))
    assert e.code == "ProposalNotOpen"
    assert world.users() == before


def test_refusals_write_nothing(world: World) -> None:
    three(world)
    pid = world.propose(0, set_user(world.m[3].cert, ["Reader"]))
    ballot = world.m[1].sign("ballot", {"ballot": True}, pid)
    assert world.run(world.gov.submit_ballot(pid, world.m[1].id, ballot)).body["proposalState"] == "Open"
    e = world.refused(world.gov.submit_ballot(pid, world.m[1].id, ballot))
    assert (e.status, e.code) == (403, "ReplayedRequest")
    e = world.refused(
        world.gov.submit_ballot(pid, world.m[1].id, world.m[1].sign("ballot", {"ballot": False}, pid, NOW + 1))
    )
    assert (e.status, e.code) == (409, "VoteAlreadyExists")
    e = world.refused(world.gov.submit_ballot(pid, world.m[3].id, world.m[3].sign("ballot", {"ballot": True}, pid)))
    assert (e.status, e.code) == (401, "UnknownMember")
    e = world.refused(
        world.gov.submit_ballot(pid, world.m[2].id, world.m[2].sign("ballot", {"ballot": True}, pid, NOW - 3600))
    )
    assert (e.status, e.code) == (403, "RequestExpired")
    e = world.refused(world.gov.submit_ballot(pid, world.m[2].id, world.m[2].sign("ballot", {"vote": "yes"}, pid)))
    assert (e.status, e.code) == (400, "InvalidGovernanceRequest")
    e = world.refused(world.gov.create_proposal(world.m[0].sign("proposal", {"actions": [{"name": "rm_rf"}]})))
    assert (e.status, e.code) == (400, "InvalidGovernanceRequest")
    e = world.refused(
        world.gov.submit_ballot("f" * 64, world.m[2].id, world.m[2].sign("ballot", {"ballot": True}, "f" * 64))
    )
    assert (e.status, e.code) == (404, "ProposalNotFound")


def test_accepted_members_cannot_propose_until_they_ack(world: World) -> None:
    pid = world.propose(0, world.m[1].set_member())
    assert world.vote(0, pid) == "Accepted"
    e = world.refused(world.gov.create_proposal(world.m[1].sign("proposal", {"actions": [world.m[2].set_member()]})))
    assert (e.status, e.code) == (403, "MemberNotActive")
    e = world.refused(world.gov.ack(world.m[1].id, world.m[1].sign("ack", {"stateDigest": "22" * 32})))
    assert (e.status, e.code) == (400, "StateDigestMismatch")
    world.join(1)


def test_constitution_change_drops_open_proposals_and_governs_later_ones(world: World) -> None:
    three(world)
    stale = world.propose(0, set_user(world.m[3].cert, ["Reader"]))
    constitution = {"format": "notarium-constitution/1", "actions": {"set_user": {"approval": 3}}}
    pid = world.propose(0, {"name": "set_constitution", "args": {"constitution": constitution}})
    world.vote(0, pid)
    assert world.vote(1, pid) == "Accepted"
    assert world.info(stale)["state"] == "Dropped"
    assert json.loads(world.run(world.gov.constitution()).dumps())["actions"] == {"set_user": {"approval": 3}}
    later = world.propose(0, set_user(world.m[3].cert, ["Reader"]))
    assert world.vote(0, later) == "Open"
    assert world.vote(1, later) == "Open"
    assert world.vote(2, later) == "Accepted"


def test_a_failing_action_fails_the_proposal_atomically(world: World) -> None:
    pid = world.propose(
        0,
        set_user(world.m[3].cert, ["Reader"]),
        {"name": "remove_user", "args": {"user_id": ADMIN}},  # would leave no Administrator
    )
    assert world.vote(0, pid) == "Failed"
    assert "Administrator" in world.info(pid)["failure"]
    assert list(world.users()) == [ADMIN.lower()]


def test_member_removal_keeps_an_active_member_and_reshares(world: World) -> None:
    three(world)
    world.effects.calls.clear()
    pid = world.propose(0, {"name": "remove_member", "args": {"member_id": world.m[2].id}})
    world.vote(0, pid)
    assert world.vote(1, pid) == "Accepted"
    assert world.m[2].id.encode() not in world.store.tables[t.MEMBERS_CERTS]
    assert world.effects.calls == ["reshare"]


def test_rekey_and_recorded_intents(world: World) -> None:
    pid = world.propose(0, {"name": "trigger_ledger_rekey", "args": {}}, {"name": "renew_service_certificate"})
    assert world.vote(0, pid) == "Accepted"
    assert world.effects.calls == ["rekey"]
    assert set(world.store.tables[t.INTENTS]) == {b"trigger_ledger_rekey", b"renew_service_certificate"}


def test_recovery_threshold_cannot_exceed_recovery_members(world: World) -> None:
    pid = world.propose(0, {"name": "set_recovery_threshold", "args": {"recovery_threshold": 2}})
    assert world.vote(0, pid) == "Failed"
    three(world)
    world.effects.calls.clear()
    pid = world.propose(0, {"name": "set_recovery_threshold", "args": {"recovery_threshold": 2}})
    world.vote(0, pid)
    assert world.vote(1, pid) == "Accepted"
    assert json.loads(world.store.tables[t.SERVICE_CONFIG][t.SINGLETON_KEY]) == {"recovery_threshold": 2}
    assert world.effects.calls == ["reshare"]


def test_jwt_issuer_and_nodes(world: World) -> None:
    jwks = {
        "keys": [
            {
                "kty": "EC",
                "crv": "P-256",
                "kid": "k1",
                "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
            }
        ]
    }
    node = "ab" * 32
    world.store.tables[t.NODES_INFO] = {node.encode(): b'{"status":"Pending"}', b"cd" * 32: b'{"status":"Trusted"}'}
    pid = world.propose(
        0,
        {"name": "set_jwt_issuer", "args": {"issuer": "https://login.example/", "jwks": jwks}},
        {"name": "transition_node_to_trusted", "args": {"node_id": node}},
    )
    assert world.vote(0, pid) == "Accepted"
    assert b"https://login.example/" in world.store.tables[t.JWT_KEYS]
    assert json.loads(world.store.tables[t.NODES_INFO][node.encode()])["status"] == "Trusted"
    pid = world.propose(0, {"name": "remove_node", "args": {"node_id": node}})
    assert world.vote(0, pid) == "Accepted"
    pid = world.propose(0, {"name": "remove_node", "args": {"node_id": "cd" * 32}})
    assert world.vote(0, pid) == "Failed"  # the last trusted node


@pytest.mark.parametrize(
    "proposal",
    [
        {},
        {"actions": []},
        {"actions": [{"name": "set_user", "args": {"roles": ["Reader"]}}]},
        {"actions": [{"name": "set_user", "args": {"user_id": "a\nb", "roles": ["Reader"]}}]},
        {"actions": [{"name": "set_member", "args": {"cert": "not a cert"}}]},
        {"actions": [{"name": "set_member", "args": {"cert": "x", "extra": 1}}]},
        {"actions": [{"name": "set_recovery_threshold", "args": {"recovery_threshold": 0}}]},
        {"actions": [{"name": "set_constitution", "args": {"constitution": {"format": "js"}}}]},
        {"actions": [{"name": "remove_node", "args": {"node_id": "x"}}]},
        {"actions": [{"name": "set_jwt_issuer", "args": {"issuer": "https://x/", "jwks": {"keys": []}}}]},
    ],
)
def test_invalid_arguments(proposal: object) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_proposal(json.dumps(proposal).encode())


# --- what a request reads (issue #15: unauthenticated requests must not cost table copies) -------


def many_pending_nodes(n: int) -> dict[bytes, bytes]:
    return {f"{i:064x}".encode(): b'{"status":"Pending","pending_since":1}' for i in range(n)}


def test_a_request_that_is_not_a_members_reads_only_the_certificate_it_names(world: World) -> None:
    """Before its signature is checked, a request costs one key lookup: the certificate its kid
    names. No table is copied for a stranger's or a forged request, however large the tables."""
    world.store.tables[t.NODES_INFO] = many_pending_nodes(3500)
    stranger = new_member("stranger")
    forged = sign_request(stranger.key, world.m[0].cert, "proposal", b'{"actions":[]}', created_at=NOW)
    for body, code in (
        (stranger.sign("proposal", {"actions": [set_user(stranger.cert, ["Reader"])]}), "UnknownMember"),
        (forged, "InvalidSignature"),
    ):
        world.store.reads.clear()
        e = world.refused(world.gov.create_proposal(body))
        assert (e.status, e.code) == (401, code)
        kid = (stranger if code == "UnknownMember" else world.m[0]).id.encode()
        assert world.store.reads == [(t.MEMBERS_CERTS, kid)]
    pid = world.propose(0, set_user(world.m[3].cert, ["Reader"]))
    world.store.reads.clear()
    e = world.refused(world.gov.submit_ballot(pid, world.m[0].id, stranger.sign("ballot", {"ballot": True}, pid)))
    assert e.code == "UnknownMember"
    assert world.store.reads == [(t.MEMBERS_CERTS, stranger.id.encode())]


def test_only_the_node_actions_read_the_nodes_table(world: World) -> None:
    world.store.tables[t.NODES_INFO] = many_pending_nodes(100)
    node = f"{7:064x}"
    world.store.reads.clear()
    three(world)  # proposals, ballots, state digests and acks of members
    pid = world.propose(1, set_user(world.m[3].cert, ["Reader"]))
    world.vote(1, pid)
    assert world.vote(2, pid) == "Accepted"
    pid = world.propose(1, {"name": "trigger_ledger_rekey", "args": {}})
    world.run(world.gov.withdraw(pid, world.m[1].sign("withdrawal", b"", pid)))
    assert not [r for r in world.store.reads if r[0] == t.NODES_INFO]
    assert (t.PROPOSALS, None) not in world.store.reads  # one proposal is read by its key, never all of them
    assert (t.MEMBERS_CERTS, None) not in world.store.reads
    pid = world.propose(1, {"name": "transition_node_to_trusted", "args": {"node_id": node}})
    world.vote(1, pid)
    assert (t.NODES_INFO, None) not in world.store.reads  # Open: no action applied yet
    assert world.vote(2, pid) == "Accepted"
    assert (t.NODES_INFO, None) in world.store.reads
    assert json.loads(world.store.tables[t.NODES_INFO][node.encode()])["status"] == "Trusted"


def test_the_nodes_an_open_proposal_would_trust(world: World) -> None:
    three(world)
    a, b, c = (f"{i:064x}" for i in (1, 2, 3))
    world.store.tables[t.NODES_INFO] = {n.encode(): b'{"status":"Pending"}' for n in (a, b, c)}
    open_one = world.propose(0, {"name": "transition_node_to_trusted", "args": {"node_id": a}})
    withdrawn = world.propose(0, {"name": "transition_node_to_trusted", "args": {"node_id": b}})
    world.run(world.gov.withdraw(withdrawn, world.m[0].sign("withdrawal", b"", withdrawn)))
    accepted = world.propose(0, {"name": "transition_node_to_trusted", "args": {"node_id": c}})
    world.vote(0, accepted)
    assert world.vote(1, accepted) == "Accepted"
    world.propose(0, {"name": "remove_node", "args": {"node_id": b}})  # removing is not trusting
    assert world.run(world.gov.nodes_to_trust()) == {a}
    assert world.info(open_one)["state"] == "Open"


ACTION_SAMPLES: dict[str, dict[str, Any]] = {
    "set_member": {"cert": "member1", "encryption_pub_key": "enc1"},
    "remove_member": {"member_id": "member0"},
    "set_user": {"user_id": ADMIN, "roles": ["Reader", "Administrator"]},
    "remove_user": {"user_id": ADMIN},
    "set_jwt_issuer": {
        "issuer": "https://login.example/",
        "jwks": {"keys": [{"kty": "RSA", "kid": "k", "n": "sXch", "e": "AQAB"}]},
    },
    "remove_jwt_issuer": {"issuer": "https://login.example/"},
    "set_recovery_threshold": {"recovery_threshold": 1},
    "set_constitution": {"constitution": {"format": "notarium-constitution/1"}},
    "transition_node_to_trusted": {"node_id": "ab" * 32},
    "remove_node": {"node_id": "ab" * 32},
    "trigger_ledger_rekey": {},
    "renew_service_certificate": {},
    "renew_node_certificate": {"node_id": "ab" * 32},
    "transition_service_to_open": {"next_service_identity": "member1"},
}


def test_every_action_reads_only_the_tables_it_declares(world: World) -> None:
    """Governance loads ACTION_READS[name] for an accepted action and nothing else: applied to a
    strict view of just those tables, no action reads another (a LookupError would say which)."""
    from notarium.governance.actions import ACTION_READS, ACTIONS, ApplyContext, Overlay, apply_actions

    assert set(ACTION_SAMPLES) == set(ACTIONS) == set(ACTION_READS)
    three(world)
    pem = {"member1": cert_pem(world.m[1].cert).decode(), "member0": world.m[0].id, "enc1": world.m[1].enc}
    world.store.tables[t.NODES_INFO] = {b"ab" * 32: b'{"status":"Pending"}', b"cd" * 32: b'{"status":"Trusted"}'}
    world.store.tables[t.JWT_ISSUERS] = {b"https://login.example/": b"{}"}
    world.store.tables[t.USERS][b"b" * 64] = b'{"assignedRoles":["Administrator"],"userId":"other"}'
    for name, sample in ACTION_SAMPLES.items():
        args = {k: pem.get(v, v) if isinstance(v, str) else v for k, v in sample.items()}
        (call,) = parse_proposal(json.dumps({"actions": [{"name": name, "args": args}]}).encode())
        base = {table: dict(world.store.tables.get(table, {})) for table in ACTION_READS[name]}
        ctx = ApplyContext(Overlay(base, strict=True), "p" * 64, "11" * 32)
        apply_actions(ctx, [call])  # neither a LookupError nor a failure: each sample applies
