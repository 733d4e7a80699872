"""The management API: ARM's ``Microsoft.ConfidentialLedger/ledgers``, as azure-mgmt-confidentialledger
(1.0.1, api-version 2022-05-13; 2.0.0b6, api-version 2026-05-22-preview) and ARM templates use it.

Routes (every one needs the host credential and an ``api-version``):

- ``PUT|GET|PATCH|DELETE /subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.ConfidentialLedger/ledgers/{name}``
- ``GET /subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.ConfidentialLedger/ledgers`` and
  ``GET /subscriptions/{s}/providers/Microsoft.ConfidentialLedger/ledgers``: lists, paged by ``nextLink``
- ``POST /subscriptions/{s}/providers/Microsoft.ConfidentialLedger/checkNameAvailability``
- ``GET /subscriptions/{s}/providers/Microsoft.ConfidentialLedger/operationStatuses/{id}``: the
  Azure-AsyncOperation resource of a create or delete
- ``GET /providers/Microsoft.ConfidentialLedger/operations``
- ``POST …/ledgers/{name}/recover``: notarium's action: put a ledger whose ledger secrets are lost into
  recovery, or say how its recovery stands (:mod:`notarium.host.recovery`)
- any method on ``…/ledgers/`` (an empty ledger name): 400 ``InvalidResourceName``

Long-running operations follow ARM: a create answers 201 with ``provisioningState: Creating`` and
an ``Azure-AsyncOperation`` header; a delete answers 202 with the same header (and ``Location``);
the operation reads ``InProgress`` until ``Succeeded`` or ``Failed`` (with an error). Updates (PUT on
an existing ledger, PATCH) are synchronous: 200 with ``provisioningState: Succeeded``. Errors are
ARM's ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from notarium.errors import StorageError
from notarium.host.manager import ConflictError, LedgerManager, Operation
from notarium.host.names import NAME_RULE, InvalidRequestError, check_name, valid_name
from notarium.host.registry import FAILED, Caller, LedgerRecord
from notarium.server.connections import failure_response
from notarium.server.errors import ApiError, error_response
from notarium.server.tls import PEER_CERT_DER

access_log = logging.getLogger("notarium.access")
log = logging.getLogger("notarium.host")

PROVIDER = "Microsoft.ConfidentialLedger"
RESOURCE_TYPE = f"{PROVIDER}/ledgers"
# every api-version of the provider's ledgers in its published specification (azure-rest-api-specs,
# specification/confidentialledger/resource-manager; the SDKs embed them: 1.0.1 sends 2022-05-13,
# 2.0.0b6 2026-05-22-preview); the wire format of these operations is the same in all of them as
# far as notarium serves it. An api-version that is not listed is refused, as ARM refuses it.
API_VERSIONS = frozenset(
    {
        "2020-12-01-preview",
        "2021-05-13-preview",
        "2022-05-13",
        "2022-09-08-preview",
        "2023-01-26-preview",
        "2023-06-28-preview",
        "2024-07-09-preview",
        "2024-09-19-preview",
        "2025-06-10-preview",
        "2026-02-23",
        "2026-05-22-preview",
    }
)
RETRY_AFTER_S = "1"  # how soon ARM clients poll an operation again
MANAGER: web.AppKey[LedgerManager] = web.AppKey("manager", LedgerManager)
CALLER: web.RequestKey[Caller] = web.RequestKey("caller", Caller)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

LEDGERS = "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/" + RESOURCE_TYPE
SUBSCRIPTION = "/subscriptions/{subscriptionId}/providers/" + PROVIDER


def register(router: web.UrlDispatcher) -> None:
    one = LEDGERS + "/{ledgerName}"
    router.add_put(one, management(put_ledger))
    router.add_get(one, management(get_ledger))
    router.add_patch(one, management(patch_ledger))
    router.add_delete(one, management(delete_ledger))
    router.add_post(one + "/recover", management(recover_ledger))
    router.add_route("*", LEDGERS + "/", management(empty_ledger_name))
    router.add_get(LEDGERS, management(list_by_resource_group))
    router.add_get(SUBSCRIPTION + "/ledgers", management(list_by_subscription))
    router.add_get(SUBSCRIPTION + "/ledgers/", management(list_by_subscription))
    router.add_post(SUBSCRIPTION + "/checkNameAvailability", management(check_name_availability))
    router.add_get(SUBSCRIPTION + "/operationStatuses/{operationId}", management(operation_status))
    router.add_get(f"/providers/{PROVIDER}/operations", management(list_operations))


def manager(request: web.Request) -> LedgerManager:
    return request.app[MANAGER]


# --- authentication, errors, access log -------------------------------------------------------


def authenticate(request: web.Request) -> Caller:
    """The host credential: the bearer token, or an operator client certificate. Ledger users'
    credentials mean nothing here (and the host credential means nothing to a ledger)."""
    credentials = manager(request).credentials
    authorization = request.headers.get("Authorization")
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip() and credentials.token_matches(token.strip()):
            return Caller("host-token", "Key")
        raise ApiError(401, "InvalidAuthenticationToken", "The access token is invalid for this host.")
    der = request.transport.get_extra_info(PEER_CERT_DER) if request.transport is not None else None
    if der is not None and credentials.is_operator(der):
        return Caller("operator-certificate", "Application")
    raise ApiError(
        401,
        "AuthenticationFailed",
        "Authentication failed: send the host token (Authorization: Bearer) or an operator certificate.",
    )


def management(handler: Handler) -> Handler:
    """A management route: the host credential, a known api-version, ARM errors, an access-log line."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        start = time.perf_counter()
        caller = None
        try:
            caller = authenticate(request)
            request[CALLER] = caller
            version = request.query.get("api-version")
            if version is None:
                raise ApiError(400, "MissingApiVersionParameter", "The api-version query parameter is required.")
            if version not in API_VERSIONS:
                raise ApiError(
                    400,
                    "InvalidApiVersionParameter",
                    f"The api-version {version[:40]!r} is not supported; supported: {', '.join(sorted(API_VERSIONS))}.",
                )
            response = await handler(request)
        except ApiError as exc:
            response = exc.response()
        except InvalidRequestError as exc:
            response = error_response(400, exc.code, str(exc))
        except ConflictError as exc:
            response = error_response(409, exc.code, str(exc))
        except StorageError as exc:  # notarium host --store: PostgreSQL unreachable or refusing
            log.warning("%s %s: the host's registry failed: %s", request.method, request.path[:200], exc)
            response = error_response(
                503, "ServiceUnavailable", "The host's registry (PostgreSQL) cannot be reached right now; retry later."
            )
            response.headers["Retry-After"] = RETRY_AFTER_S
        except web.HTTPException as exc:
            response = error_response(exc.status if exc.status < 500 else 400, "InvalidRequest", exc.reason)
        except Exception as exc:  # the client gone (only the access log sees it), or a 500
            response = failure_response(request, exc, log, "host")
        if access_log.isEnabledFor(logging.INFO):
            line = {
                "method": request.method,
                "path": request.path,
                "status": response.status,
                "ms": round((time.perf_counter() - start) * 1000, 3),
                "caller": caller.name if caller else None,
                "remote": request.remote,
            }
            access_log.info(json.dumps(line, separators=(",", ":")))
        return response

    guarded.__name__ = handler.__name__
    guarded.__doc__ = handler.__doc__
    return guarded


