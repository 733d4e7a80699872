"""Nodes: joining the service, and the list of its nodes (docs/design/ha.md §Joining).

``POST /node/join`` asks no TLS client certificate, token or role: a joining node has none. The
request authenticates itself: it is signed by the node key it names (proof of possession) and its
virtual quote binds that key (:func:`notarium.cluster.join.parse_join_request`). The first request
records the node ``Pending`` in ``public:ccf.gov.nodes.info`` (``Trusted`` at once under the
``--auto-trust-virtual-nodes`` policy); the same request again answers ``Pending`` until members
pass ``transition_node_to_trusted``, then ``Trusted`` with the node's certificate and the sealed
secrets, which the engine process makes (the service key never reaches this process). A Retired
node is refused. Writes here are serialised with governance's (``ctx.access_changes``), so a node
is never admitted by a request that raced its removal. New nodes are recorded within a rate and a
cap on Pending nodes, and Pending nodes expire (:mod:`notarium.server.joins`); a Pending node
asking again is answered without a write or a lock.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from aiohttp import web

from notarium.cluster.join import (
    CHECK_EXPIRED,
    CHECK_QUOTE,
    CHECK_SIGNATURE,
    MAX_REQUEST_BYTES,
    NODE_PENDING,
    NODE_RETIRED,
    NODE_TRUSTED,
    node_info,
    parse_join_request,
    pending_answer,
    trusted_answer,
)
from notarium.errors import VerificationError
from notarium.server.errors import ApiError, bad_input
from notarium.server.handlers import Handler, context, json_response, requires
from notarium.types import TxStatus
from notarium.verify import tables

log = logging.getLogger("notarium.server.nodes")

NODE_SIGNATURE = "node-signature"
_REFUSALS = {
    CHECK_SIGNATURE: (401, "InvalidSignature"),
    CHECK_QUOTE: (401, "InvalidQuote"),
    CHECK_EXPIRED: (403, "RequestExpired"),
}


def register(router: web.UrlDispatcher) -> None:
    router.add_post("/node/join", join)
    router.add_get("/node/network/nodes", network_nodes)


def node_signed(handler: Handler) -> Handler:
    """No TLS client certificate, token or role: the body is signed by the node key it presents
    (declared as ``required_action = None`` with ``authentication = "node-signature"``)."""
    guarded = requires(None)(handler)
    guarded.authentication = NODE_SIGNATURE  # type: ignore[attr-defined]
    return guarded


def _json_bytes(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


async def _body(request: web.Request) -> Any:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raw = None
    if raw is None or len(raw) > MAX_REQUEST_BYTES:
        raise ApiError(413, "RequestTooLarge", f"A join request is at most {MAX_REQUEST_BYTES} bytes.")
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        raise bad_input("The join request is not valid JSON.") from None


def _stored(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    info = json.loads(raw)
    if not isinstance(info, dict):
        raise ValueError("nodes.info holds a non-object")
    return info


@node_signed
async def join(request: web.Request) -> web.StreamResponse:
    """Ask to join the service (see the module docstring); answers Pending or Trusted."""
    ctx = context(request)
    body = await _body(request)
    try:
        req = parse_join_request(body, now=time.time())
    except VerificationError as exc:
        http_status, code = _REFUSALS.get(exc.check, (400, "InvalidInput"))
        raise ApiError(http_status, code, f"The join request is refused: {exc}.") from None
    key = req.node_id.encode()
    auto_trust = ctx.config.auto_trust_virtual_nodes
    known = _stored(await ctx.ledger.state_get(tables.NODES_INFO, key))
    if known is not None and known.get("status") == NODE_PENDING and not auto_trust:
        return json_response(pending_answer(req.node_id))  # asking again writes nothing: no lock, no limit
    async with ctx.access_changes:  # one node or governance change at a time, each against committed state
        info = _stored(await ctx.ledger.state_get(tables.NODES_INFO, key))
        writes: dict[str, dict[bytes, bytes | None]] = {}
        if info is None:  # a new node: within the rate and the cap (server/joins.py), or refused
            since, expired = await ctx.join_limits.admit_new()
            info = node_info(req, NODE_TRUSTED if auto_trust else NODE_PENDING, pending_since=since)
            writes[tables.NODES_INFO] = {**expired, key: _json_bytes(info)}
        status = info.get("status")
        if status == NODE_PENDING and auto_trust:  # the policy in force now admits it
            info, status = {**info, "status": NODE_TRUSTED}, NODE_TRUSTED
            writes[tables.NODES_INFO] = {key: _json_bytes(info)}
        if status == NODE_RETIRED:
            raise ApiError(403, "NodeRetired", f"Node {req.node_id[:16]}… is Retired: it cannot join again.")
        if status not in (NODE_PENDING, NODE_TRUSTED):
            raise ApiError(403, "NodeNotPending", f"Node {req.node_id[:16]}… is {str(status)[:32]}.")
        answer: dict[str, Any] = pending_answer(req.node_id)
        if status == NODE_TRUSTED:
            # the certificate is for the hosts recorded when the node was admitted, not the ones asked now
            node_data = info.get("node_data") or {}
            hosts = [h for h in node_data.get("hosts", []) if isinstance(h, str)]
            recorded = await ctx.ledger.state_get(tables.NODES_ENDORSED_CERTS, key)
            recorded_pem = recorded.decode("ascii", errors="replace") if recorded is not None else None
            node_cert, sealed = await ctx.ledger.admit_node(req.public_key_pem, hosts, recorded_pem)
            if node_cert != recorded_pem:
                writes[tables.NODES_ENDORSED_CERTS] = {key: node_cert.encode()}
            facts = ctx.ledger.facts
            answer = trusted_answer(
                req.node_id,
                node_cert,
                facts.service_cert_pem.decode(),
                sealed,
                facts.service.ledger_id,
                facts.service.ledger_type,
                [pem.decode() for pem in facts.previous_endorsements],
            )
        if writes:
            txid = await ctx.ledger.append(writes)
            if await ctx.commits.wait(txid) != TxStatus.COMMITTED:
                raise ApiError(503, "ServiceUnavailable", "The join could not be recorded; retry.")
            log.info("node %s recorded %s at %s (address %s)", req.node_id[:16], status, txid, req.address)
    return json_response(answer)


@requires(None)
async def network_nodes(request: web.Request) -> web.StreamResponse:
    """The service's nodes, as ``public:ccf.gov.nodes.info`` records them (public, as in CCF)."""
    ledger = context(request).ledger
    nodes = []
    for key, value in sorted((await ledger.state(tables.NODES_INFO)).items()):
        try:
            info = _stored(value) or {}
        except ValueError:
            info = {}
        node_data = info.get("node_data") if isinstance(info.get("node_data"), dict) else {}
        address = node_data.get("address") if isinstance(node_data, dict) else None
        nodes.append(
            {
                "nodeId": key.decode(errors="replace"),
                "status": str(info.get("status", "Unknown")),
                "address": address if isinstance(address, str) else None,
            }
        )
    return json_response({"currentNodeId": ledger.facts.service.node_id, "nodes": nodes})
