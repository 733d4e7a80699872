"""Consortium governance against a real ``notarium serve`` (real TLS, the service cert pinned).

member0 (genesis) adds member1 and member2 (with one Active member, its own vote is a majority);
each acknowledges a state digest and becomes Active. Then: adding a user takes two of three votes;
rejected and withdrawn proposals change nothing; ballots by a non-member, with a wrong signature,
or replayed are refused and write nothing; a constitution change governs later proposals; a vote
on a closed proposal is refused; the CLI does a propose/vote/show round. No secret is logged.
"""

from __future__ import annotations

import datetime
import itertools
import json
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from integration.server import Server, clean_env, running, settled_committed
from integration.test_ops import assert_no_secrets, secrets_of
from notarium.auditing import audit, find_target
from notarium.governance.request import sign_request
from notarium.ledger import init_service
from notarium.ledger.identity import cert_pem, load_cert, load_private_ec, private_pem, public_pem, self_signed_identity
from notarium.recovery.records import scan_recovery_records
from notarium.recovery.shares import RecoverySharesRecord, decrypt_share
from notarium.verify.keys import acl_user_id, cert_fingerprint

API = {"api-version": "2024-07-01"}
PROPOSALS = "/gov/members/proposals"
TICKS = itertools.count()  # identical requests created in the same second are replays: vary created_at


@dataclass
class Member:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    enc_pem: str = ""
    enc_key: rsa.RSAPrivateKey | None = None

    @property
    def id(self) -> str:
        return cert_fingerprint(self.cert)

    def sign(self, msg_type: str, payload: object, proposal_id: str | None = None) -> bytes:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        at = int(time.time()) - next(TICKS) % 60
        return sign_request(self.key, self.cert, msg_type, body, proposal_id=proposal_id, created_at=at)

    def set_member(self) -> dict[str, Any]:
        return {
            "name": "set_member",
            "args": {"cert": cert_pem(self.cert).decode(), "encryption_pub_key": self.enc_pem},
        }


def new_member(name: str) -> Member:
    key = ec.generate_private_key(ec.SECP384R1())
    cert = self_signed_identity(key, name, now=datetime.datetime.now(datetime.UTC), days=30)
    enc = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return Member(cert, key, public_pem(enc.public_key()).decode(), enc)