def arm_json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(body, separators=(",", ":")), content_type="application/json", headers=headers
    )


async def json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise InvalidRequestError("The request body is not valid JSON.", code="InvalidRequestContent") from None
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.", code="InvalidRequestContent")
    return body


# --- the resource -----------------------------------------------------------------------------


def resource_id(record: LedgerRecord) -> str:
    return (
        f"/subscriptions/{record.subscription}/resourceGroups/{record.resource_group}"
        f"/providers/{RESOURCE_TYPE}/{record.name}"
    )


def render(record: LedgerRecord, base_url: str) -> dict[str, Any]:
    """A ledger as ARM's ``ConfidentialLedger`` resource."""
    quoted = quote(record.name, safe="")
    return {
        "id": resource_id(record),
        "name": record.name,
        "type": RESOURCE_TYPE,
        "location": record.location,
        "tags": record.tags,
        "systemData": {
            "createdBy": record.created_by,
            "createdByType": record.created_by_type,
            "createdAt": record.created_at,
            "lastModifiedBy": record.modified_by,
            "lastModifiedByType": record.modified_by_type,
            "lastModifiedAt": record.modified_at,
        },
        "properties": {
            "ledgerName": record.name,
            "ledgerUri": f"{base_url}/ledgers/{quoted}",
            "identityServiceUri": f"{base_url}/ledgerIdentity/{quoted}",
            "ledgerInternalNamespace": "notarium",
            "ledgerType": record.ledger_type,
            "provisioningState": record.state,
            "aadBasedSecurityPrincipals": record.aad_principals,
            "certBasedSecurityPrincipals": record.cert_principals,
        },
    }


