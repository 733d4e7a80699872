"""Governance reads and attestation (acl-rest-api.md §3.10), and the identity endpoint (§3.14)."""

from __future__ import annotations

import hashlib

from aiohttp import web

from notarium.auth.rbac import Action
from notarium.server.app import context, json_response, requires
from notarium.verify import tables

QUOTE_FORMAT = "Insecure_Virtual"


def register(router: web.UrlDispatcher) -> None:
    router.add_get("/app/governance/constitution", constitution)
    router.add_get("/app/governance/members", members)
    router.add_get("/app/enclaveQuotes", enclave_quotes)
    router.add_get("/ledgerIdentity/{ledgerId}", ledger_identity)


@requires(Action.GOVERNANCE_READ)
async def constitution(request: web.Request) -> web.StreamResponse:
    script = (await context(request).ledger.state_get(tables.CONSTITUTION, tables.SINGLETON_KEY) or b"").decode()
    return json_response({"digest": hashlib.sha256(script.encode()).hexdigest(), "script": script})


@requires(Action.GOVERNANCE_READ)
async def members(request: web.Request) -> web.StreamResponse:
    certs = await context(request).ledger.state(tables.MEMBERS_CERTS)
    return json_response(
        {"members": [{"certificate": pem.decode(), "id": mid.decode()} for mid, pem in sorted(certs.items())]}
    )


@requires(Action.GOVERNANCE_READ)
async def enclave_quotes(request: web.Request) -> web.StreamResponse:
    """There is no TEE: every quote is of CCF's *virtual* platform, empty, and says so."""
    ledger = context(request).ledger
    node_id = ledger.facts.service.node_id
    nodes = sorted(k.decode() for k in await ledger.state(tables.NODES_INFO)) or [node_id]
    quotes = {
        n: {"nodeId": n, "quoteVersion": QUOTE_FORMAT, "raw": "", "platform": "Virtual", "virtual": True} for n in nodes
    }
    return json_response({"currentNodeId": node_id, "enclaveQuotes": quotes})


@requires(None)
async def ledger_identity(request: web.Request) -> web.StreamResponse:
    """The service certificate: TLS trust anchor and receipt root of trust. No authentication."""
    facts = context(request).ledger.facts
    return json_response({"ledgerId": facts.service.ledger_id, "ledgerTlsCertificate": facts.service_cert_pem.decode()})
