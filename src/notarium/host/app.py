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

from aiohttp import web

from notarium.host import arm
from notarium.host.manager import LedgerManager
from notarium.server.app import json_response
from notarium.server.bodies import request_bodies
from notarium.server.errors import error_response

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
    arm.register(app.router)
    return app


def _unknown(name: str) -> web.Response:
    return error_response(404, "LedgerNotFound", f"No ledger named {name[:64]!r} is served by this host.")


async def ledger_request(request: web.Request) -> web.StreamResponse:
    """Hand the request to the ledger's data plane, without the ``/ledgers/{name}`` prefix."""
    name = request.match_info["ledgerName"]
    hosted = arm.manager(request).served(name)
    if hosted is None:
        return _unknown(name)
    # the raw path starts with /ledgers/ and the (percent-encoded) name: strip up to the next "/"
    raw = request.raw_path
    end = raw.find("/", len(PREFIX))
    query = raw.find("?")
    if end == -1 or (query != -1 and query < end):
        end = query if query != -1 else len(raw)
    return await hosted.handle(request, end)


async def ledger_identity(request: web.Request) -> web.StreamResponse:
    """ACL's identity document: no authentication (it bootstraps TLS)."""
    name = request.match_info["ledgerName"]
    m = arm.manager(request)
    hosted = m.served(name)
    if hosted is None:
        return _unknown(name)
    bundle = hosted.service_cert_pem.decode() + m.credentials.ca_pem.decode()
    return json_response({"ledgerId": hosted.name, "ledgerTlsCertificate": bundle})
