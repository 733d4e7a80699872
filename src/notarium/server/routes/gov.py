"""Consortium governance in CCF's shape (api-version 2024-07-01; docs/api.md §Governance).

Requests that change anything are COSE_Sign1 bodies signed by a member
(:func:`~notarium.server.handlers.member_signed`): they are authenticated by that signature, not by a
TLS client certificate, a token or a role. Everything else here is a public read: governance is
on the record (proposals, ballots, members and the constitution are public ledger tables).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from notarium.governance.request import MAX_REQUEST_BYTES, RequestRefusedError
from notarium.governance.service import Outcome
from notarium.server.consortium import ISSUER_TABLES, USER_TABLES
from notarium.server.context import ServerContext
from notarium.server.errors import ApiError
from notarium.server.handlers import context, json_response, member_signed, requires
from notarium.server.routes.common import path_id

PROPOSALS = "/gov/members/proposals"


def register(router: web.UrlDispatcher) -> None:
    router.add_post(PROPOSALS + ":create", create_proposal)
    router.add_get(PROPOSALS, list_proposals)
    router.add_get(PROPOSALS + "/" + path_id("proposalId", "withdraw"), get_proposal)
    router.add_get(PROPOSALS + "/{proposalId}/actions", get_proposal_actions)
    router.add_post(PROPOSALS + "/{proposalId}/ballots/{memberId}:submit", submit_ballot)
    router.add_post(PROPOSALS + "/{proposalId}:withdraw", withdraw_proposal)
    router.add_get("/gov/members/state-digests/" + path_id("memberId", "update", "ack"), get_state_digest)
    router.add_post("/gov/members/state-digests/{memberId}:update", update_state_digest)
    router.add_post("/gov/members/state-digests/{memberId}:ack", ack_state_digest)
    router.add_get("/gov/service/members", service_members)
    router.add_get("/gov/service/constitution", service_constitution)


async def _body(request: web.Request) -> bytes:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, "RequestTooLarge", "The request body is larger than this server accepts.") from None
    if len(raw) > MAX_REQUEST_BYTES:
        raise ApiError(413, "RequestTooLarge", "A governance request is at most 1 MiB.")
    return raw


async def _refresh(ctx: ServerContext, changed: frozenset[str]) -> None:
    """Bring the front's caches up to what an accepted proposal changed (it has committed)."""
    if changed & USER_TABLES:
        await ctx.users.reload()
    if changed & ISSUER_TABLES:
        await ctx.issuers.load()


async def _signed(request: web.Request, run: Callable[[ServerContext, bytes], Awaitable[Outcome]]) -> web.Response:
    ctx = context(request)
    body = await _body(request)
    try:
        async with ctx.access_changes:  # governance may change users: one change at a time
            outcome = await run(ctx, body)
            await _refresh(ctx, outcome.changed)
    except RequestRefusedError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None
    return json_response(outcome.body)


async def _read(request: web.Request, run: Callable[[ServerContext], Awaitable[object]]) -> web.Response:
    try:
        return json_response(await run(context(request)))
    except RequestRefusedError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None


@member_signed
async def create_proposal(request: web.Request) -> web.StreamResponse:
    """Propose actions (a ``proposal`` signed by an Active member); answers the proposal's state."""
    return await _signed(request, lambda ctx, body: ctx.governance.create_proposal(body))


@member_signed
async def submit_ballot(request: web.Request) -> web.StreamResponse:
    """Vote on an Open proposal (a ``ballot`` signed by the member the path names)."""
    pid, mid = request.match_info["proposalId"], request.match_info["memberId"]
    return await _signed(request, lambda ctx, body: ctx.governance.submit_ballot(pid, mid, body))


@member_signed
async def withdraw_proposal(request: web.Request) -> web.StreamResponse:
    """Withdraw an Open proposal (a ``withdrawal`` signed by its proposer)."""
    pid = request.match_info["proposalId"]
    return await _signed(request, lambda ctx, body: ctx.governance.withdraw(pid, body))


@member_signed
async def update_state_digest(request: web.Request) -> web.StreamResponse:
    """Record the current state digest for the member to acknowledge (a signed ``state_digest``)."""
    mid = request.match_info["memberId"]
    return await _signed(request, lambda ctx, body: ctx.governance.update_state_digest(mid, body))


@member_signed
async def ack_state_digest(request: web.Request) -> web.StreamResponse:
    """Acknowledge the state digest (a signed ``ack``): an Accepted member becomes Active."""
    mid = request.match_info["memberId"]
    return await _signed(request, lambda ctx, body: ctx.governance.ack(mid, body))


@requires(None)
async def list_proposals(request: web.Request) -> web.StreamResponse:
    async def run(ctx: ServerContext) -> object:
        return {"value": await ctx.governance.proposals()}

    return await _read(request, run)


@requires(None)
async def get_proposal(request: web.Request) -> web.StreamResponse:
    pid = request.match_info["proposalId"]
    return await _read(request, lambda ctx: ctx.governance.proposal(pid))


@requires(None)
async def get_proposal_actions(request: web.Request) -> web.StreamResponse:
    pid = request.match_info["proposalId"]
    return await _read(request, lambda ctx: ctx.governance.proposal_actions(pid))


@requires(None)
async def get_state_digest(request: web.Request) -> web.StreamResponse:
    mid = request.match_info["memberId"]
    return await _read(request, lambda ctx: ctx.governance.state_digest(mid))


@requires(None)
async def service_members(request: web.Request) -> web.StreamResponse:
    return await _read(request, lambda ctx: ctx.governance.members())


@requires(None)
async def service_constitution(request: web.Request) -> web.StreamResponse:
    async def run(ctx: ServerContext) -> object:
        return (await ctx.governance.constitution()).to_json()

    return await _read(request, run)
