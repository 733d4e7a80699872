"""The host's HTTP application: the management API, and each ledger's data plane under its name.

- ``/ledgers/{name}/…``: the ledger's data plane. The host finds the ledger at request time (ledgers
  created while the host runs are served at once; aiohttp's router is frozen at start, so this is
  one catch-all route, not one sub-application per ledger), strips the prefix and hands the
  request to that ledger's own application (:meth:`notarium.host.ledgers.HostedLedger.handle`).
  The data plane answers as under ``notarium serve``: same routes, authentication, roles and errors.
  Its ``nextLink`` values are relative (``/app/transactions?…``) and ACL's SDK joins them onto the
  endpoint it was given, prefix included.
- ``/ledgerIdentity/{name}``: ACL's identity document; ``ledgerTlsCertificate`` holds the ledger's
  service certificate, then the host's TLS CA (docs/design/host.md).
- the management routes (:mod:`notarium.host.arm`).
- ``/metrics``: every ledger's Prometheus figures, labelled ``ledger`` (:mod:`notarium.host.metrics`);
  the host credential is required, as for the management API (the document names every ledger).

A ledger's requests are admitted at its own rate (:mod:`notarium.host.limits`; beyond it 429
``TooManyRequests`` with ``Retry-After``, counted for that ledger only). A ledger whose secrets are lost
answers 503 until it is put into recovery, then serves the recovery endpoints
(:mod:`notarium.host.recovery`).

A name that is unknown, deleted or not yet created answers 404 ``LedgerNotFound`` in ACL's error
format, the same for all three (where real ACL's DNS name would simply stop resolving).

Every other refusal is an error body too (:func:`error_bodies`): a path no route matches is 404
(``LedgerNotFound`` under ``/ledgers/`` and ``/ledgerIdentity/``, else ``NotFound``), a method a
route does not take 405 ``MethodNotAllowed`` with ``Allow``; never aiohttp's plain-text pages. A body
sent with a ``Content-Encoding``, or declared larger than the limit, is refused (415
``UnsupportedMediaType``, 413 ``RequestTooLarge``) before any handler runs, for the management API
and every ledger alike (:mod:`notarium.server.bodies`).
"""

from __future__ import annotations

import logging
import time

from aiohttp import web

from notarium.host import arm
from notarium.host.limits import too_many_requests
from notarium.host.manager import LedgerManager
from notarium.host.names import name_key
from notarium.host.recovery import needs_recovery_response
from notarium.ledger.layout import Layout
from notarium.server.bodies import request_bodies
from notarium.server.errors import ApiError, error_response
from notarium.server.handlers import TXID_HEADER, json_response
from notarium.server.metrics import CONTENT_TYPE
from notarium.types import TxId

PREFIX = "/ledgers/"
IDENTITY_PREFIX = "/ledgerIdentity/"
log = logging.getLogger("notarium.host")


@web.middleware
async def error_bodies(request: web.Request, handler: arm.Handler) -> web.StreamResponse:
    """What aiohttp refuses by itself (no route, a method a route does not take, …) answers an ARM
    error body ``{"error": {"code", "message"}}`` (the shape ACL's data plane uses too)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_error(request, exc)


def _http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    if exc.status == 404:
        if request.path.startswith((PREFIX, IDENTITY_PREFIX)):
            return error_response(
                404, "LedgerNotFound", "No ledger is named in this path: ledgers are served under /ledgers/{name}."
            )
        return error_response(
            404,
            "NotFound",
            "No such resource on this host: the management API is under /subscriptions/{subscriptionId}/… and "
            "/providers/Microsoft.ConfidentialLedger/…, the ledgers under /ledgers/{name}.",
        )
    if exc.status == 405:
        response = error_response(405, "MethodNotAllowed", f"The method {request.method[:20]} is not allowed here.")
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    if exc.status >= 500:
        log.error("%s %s: %s", request.method, request.path[:200], exc.reason)
        return error_response(500, "InternalServerError", "The host failed to answer this request.")
    return error_response(exc.status, "InvalidRequest", exc.reason or "The request is invalid.")


def create_host_app(manager: LedgerManager) -> web.Application:
    limit = manager.settings.server.max_body_bytes
    # bodies with a Content-Encoding, or declared over the limit, are refused before anything reads them
    app = web.Application(client_max_size=limit, middlewares=[error_bodies, request_bodies(limit)])
    app[arm.MANAGER] = manager
    app.router.add_route("*", "/ledgers/{ledgerName}", ledger_request)
    app.router.add_route("*", "/ledgers/{ledgerName}/{tail:.*}", ledger_request)
    app.router.add_get("/ledgerIdentity/{ledgerName}", ledger_identity)
    app.router.add_get("/metrics", host_metrics)
    arm.register(app.router)
    return app


def _unknown(name: str) -> web.Response:
    return error_response(404, "LedgerNotFound", f"No ledger named {name[:64]!r} is served by this host.")


async def ledger_request(request: web.Request) -> web.StreamResponse:
    """Hand the request to the ledger's data plane, without the ``/ledgers/{name}`` prefix, if the
    ledger's request rate admits it."""
    name = request.match_info["ledgerName"]
    m = arm.manager(request)
    key = name_key(name)
    hosted = m.ledgers.get(key)
    recovering = m.recovering.get(key) if hosted is None else None
    target = hosted or recovering
    if target is None:
        return needs_recovery_response(name) if key in m.lost else _unknown(name)
    wait = m.limits.admit(key)
    if wait > 0:
        m.metrics.throttle(target.name)
        return too_many_requests(target.name, m.limits.get(key).requests_per_second, wait)
    # the raw path starts with /ledgers/ and the (percent-encoded) name: strip up to the next "/"
    raw = request.raw_path
    end = raw.find("/", len(PREFIX))
    query = raw.find("?")
    if end == -1 or (query != -1 and query < end):
        end = query if query != -1 else len(raw)
    if hosted is None:
        return await target.handle(request, end)
    arrived = time.perf_counter()
    response = await hosted.handle(request, end)
    if request.method == "POST" and response.status == 200 and raw[end:].split("?")[0] == "/app/transactions":
        try:
            seqno = TxId.parse(response.headers.get(TXID_HEADER, "")).seqno
        except ValueError:
            return response
        m.metrics.appended(hosted.name, hosted.remote, seqno, arrived)
    return response


async def ledger_identity(request: web.Request) -> web.StreamResponse:
    """ACL's identity document: no authentication (it bootstraps TLS)."""
    name = request.match_info["ledgerName"]
    m = arm.manager(request)
    key = name_key(name)
    hosted = m.ledgers.get(key) or m.recovering.get(key)
    if hosted is not None:
        ledger_id, cert = hosted.name, hosted.service_cert_pem
    elif key in m.lost and (record := m.registry.get(name)) is not None:  # members need it to recover
        try:
            ledger_id, cert = record.name, Layout(m.layout.ledger_dir(key)).service_cert.read_bytes()
        except OSError:  # host --store, its bundle does not open: its new identity comes with its recovery
            return needs_recovery_response(name)
    else:
        return _unknown(name)
    bundle = cert.decode() + m.credentials.ca_pem.decode()
    return json_response({"ledgerId": ledger_id, "ledgerTlsCertificate": bundle})


async def host_metrics(request: web.Request) -> web.StreamResponse:
    """Every ledger's metrics, labelled ``ledger``; the host credential is required."""
    m = arm.manager(request)
    try:
        arm.authenticate(request)
    except ApiError as exc:
        return exc.response()
    served = {h.name: (h.remote, h.ctx.metrics) for h in m.ledgers.values()}
    body = await m.metrics.render(served, m.waiting())
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