def _path(request: web.Request) -> tuple[str, str, str]:
    info = request.match_info
    subscription, group, name = info["subscriptionId"], info["resourceGroupName"], info["ledgerName"]
    if not 0 < len(group) <= 90:
        raise InvalidRequestError("The resource group name must be 1 to 90 characters.", code="InvalidResourceGroup")
    return subscription, group, name


def _not_found(group: str, name: str) -> ApiError:
    return ApiError(
        404,
        "ResourceNotFound",
        f"The Resource '{RESOURCE_TYPE}/{name}' under resource group '{group}' was not found.",
    )


def _operation_url(request: web.Request, subscription: str, op: Operation) -> str:
    version = request.query.get("api-version", "2022-05-13")
    path = f"/subscriptions/{subscription}/providers/{PROVIDER}/operationStatuses/{op.id}"
    return f"{manager(request).base_url}{path}?{urlencode({'api-version': version})}"


# --- handlers ---------------------------------------------------------------------------------


async def empty_ledger_name(request: web.Request) -> web.StreamResponse:
    """``…/ledgers/``: a request for a ledger without its name (whatever the method)."""
    raise InvalidRequestError(
        f"The ledger name is missing (the path ends with /ledgers/): a ledger name is {NAME_RULE}.",
        code="InvalidResourceName",
    )


async def put_ledger(request: web.Request) -> web.StreamResponse:
    """Create a ledger (201, long-running) or update it (200)."""
    subscription, group, name = _path(request)
    check_name(name)
    body = await json_body(request)
    m = manager(request)
    record, op = m.create_or_update(subscription, group, name, body, request[CALLER])
    if op is None:
        return arm_json(render(record, m.base_url))
    url = _operation_url(request, subscription, op)
    headers = {"Azure-AsyncOperation": url, "Retry-After": RETRY_AFTER_S}
    return arm_json(render(record, m.base_url), status=201, headers=headers)


async def patch_ledger(request: web.Request) -> web.StreamResponse:
    """Update tags or add principals (the ledger type is fixed at creation)."""
    subscription, group, name = _path(request)
    m = manager(request)
    record = m.find(subscription, group, name)
    if record is None:
        raise _not_found(group, name)
    if record.state == FAILED:
        raise ConflictError(f"The ledger {record.name!r} failed to be created; create it again (PUT) or delete it.")
    body = await json_body(request)
    props = body.get("properties")
    merged: dict[str, Any] = {"location": record.location, **body}
    merged["properties"] = {"ledgerType": record.ledger_type, **(props if isinstance(props, dict) else {})}
    updated, _ = m.create_or_update(subscription, group, record.name, merged, request[CALLER])
    return arm_json(render(updated, m.base_url))


async def get_ledger(request: web.Request) -> web.StreamResponse:
    subscription, group, name = _path(request)
    m = manager(request)
    record = m.find(subscription, group, name)
    if record is None:
        raise _not_found(group, name)
    return arm_json(render(record, m.base_url))


async def delete_ledger(request: web.Request) -> web.StreamResponse:
    """Delete a ledger: 202 and a long-running operation; 204 if there is no such ledger."""
    subscription, group, name = _path(request)
    m = manager(request)
    record = m.find(subscription, group, name)
    if record is None:
        return web.Response(status=204)
    op = m.delete(record, request[CALLER])
    url = _operation_url(request, subscription, op)
    headers = {"Azure-AsyncOperation": url, "Location": url, "Retry-After": RETRY_AFTER_S}
    return web.Response(status=202, headers=headers)


async def recover_ledger(request: web.Request) -> web.StreamResponse:
    """Put a ledger whose ledger secrets are lost into recovery (idempotent: a ledger already
    recovering answers how far it is): 200 ``{"name", "status", "threshold", "submitted", "members"}``."""
    subscription, group, name = _path(request)
    m = manager(request)
    record = m.find(subscription, group, name)
    if record is None:
        raise _not_found(group, name)
    status = await m.recover(record, request[CALLER])
    return arm_json({"name": record.name, **status})