class Gov:
    def __init__(self, server: Server, work: Path) -> None:
        self.server = server
        self.work = work
        self.s = requests.Session()
        self.s.trust_env = False  # no CA bundle from the environment: the service cert is pinned
        self.s.verify = str(server.service_cert)
        d = server.directory
        member0_enc = serialization.load_pem_private_key((d / "member0_enc_privk.pem").read_bytes(), None)
        if not isinstance(member0_enc, rsa.RSAPrivateKey):
            raise TypeError("member0's encryption key is RSA")
        self.m = [
            Member(load_cert(d / "member0_cert.pem"), load_private_ec(d / "member0_privk.pem"), enc_key=member0_enc)
        ]
        self.m += [new_member("member1"), new_member("member2")]
        self.stranger = new_member("stranger")

    def post(self, path: str, body: bytes) -> requests.Response:
        return self.s.post(
            self.server.url + path, data=body, params=API, headers={"Content-Type": "application/cose"}, timeout=30
        )

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.s.get(self.server.url + path, params=API, timeout=30, **kwargs)

    def propose(self, who: int, *actions: dict[str, Any]) -> str:
        r = self.post(PROPOSALS + ":create", self.m[who].sign("proposal", {"actions": list(actions)}))
        assert r.status_code == 200, r.text
        assert r.json()["proposalState"] == "Open"
        assert r.json()["proposerId"] == self.m[who].id
        return str(r.json()["proposalId"])

    def ballot(self, member: Member, pid: str, vote: bool = True) -> requests.Response:
        return self.post(f"{PROPOSALS}/{pid}/ballots/{member.id}:submit", member.sign("ballot", {"ballot": vote}, pid))

    def vote(self, who: int, pid: str, vote: bool = True) -> str:
        r = self.ballot(self.m[who], pid, vote)
        assert r.status_code == 200, r.text
        return str(r.json()["proposalState"])

    def state(self, pid: str) -> str:
        r = self.get(f"{PROPOSALS}/{pid}")
        assert r.status_code == 200, r.text
        return str(r.json()["proposalState"])

    def committed(self) -> str:
        """The committed TxId once nothing is pending."""
        return settled_committed(lambda: str(self.get("/readyz").json()["committed"]))

    def admin(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.s.request(method, self.server.url + path, cert=str(self.server.admin_pem), timeout=30, **kwargs)

    def users(self) -> list[dict[str, Any]]:
        r = self.admin("GET", "/app/ledgerUsers")
        assert r.status_code == 200, r.text
        return list(r.json()["ledgerUsers"])

    def refused(self, r: requests.Response, status: int, code: str) -> None:
        assert r.status_code == status, r.text
        assert r.headers["Content-Type"].startswith("application/json")
        assert r.json()["error"]["code"] == code
        assert r.json()["error"]["message"]


def new_user(work: Path, name: str) -> tuple[x509.Certificate, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = self_signed_identity(key, name, now=datetime.datetime.now(datetime.UTC), days=30)
    path = work / f"{name}_combined.pem"
    path.write_bytes(cert_pem(cert) + private_pem(key))
    return cert, path


def set_user(cert: x509.Certificate, roles: list[str]) -> dict[str, Any]:
    return {"name": "set_user", "args": {"cert": cert_pem(cert).decode(), "roles": roles}}


@pytest.fixture(scope="module")
def gov(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gov]:
    work = tmp_path_factory.mktemp("gov")
    directory = work / "ledger"
    init_service(directory)
    with running(directory, verbose=2) as server:
        g = Gov(server, work)
        pid = g.propose(0, g.m[1].set_member(), g.m[2].set_member())
        assert g.vote(0, pid) == "Accepted"
        for member in g.m[1:]:
            r = g.post(f"{PROPOSALS}:create", member.sign("proposal", {"actions": [set_user(member.cert, ["Reader"])]}))
            g.refused(r, 403, "MemberNotActive")
            r = g.post(f"/gov/members/state-digests/{member.id}:update", member.sign("state_digest", b""))
            assert r.status_code == 200, r.text
            digest = g.get(f"/gov/members/state-digests/{member.id}").json()["stateDigest"]
            assert digest == r.json()["stateDigest"]
            r = g.post(f"/gov/members/state-digests/{member.id}:ack", member.sign("ack", {"stateDigest": digest}))
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "Active"
        yield g
        g.s.close()
        assert server.stop() == 0, "".join(server.output[-50:])
        extra = [work / f"{n}_combined.pem" for n in ("alice", "bob", "carol", "dave")]
        assert_no_secrets("".join(server.output), secrets_of(directory, [p for p in extra if p.exists()]))
    report = audit(find_target(directory))  # renewals, rekeys and governance included
    assert report.unsigned_tail == 0


def test_members_are_live(gov: Gov) -> None:
    members = {m["memberId"]: m for m in gov.get("/gov/service/members").json()["value"]}
    assert set(members) == {m.id for m in gov.m}
    assert {m["status"] for m in members.values()} == {"Active"}
    assert members[gov.m[1].id]["publicEncryptionKey"] == gov.m[1].enc_pem
    r = gov.admin("GET", "/app/governance/members")
    assert r.status_code == 200, r.text
    assert {m["id"] for m in r.json()["members"]} == {m.id for m in gov.m}


def test_adding_a_user_takes_two_of_three_votes(gov: Gov) -> None:
    cert, pem = new_user(gov.work, "alice")
    pid = gov.propose(0, set_user(cert, ["Reader"]))
    assert gov.vote(0, pid) == "Open"
    assert gov.s.get(gov.server.url + "/app/collections", cert=str(pem), timeout=30).status_code == 401
    assert gov.vote(2, pid) == "Accepted"
    r = gov.s.get(gov.server.url + "/app/collections", cert=str(pem), timeout=30)
    assert r.status_code == 200, r.text
    assert {"assignedRoles": ["Reader"], "userId": acl_user_id(cert)} in gov.users()
    proposal = gov.get(f"{PROPOSALS}/{pid}").json()
    assert proposal["finalVotes"] == {gov.m[0].id: True, gov.m[2].id: True}
    # a member's vote on a closed proposal is refused
    before = gov.committed()
    gov.refused(gov.ballot(gov.m[1], pid), 409, "ProposalNotOpen")
    assert gov.committed() == before


def test_rejected_and_withdrawn_proposals_change_nothing(gov: Gov) -> None:
    cert, pem = new_user(gov.work, "bob")
    users = gov.users()
    pid = gov.propose(1, set_user(cert, ["Administrator"]))
    assert gov.vote(0, pid, False) == "Open"
    assert gov.vote(2, pid, False) == "Rejected"
    pid2 = gov.propose(1, set_user(cert, ["Administrator"]))
    assert gov.vote(1, pid2) == "Open"
    gov.refused(gov.post(f"{PROPOSALS}/{pid2}:withdraw", gov.m[0].sign("withdrawal", b"", pid2)), 403, "NotProposer")
    r = gov.post(f"{PROPOSALS}/{pid2}:withdraw", gov.m[1].sign("withdrawal", b"", pid2))
    assert r.status_code == 200, r.text
    assert r.json()["proposalState"] == "Withdrawn"
    gov.refused(gov.ballot(gov.m[2], pid2), 409, "ProposalNotOpen")
    assert gov.users() == users
    assert gov.s.get(gov.server.url + "/app/collections", cert=str(pem), timeout=30).status_code == 401


def test_bad_ballots_are_refused_and_write_nothing(gov: Gov) -> None:
    cert, _pem = new_user(gov.work, "carol")
    pid = gov.propose(2, set_user(cert, ["Reader"]))
    good = gov.m[0].sign("ballot", {"ballot": True}, pid)
    before = gov.committed()
    # a non-member, under its own id and claiming to be member1
    gov.refused(gov.ballot(gov.stranger, pid), 401, "UnknownMember")
    forged = sign_request(gov.stranger.key, gov.stranger.cert, "ballot", b'{"ballot": true}', proposal_id=pid)
    tag = cbor2.loads(forged)
    protected = cbor2.loads(tag.value[0])
    protected[4] = gov.m[1].id.encode()
    forged = cbor2.dumps(cbor2.CBORTag(18, [cbor2.dumps(protected), {}, tag.value[2], tag.value[3]]))
    gov.refused(gov.post(f"{PROPOSALS}/{pid}/ballots/{gov.m[1].id}:submit", forged), 401, "InvalidSignature")
    # member0's ballot with a flipped vote (the signature no longer covers it)
    tag = cbor2.loads(good)
    flipped = cbor2.dumps(cbor2.CBORTag(18, [tag.value[0], {}, b'{"ballot": false}', tag.value[3]]))
    gov.refused(gov.post(f"{PROPOSALS}/{pid}/ballots/{gov.m[0].id}:submit", flipped), 401, "InvalidSignature")
    # not COSE at all; a ballot under another member's path
    gov.refused(gov.post(f"{PROPOSALS}/{pid}/ballots/{gov.m[0].id}:submit", b"{}"), 400, "InvalidGovernanceRequest")
    gov.refused(gov.post(f"{PROPOSALS}/{pid}/ballots/{gov.m[1].id}:submit", good), 403, "MemberIdMismatch")
    assert gov.committed() == before
    r = gov.post(f"{PROPOSALS}/{pid}/ballots/{gov.m[0].id}:submit", good)
    assert r.status_code == 200, r.text
    assert r.json()["proposalState"] == "Open"
    # replayed: the same request again, while the proposal is still open
    before = gov.committed()
    gov.refused(gov.post(f"{PROPOSALS}/{pid}/ballots/{gov.m[0].id}:submit", good), 403, "ReplayedRequest")
    assert gov.committed() == before
    assert gov.get(f"{PROPOSALS}/{pid}").json()["ballotCount"] == 1
    assert gov.vote(1, pid, False) == "Open"
    assert gov.vote(2, pid, False) == "Rejected"


def test_constitution_change_governs_later_proposals(gov: Gov) -> None:
    cert, pem = new_user(gov.work, "dave")
    stale = gov.propose(0, set_user(cert, ["Reader"]))
    constitution = {
        "format": "notarium-constitution/1",
        "default": {"approval": "majority-of-active-members"},
        "actions": {"set_user": {"approval": 3}},
        "veto": False,
    }
    pid = gov.propose(0, {"name": "set_constitution", "args": {"constitution": constitution}})
    assert gov.vote(0, pid) == "Open"
    assert gov.vote(1, pid) == "Accepted"
    assert gov.state(stale) == "Dropped"
    assert gov.get("/gov/service/constitution").json() == constitution
    r = gov.admin("GET", "/app/governance/constitution")
    assert r.status_code == 200, r.text
    assert json.loads(r.json()["script"]) == constitution
    later = gov.propose(1, set_user(cert, ["Reader"]))
    assert gov.vote(0, later) == "Open"
    assert gov.vote(1, later) == "Open"
    assert gov.s.get(gov.server.url + "/app/collections", cert=str(pem), timeout=30).status_code == 401
    assert gov.vote(2, later) == "Accepted"
    assert gov.s.get(gov.server.url + "/app/collections", cert=str(pem), timeout=30).status_code == 200


def test_cli_propose_vote_show(gov: Gov, tmp_path: Path) -> None:
    cert, _pem = new_user(tmp_path, "erin")
    d = gov.server.directory
    base = [sys.executable, "-m", "notarium", "gov"]
    conn = ["--endpoint", gov.server.url, "--dir", str(d), "--json"]

    def cli(*args: str, member: int = 0) -> tuple[int, dict[str, Any]]:
        extra: list[str] = []
        if member:
            key = tmp_path / f"m{member}.pem"
            key.write_bytes(private_pem(gov.m[member].key))
            crt = tmp_path / f"m{member}_cert.pem"
            crt.write_bytes(cert_pem(gov.m[member].cert))
            extra = ["--member-cert", str(crt), "--member-key", str(key)]
        p = subprocess.run(
            [*base, *args, *conn, *extra], check=False, capture_output=True, text=True, env=clean_env(), timeout=60
        )
        return p.returncode, json.loads(p.stdout)

    code, out = cli("propose", "--action", "remove_user", "--args", json.dumps({"user_id": acl_user_id(cert)}))
    assert code == 0, out
    pid = out["proposalId"]
    code, out = cli("vote", pid, "--accept")
    assert (code, out["proposalState"]) == (0, "Open")
    time.sleep(1.05)  # the same vote within the same second would be the very same request: a replay
    code, out = cli("vote", pid, "--accept")  # the same member again
    assert code == 1
    assert out["error"]["code"] == "VoteAlreadyExists"
    code, out = cli("vote", pid, "--reject", member=1)
    assert (code, out["proposalState"]) == (0, "Open")
    code, out = cli("vote", pid, "--accept", member=2)
    assert (code, out["proposalState"]) == (0, "Failed")  # erin is not a user: the action cannot apply
    code, out = cli("show", pid)
    assert code == 0
    assert out["proposalState"] == "Failed"
    assert out["actions"] == [{"name": "remove_user", "args": {"user_id": acl_user_id(cert)}}]
    assert "no such user" in out["failure"]["reason"]
    code, out = cli("list")
    assert code == 0
    assert pid in {p["proposalId"] for p in out["value"]}


def _shares(gov: Gov) -> RecoverySharesRecord:
    record, _chain = scan_recovery_records(gov.server.directory / "ledger")
    assert record is not None
    return record


def test_members_hold_recovery_shares_and_rekey_is_governed(gov: Gov) -> None:
    """Adding members re-issued the shares to all three; a threshold change and a rekey by proposal
    are carried out by the engine once accepted; entries before and after a rekey read back."""
    record = _shares(gov)
    assert set(record.members) == {m.id for m in gov.m}
    for m in gov.m:
        assert m.enc_key is not None
        record.check_share(
            m.id, decrypt_share(record.members[m.id].encrypted_share, m.enc_key)
        )  # each decrypts and checks
    pid = gov.propose(0, {"name": "set_recovery_threshold", "args": {"recovery_threshold": 2}})
    gov.vote(0, pid)
    assert gov.vote(1, pid) == "Accepted"
    deadline = time.monotonic() + 10
    while _shares(gov).threshold != 2:
        assert time.monotonic() < deadline, "the shares were not re-issued at the new threshold"
        time.sleep(0.05)

    before = gov.admin("POST", "/app/transactions", params={"collectionId": "rekey"}, json={"contents": "before"})
    assert before.status_code == 200, before.text
    starts = len((gov.server.directory / "secrets" / "ledger_secret.sealed").read_bytes())
    pid = gov.propose(1, {"name": "trigger_ledger_rekey", "args": {}})
    gov.vote(0, pid)
    assert gov.vote(2, pid) == "Accepted"
    deadline = time.monotonic() + 10
    while len((gov.server.directory / "secrets" / "ledger_secret.sealed").read_bytes()) == starts:
        assert time.monotonic() < deadline, "the ledger was not rekeyed"
        time.sleep(0.05)
    after = gov.admin("POST", "/app/transactions", params={"collectionId": "rekey"}, json={"contents": "after"})
    assert after.status_code == 200, after.text
    gov.committed()
    listed = gov.admin("GET", "/app/transactions", params={"collectionId": "rekey", **API})
    assert [e["contents"] for e in listed.json()["entries"]] == ["before", "after"]


def _served_cert(gov: Gov) -> x509.Certificate:
    host, port = gov.server.url.removeprefix("https://").rsplit(":", 1)
    return x509.load_pem_x509_certificate(ssl.get_server_certificate((host, int(port))).encode())


def test_certificate_renewals_are_governed(gov: Gov) -> None:
    """renew_node_certificate and renew_service_certificate, once accepted, give new validity
    periods to the same keys: the node serves its new certificate, /ledgerIdentity names the new
    service certificate, and clients pinning the old one keep working."""
    old_node = _served_cert(gov)
    pid = gov.propose(0, {"name": "renew_node_certificate", "args": {"validity_period_days": 30}})
    gov.vote(0, pid)
    assert gov.vote(1, pid) == "Accepted"
    new_node = _served_cert(gov)
    assert new_node.public_key() == old_node.public_key()
    days = (new_node.not_valid_after_utc - new_node.not_valid_before_utc).days
    assert 29 <= days <= 31, days

    old_service = x509.load_pem_x509_certificate(gov.server.service_cert.read_bytes())
    pid = gov.propose(2, {"name": "renew_service_certificate", "args": {"validity_period_days": 100}})
    gov.vote(1, pid)
    assert gov.vote(2, pid) == "Accepted"
    identity = gov.get("/ledgerIdentity/ledger").json()["ledgerTlsCertificate"]
    new_service = x509.load_pem_x509_certificate(identity.encode())
    assert new_service != old_service
    assert new_service.public_key() == old_service.public_key()
    assert 99 <= (new_service.not_valid_after_utc - new_service.not_valid_before_utc).days <= 101
    assert gov.server.service_cert.read_bytes() == identity.encode()  # and in the service directory
    pinned_before = gov.work / "old_service_cert.pem"
    pinned_before.write_bytes(cert_pem(old_service))
    r = requests.get(gov.server.url + "/app/ping", verify=str(pinned_before), timeout=10)
    assert r.status_code == 401  # TLS with the old pinned certificate works (no client cert: 401)
