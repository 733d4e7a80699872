"""Operations: liveness, readiness, Prometheus metrics, the OpenAPI document."""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from notarium.auth.rbac import Action
from notarium.server.handlers import context, json_response, requires
from notarium.server.metrics import CONTENT_TYPE


def register(router: web.UrlDispatcher) -> None:
    router.add_get("/healthz", healthz)
    router.add_get("/readyz", readyz)
    router.add_get("/metrics", metrics)
    router.add_get("/openapi.json", openapi)
    router.add_get("/app/ping", ping)
    router.add_get("/node/state", node_state)


@requires(None)
async def healthz(request: web.Request) -> web.StreamResponse:
    return json_response({"status": "alive"})


@requires(None)
async def readyz(request: web.Request) -> web.StreamResponse:
    ledger = context(request).ledger
    if not ledger.healthy:
        return json_response({"status": "unavailable"}, status=503)
    if ledger.role is not None and not ledger.role.following:
        reason = "the replicated log failed verification: this node stopped following it (see its log)"
        return json_response({"status": "unavailable", "reason": reason}, status=503)
    if ledger.role is not None and not ledger.role.store_reachable:
        reason = "the replicated log (PostgreSQL) cannot be reached: this node retries (see its log)"
        return json_response({"status": "unavailable", "reason": reason}, status=503)
    return json_response({"status": "ready", "committed": str(ledger.committed)})


@requires(None)
async def node_state(request: web.Request) -> web.StreamResponse:
    """This node: its id, and in a replicated service its role, the view and where the primary is."""
    ledger = context(request).ledger
    role = ledger.role
    body: dict[str, object] = {
        "nodeId": ledger.facts.service.node_id,
        "replicated": role is not None,
        "role": "Primary" if ledger.primary else "Backup",
        "committed": str(ledger.committed),
    }
    if role is not None:
        body.update(
            view=role.view,
            primaryAddress=role.primary_address,
            following=role.following,
            storeReachable=role.store_reachable,
        )
    return json_response(body)


@requires(None)
async def metrics(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    ctx.metrics.update(await ctx.ledger.metrics())
    body = ctx.metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


@requires(Action.TRANSACTIONS_READ)
async def ping(request: web.Request) -> web.StreamResponse:
    """An authenticated no-op: TLS, authentication and routing, nothing else (a benchmark baseline)."""
    return json_response({"pong": True})


@requires(None)
async def openapi(request: web.Request) -> web.StreamResponse:
    text = resources.files("notarium.server").joinpath("openapi.json").read_text()
    return web.Response(text=text, content_type="application/json")
