"""Governance reads and attestation (acl-rest-api.md §3.10), and the identity endpoint (§3.14)."""

from __future__ import annotations

import hashlib
import json

from aiohttp import web

from notarium.auth.rbac import Action
from notarium.cluster.attestation import enclave_quote, is_node_id
from notarium.server.handlers import context, json_response, requires
from notarium.verify import tables


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


def _trusted(value: bytes) -> bool:
    try:
        info = json.loads(value)
    except ValueError:
        return False
    return isinstance(info, dict) and info.get("status") == "Trusted"


@requires(Action.GOVERNANCE_READ)
async def enclave_quotes(request: web.Request) -> web.StreamResponse:
    """One quote per Trusted node of the service (``public:ccf.gov.nodes.info``), as CCF lists them:
    the virtual platform's evidence (:mod:`notarium.cluster.attestation`), which says it is virtual."""
    ledger = context(request).ledger
    node_id = ledger.facts.service.node_id
    recorded = {key.decode(errors="replace"): value for key, value in (await ledger.state(tables.NODES_INFO)).items()}
    nodes = sorted(n for n, value in recorded.items() if is_node_id(n) and _trusted(value)) or [node_id]
    return json_response({"currentNodeId": node_id, "enclaveQuotes": {n: enclave_quote(n) for n in nodes}})


@requires(None)
async def ledger_identity(request: web.Request) -> web.StreamResponse:
    """The service certificate: TLS trust anchor and receipt root of trust. No authentication."""
    facts = context(request).ledger.facts
    return json_response({"ledgerId": facts.service.ledger_id, "ledgerTlsCertificate": facts.service_cert_pem.decode()})
