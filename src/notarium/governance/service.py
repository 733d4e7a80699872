"""Governance requests against the ledger: verify, decide, record, apply (one transaction each).

:class:`Governance` takes the ledger through :class:`Store` (read committed state tables, append a
write set and wait for its commit, the current state digest), so it runs against the server's
engine link and, in unit tests, against a dictionary. Requests are serialised (one at a time):
each is checked against the committed state and its transaction commits before the next starts.
A refused request writes nothing (:class:`~notarium.governance.request.RequestRefusedError`).

Reads are what a request needs, in that order: first the one certificate the request names, to
check its signature (a request that is not a member's reads nothing else); then that member's
records; the tables a decision reads whole (:data:`DECIDE_TABLES`) only for proposals and ballots;
and the tables of a proposal's actions (:data:`~notarium.governance.actions.ACTION_READS`) only
once it is Accepted. So no table grows the cost of requests that do not need it (the nodes table,
which anyone can add Pending nodes to, is read only by the node actions).

Every accepted request is one transaction holding: the request itself (``HISTORY``, the member's
last signed request, raw COSE), the replay memory (``RECENT_REQUESTS``), the proposal or its new
state (``PROPOSALS``, ``PROPOSALS_INFO``) and, when the proposal is decided Accepted, the writes of
all its actions. Effects the engine carries out afterwards (rekey, new recovery shares) run once
that transaction has committed, through :class:`Effects`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from notarium.governance import tables as t
from notarium.governance.actions import (
    REKEY,
    RENEW,
    RESHARE,
    ActionCall,
    ActionFailedError,
    ApplyContext,
    Effect,
    Overlay,
    action_reads,
    active_members,
    apply_actions,
    parse_proposal,
)
from notarium.governance.constitution import Constitution, ProposalState
from notarium.governance.request import RequestRefusedError, SignedRequest, malformed, signer_id, verify_request

log = logging.getLogger("notarium.governance")

WINDOW_S = 300  # a request must be created within this many seconds of the service's clock
Writes = dict[str, dict[bytes, bytes | None]]

# the tables deciding a proposal reads whole (who is Active, the constitution); an accepted
# proposal's actions read theirs (actions.ACTION_READS)
DECIDE_TABLES = (t.MEMBERS_INFO, t.CONSTITUTION)
TRUST_NODE = "transition_node_to_trusted"


class Store(Protocol):
    async def state(self, table: str) -> dict[bytes, bytes]: ...

    async def state_get(self, table: str, key: bytes) -> bytes | None: ...

    async def commit(self, writes: Writes) -> bool:
        """Append ``writes`` as one transaction; True once committed, False if it could not be."""
        ...

    async def state_digest(self) -> str: ...


class Effects(Protocol):
    """What the engine does after an accepted proposal commits (the recovery work's interface)."""

    async def trigger_ledger_rekey(self) -> None: ...

    async def refresh_recovery_shares(self) -> None: ...

    async def renew_certificates(self, service_days: int | None, node_days: int | None) -> None: ...


class RecordedOnly:
    """Effects not wired to an engine: the request is on the ledger (``INTENTS``), nothing more."""

    async def trigger_ledger_rekey(self) -> None:
        log.warning("a ledger rekey was accepted and recorded; this engine does not carry it out yet")

    async def refresh_recovery_shares(self) -> None:
        log.warning("new recovery shares were requested and recorded; this engine does not issue them yet")

    async def renew_certificates(self, service_days: int | None, node_days: int | None) -> None:
        log.warning("a certificate renewal was accepted and recorded; this engine does not carry it out")


@dataclass(frozen=True, slots=True)
class Outcome:
    """An accepted request's answer and what it changed (so callers can refresh their caches)."""

    body: dict[str, Any]
    changed: frozenset[str]


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def proposal_view(proposal_id: str, info: Mapping[str, Any]) -> dict[str, Any]:
    """A proposal's state as the API shows it (CCF's 2024-07-01 shape)."""
    ballots = info.get("ballots", {})
    body: dict[str, Any] = {
        "proposalId": proposal_id,
        "proposerId": info["proposer_id"],
        "proposalState": info["state"],
        "ballotCount": len(ballots),
        "ballots": dict(ballots),
    }
    if info.get("final_votes") is not None:
        body["finalVotes"] = info["final_votes"]
    if info.get("failure") is not None:
        body["failure"] = {"reason": info["failure"]}
    return body


class Governance:
    def __init__(
        self,
        store: Store,
        effects: Effects | None = None,
        *,
        window_s: int = WINDOW_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._effects = effects or RecordedOnly()
        self._window = window_s
        self._clock = clock
        self._lock = asyncio.Lock()

    # --- reads ----------------------------------------------------------------------------------

    async def proposals(self) -> list[dict[str, Any]]:
        infos = await self._store.state(t.PROPOSALS_INFO)
        return [proposal_view(k.decode(), json.loads(v)) for k, v in sorted(infos.items())]

    async def proposal(self, proposal_id: str) -> dict[str, Any]:
        info = (await self._store.state(t.PROPOSALS_INFO)).get(proposal_id.encode())
        if info is None:
            raise RequestRefusedError(404, "ProposalNotFound", "No such proposal.")
        return proposal_view(proposal_id, json.loads(info))

    async def proposal_actions(self, proposal_id: str) -> dict[str, Any]:
        raw = (await self._store.state(t.PROPOSALS)).get(proposal_id.encode())
        if raw is None:
            raise RequestRefusedError(404, "ProposalNotFound", "No such proposal.")
        return dict(json.loads(raw))

    async def members(self) -> dict[str, Any]:
        certs = await self._store.state(t.MEMBERS_CERTS)
        infos = await self._store.state(t.MEMBERS_INFO)
        keys = await self._store.state(t.MEMBERS_ENC_KEYS)
        members = []
        for mid, pem in sorted(certs.items()):
            info = json.loads(infos.get(mid, b"{}"))
            member: dict[str, Any] = {
                "memberId": mid.decode(),
                "certificate": pem.decode(),
                "status": info.get("status"),
                "memberData": info.get("member_data"),
                "recoveryRole": info.get("recovery_role"),
            }
            if mid in keys:
                member["publicEncryptionKey"] = keys[mid].decode()
            members.append(member)
        return {"value": members}

    async def constitution(self) -> Constitution:
        raw = (await self._store.state(t.CONSTITUTION)).get(t.SINGLETON_KEY)
        return Constitution.loads(raw) if raw else Constitution()

    async def state_digest(self, member_id: str) -> dict[str, Any]:
        ack = (await self._store.state(t.MEMBERS_ACKS)).get(member_id.lower().encode())
        if ack is None:
            raise RequestRefusedError(404, "StateDigestNotFound", "No state digest for this member yet.")
        return {"memberId": member_id.lower(), "stateDigest": json.loads(ack)["state_digest"]}

    async def nodes_to_trust(self) -> frozenset[str]:
        """The node ids an Open proposal would trust (``transition_node_to_trusted``): Pending
        nodes the members are deciding on, which do not expire meanwhile."""
        nodes: set[str] = set()
        for key, raw in (await self._store.state(t.PROPOSALS_INFO)).items():
            if json.loads(raw).get("state") != ProposalState.OPEN:
                continue
            proposal = await self._store.state_get(t.PROPOSALS, key)
            for action in json.loads(proposal or b"{}").get("actions", []):
                if action.get("name") == TRUST_NODE and isinstance(action.get("args", {}).get("node_id"), str):
                    nodes.add(action["args"]["node_id"])
        return frozenset(nodes)

    # --- signed requests ------------------------------------------------------------------------

    async def _load(self, tables: Iterable[str]) -> dict[str, dict[bytes, bytes]]:
        return {table: await self._store.state(table) for table in tables}

    async def _verify(
        self,
        body: bytes,
        msg_type: str,
        *,
        proposal_id: str | None = None,
        member_id: str | None = None,
        active: bool = True,
    ) -> tuple[SignedRequest, Writes]:
        """Verify a request and refuse replays; the writes that record it (history, replay memory).
        The signature is checked before anything but the certificate it names is read."""
        signer = signer_id(body)
        pem = await self._store.state_get(t.MEMBERS_CERTS, signer.encode())
        now = self._clock()
        request = verify_request(
            body,
            lambda mid: pem if mid == signer else None,
            expected_type=msg_type,
            now=now,
            window_s=self._window,
            proposal_id=proposal_id,
            member_id=member_id,
        )
        member = request.member_id.encode()
        info = json.loads(await self._store.state_get(t.MEMBERS_INFO, member) or b"{}")
        if active and info.get("status") != "Active":
            raise RequestRefusedError(403, "MemberNotActive", "Only Active members may do this (ack a state digest).")
        recent = json.loads(await self._store.state_get(t.RECENT_REQUESTS, member) or b"{}")
        if request.digest in recent:
            raise RequestRefusedError(403, "ReplayedRequest", "This request was already received.")
        oldest = int(now) - self._window - 1
        kept = {d: at for d, at in recent.items() if isinstance(at, int) and at >= oldest}
        kept[request.digest] = request.created_at
        writes: Writes = {
            t.HISTORY: {member: request.raw},
            t.RECENT_REQUESTS: {member: _json(kept)},
        }
        return request, writes

    async def _commit(self, writes: Writes) -> None:
        if not await self._store.commit(writes):
            raise RequestRefusedError(503, "ServiceUnavailable", "The request could not be committed; retry.")

    async def _decide(
        self, proposal_id: str, info: dict[str, Any], calls: list[ActionCall]
    ) -> tuple[Overlay, list[Effect]]:
        """Resolve the proposal; if Accepted apply its actions (or mark it Failed). Updates ``info``."""
        snapshot = await self._load(DECIDE_TABLES)
        view = Overlay(snapshot, strict=True)
        raw = snapshot[t.CONSTITUTION].get(t.SINGLETON_KEY)
        constitution = Constitution.loads(raw) if raw else Constitution()
        active = active_members(view)
        state = constitution.resolve([c.name for c in calls], info["ballots"], active)
        info["state"] = state.value
        effects: list[Effect] = []
        if state in (ProposalState.ACCEPTED, ProposalState.REJECTED):
            info["final_votes"] = {m: v for m, v in info["ballots"].items() if m in active}
        if state == ProposalState.ACCEPTED:
            snapshot.update(await self._load(action_reads(calls) - set(snapshot)))
            view = Overlay(snapshot, strict=True)
            ctx = ApplyContext(view, proposal_id, await self._store.state_digest())
            try:
                apply_actions(ctx, calls)
                effects = ctx.effects
            except ActionFailedError as exc:
                view = Overlay(snapshot, strict=True)
                info["state"] = ProposalState.FAILED.value
                info["failure"] = str(exc)
        view.put(t.PROPOSALS_INFO, proposal_id.encode(), _json(info))
        return view, effects

    async def _finish(self, request_writes: Writes, view: Overlay, effects: list[Effect]) -> frozenset[str]:
        writes: Writes = {table: dict(w) for table, w in view.writes.items()}
        for table, w in request_writes.items():
            writes.setdefault(table, {}).update(w)
        await self._commit(writes)
        for effect in dict.fromkeys(effects):
            try:
                if effect == REKEY:
                    await self._effects.trigger_ledger_rekey()
                elif effect == RESHARE:
                    await self._effects.refresh_recovery_shares()
                elif isinstance(effect, tuple) and effect[0] == RENEW:
                    await self._effects.renew_certificates(effect[1], effect[2])
            except Exception:  # the decision is on the ledger; the effect is the engine's to retry
                log.exception("governance effect %s failed after commit", effect)
        return frozenset(writes)

    async def create_proposal(self, body: bytes) -> Outcome:
        async with self._lock:
            request, writes = await self._verify(body, "proposal")
            try:
                calls = parse_proposal(request.payload)
            except ValueError as exc:
                raise malformed(f"The proposal is invalid: {exc}.") from None
            proposal_id = request.digest
            if await self._store.state_get(t.PROPOSALS_INFO, proposal_id.encode()) is not None:
                raise RequestRefusedError(403, "ReplayedRequest", "This proposal was already received.")
            writes[t.PROPOSALS] = {proposal_id.encode(): _json({"actions": [c.to_json() for c in calls]})}
            info: dict[str, Any] = {"proposer_id": request.member_id, "ballots": {}, "created_at": request.created_at}
            view, effects = await self._decide(proposal_id, info, calls)
            changed = await self._finish(writes, view, effects)
            return Outcome(proposal_view(proposal_id, info), changed)

    async def _open_proposal(self, proposal_id: str) -> tuple[dict[str, Any], list[ActionCall]]:
        raw = await self._store.state_get(t.PROPOSALS_INFO, proposal_id.encode())
        if raw is None:
            raise RequestRefusedError(404, "ProposalNotFound", "No such proposal.")
        info = dict(json.loads(raw))
        if info["state"] != ProposalState.OPEN:
            raise RequestRefusedError(409, "ProposalNotOpen", f"The proposal is {info['state']}, no longer Open.")
        stored = await self._store.state_get(t.PROPOSALS, proposal_id.encode())
        if stored is None:
            raise RequestRefusedError(404, "ProposalNotFound", "No such proposal.")
        proposal = json.loads(stored)
        return info, [ActionCall(a["name"], a.get("args", {})) for a in proposal["actions"]]

    async def submit_ballot(self, proposal_id: str, member_id: str, body: bytes) -> Outcome:
        async with self._lock:
            request, writes = await self._verify(body, "ballot", proposal_id=proposal_id, member_id=member_id)
            vote = _ballot(request.payload)
            info, calls = await self._open_proposal(proposal_id)
            if request.member_id in info["ballots"]:
                raise RequestRefusedError(409, "VoteAlreadyExists", "This member has already voted on this proposal.")
            info["ballots"] = {**info["ballots"], request.member_id: vote}
            view, effects = await self._decide(proposal_id, info, calls)
            changed = await self._finish(writes, view, effects)
            return Outcome(proposal_view(proposal_id, info), changed)

    async def withdraw(self, proposal_id: str, body: bytes) -> Outcome:
        async with self._lock:
            request, writes = await self._verify(body, "withdrawal", proposal_id=proposal_id)
            info, _calls = await self._open_proposal(proposal_id)
            if info["proposer_id"] != request.member_id:
                raise RequestRefusedError(403, "NotProposer", "Only the proposer may withdraw a proposal.")
            info["state"] = ProposalState.WITHDRAWN.value
            view = Overlay({}, strict=True)
            view.put(t.PROPOSALS_INFO, proposal_id.encode(), _json(info))
            changed = await self._finish(writes, view, [])
            return Outcome(proposal_view(proposal_id, info), changed)

    async def update_state_digest(self, member_id: str, body: bytes) -> Outcome:
        async with self._lock:
            request, writes = await self._verify(body, "state_digest", member_id=member_id, active=False)
            digest = await self._store.state_digest()
            writes[t.MEMBERS_ACKS] = {request.member_id.encode(): _json({"state_digest": digest})}
            changed = await self._finish(writes, Overlay({}, strict=True), [])
            return Outcome({"memberId": request.member_id, "stateDigest": digest}, changed)

    async def ack(self, member_id: str, body: bytes) -> Outcome:
        async with self._lock:
            request, writes = await self._verify(body, "ack", member_id=member_id, active=False)
            member = request.member_id.encode()
            stored = await self._store.state_get(t.MEMBERS_ACKS, member)
            if stored is None:
                raise RequestRefusedError(404, "StateDigestNotFound", "No state digest for this member yet.")
            expected = json.loads(stored)["state_digest"]
            if _acked_digest(request.payload) != expected:
                raise RequestRefusedError(
                    400, "StateDigestMismatch", "The acknowledged digest is not this member's latest state digest."
                )
            view = Overlay({}, strict=True)
            info = dict(json.loads(await self._store.state_get(t.MEMBERS_INFO, member) or b"{}"))
            if info.get("status") == "Accepted":
                info["status"] = "Active"
                view.put(t.MEMBERS_INFO, member, _json(info))
            view.put(t.MEMBERS_ACKS, member, _json({"state_digest": expected, "acked": True}))
            changed = await self._finish(writes, view, [])
            return Outcome({"memberId": request.member_id, "status": info.get("status")}, changed)


def _payload_object(payload: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise malformed(f"The {what} payload is not JSON.") from None
    if not isinstance(obj, dict):
        raise malformed(f"The {what} payload must be a JSON object.")
    return obj


def _ballot(payload: bytes) -> bool:
    """``{"ballot": true|false}``: a declarative vote (no script runs)."""
    obj = _payload_object(payload, "ballot")
    vote = obj.get("ballot")
    if set(obj) != {"ballot"} or not isinstance(vote, bool):
        raise malformed('A ballot is {"ballot": true} (for) or {"ballot": false} (against).')
    return vote


def _acked_digest(payload: bytes) -> str:
    obj = _payload_object(payload, "ack")
    digest = obj.get("stateDigest", obj.get("state_digest"))
    if not isinstance(digest, str):
        raise malformed('An ack is {"stateDigest": "<the member\'s state digest>"}.')
    return digest