def _page(request: web.Request, records: list[LedgerRecord]) -> web.StreamResponse:
    m = manager(request)
    size = m.config.list_page_size
    try:
        skip = int(request.query.get("$skipToken", "0"))
    except ValueError:
        raise InvalidRequestError("$skipToken is not valid.") from None
    ledger_type = _type_filter(request.query.get("$filter"))
    if ledger_type is not None:
        records = [r for r in records if r.ledger_type.lower() == ledger_type.lower()]
    body: dict[str, Any] = {"value": [render(r, m.base_url) for r in records[skip : skip + size]]}
    if skip + size < len(records):
        query = {k: v for k, v in request.query.items() if k != "$skipToken"}
        query["$skipToken"] = str(skip + size)
        body["nextLink"] = f"{m.base_url}{request.path}?{urlencode(query)}"
    return arm_json(body)


def _type_filter(text: str | None) -> str | None:
    """``$filter=ledgerType eq 'Public'``, the one filter the API documents."""
    if text is None:
        return None
    parts = text.split(None, 2)
    if len(parts) == 3 and parts[0] == "ledgerType" and parts[1] == "eq" and parts[2][:1] == parts[2][-1:] == "'":
        return parts[2][1:-1]
    raise InvalidRequestError("$filter supports only ledgerType eq '<Public|Private>'.", code="InvalidFilter")


async def list_by_resource_group(request: web.Request) -> web.StreamResponse:
    info = request.match_info
    records = manager(request).registry.listed(info["subscriptionId"], info["resourceGroupName"])
    return _page(request, records)


async def list_by_subscription(request: web.Request) -> web.StreamResponse:
    return _page(request, manager(request).registry.listed(request.match_info["subscriptionId"]))


async def check_name_availability(request: web.Request) -> web.StreamResponse:
    body = await json_body(request)
    name, kind = body.get("name"), body.get("type", RESOURCE_TYPE)
    if not isinstance(name, str) or not isinstance(kind, str):
        raise InvalidRequestError("name and type must be strings.")
    if kind.lower() != RESOURCE_TYPE.lower():
        raise InvalidRequestError(f"type must be {RESOURCE_TYPE}.")
    if not valid_name(name):
        answer = {"nameAvailable": False, "reason": "Invalid", "message": f"A ledger name is {NAME_RULE}."}
        return arm_json(answer)
    record = manager(request).registry.get(name)
    if record is None:
        return arm_json({"nameAvailable": True})
    message = "The name is in use by another ledger."
    if record.gone:
        message = (
            f"The name belonged to a ledger deleted at {record.deleted_at}; its data is kept until "
            f"{record.purge_after}, and the name is available after that."
        )
    return arm_json({"nameAvailable": False, "reason": "AlreadyExists", "message": message})


async def operation_status(request: web.Request) -> web.StreamResponse:
    op = manager(request).operation(request.match_info["operationId"])
    if op is None:
        raise ApiError(404, "ResourceNotFound", "No such operation (the host remembers its last 1,000 operations).")
    body: dict[str, Any] = {
        "id": request.path,
        "name": op.id,
        "status": op.status,
        "startTime": op.start_time,
    }
    if op.end_time is not None:
        body["endTime"] = op.end_time
    if op.error is not None:
        body["error"] = op.error
    headers = {"Retry-After": RETRY_AFTER_S} if op.end_time is None else None
    return arm_json(body, headers=headers)


_OPERATIONS = [
    ("ledgers/read", "Confidential Ledger", "Read a ledger", "Gets a ledger or lists ledgers."),
    ("ledgers/write", "Confidential Ledger", "Create or update a ledger", "Creates a ledger or updates it."),
    ("ledgers/delete", "Confidential Ledger", "Delete a ledger", "Deletes a ledger."),
    ("ledgers/recover/action", "Confidential Ledger", "Recover a ledger", "Recovers a ledger's lost secrets."),
    ("checkNameAvailability/action", "Confidential Ledger", "Check name availability", "Checks a ledger name."),
    ("operations/read", "Operations", "List operations", "Lists the provider's operations."),
]


async def list_operations(request: web.Request) -> web.StreamResponse:
    return arm_json(
        {
            "value": [
                {
                    "name": f"{PROVIDER}/{name}",
                    "isDataAction": False,
                    "display": {"provider": PROVIDER, "resource": resource, "operation": op, "description": text},
                }
                for name, resource, op, text in _OPERATIONS
            ]
        }
    )
