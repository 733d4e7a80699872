"""Parsing helpers shared by the handlers: every malformed input is a clear 4xx."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, urlencode

from aiohttp import web

from notarium.server.errors import ApiError, bad_input
from notarium.types import TxId


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object (``InvalidInput`` otherwise)."""
    body = await json_value(request)
    if not isinstance(body, dict):
        found = json.dumps(body)[:60]
        raise bad_input(f"At #/: Expected object, found: {found}")
    return body


async def json_value(request: web.Request) -> Any:
    """The request body as any JSON value (``InvalidInput`` if it is empty or not JSON)."""
    payload = request.content
    try:
        # a small body has usually arrived whole with its headers: take it without a read loop
        raw = payload.read_nowait() if payload.is_eof() else await request.read()
    except web.HTTPRequestEntityTooLarge:
        raw = None
    if raw is None or len(raw) > request.client_max_size:
        raise ApiError(413, "RequestTooLarge", "The request body is larger than this server accepts.")
    if not raw:
        raise bad_input("At #/: Expected object, found an empty body.")
    try:
        # JSON bodies are UTF-8 (RFC 8259 §8.1); decoding first skips json.loads' encoding sniffing
        body = _DECODER.decode(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        raise bad_input("The request body is not valid JSON.") from None
    return body


_DECODER = json.JSONDecoder()


_QUERY: web.RequestKey[dict[str, str]] = web.RequestKey("query", dict)


def query(request: web.Request) -> dict[str, str]:
    """The query parameters, decoded strictly: invalid percent-encoded UTF-8 is a 400, not U+FFFD."""
    parsed = request.get(_QUERY)
    if parsed is None:
        raw = request.rel_url.raw_query_string
        if "%" not in raw and "+" not in raw:  # nothing encoded: aiohttp's own (fast) parse is exact
            parsed = dict(request.query)
        else:
            try:
                parsed = dict(parse_qsl(raw, keep_blank_values=True, errors="strict"))
            except UnicodeDecodeError:
                raise ApiError(400, "InvalidQueryParameterValue", "The query string is not valid UTF-8.") from None
        request[_QUERY] = parsed
    return parsed


def path_txid(request: web.Request) -> TxId:
    """The ``{transactionId}`` of the path; malformed ids are 404 ``InvalidTransactionId`` as in ACL."""
    text = request.match_info["transactionId"]
    try:
        return TxId.parse(text)
    except ValueError:
        raise ApiError(
            404, "InvalidTransactionId", f"{text[:40]!r} is not a transaction id (<view>.<seqno>)."
        ) from None


def query_txid(request: web.Request, name: str) -> TxId | None:
    text = query(request).get(name)
    if text is None:
        return None
    try:
        return TxId.parse(text)
    except ValueError:
        raise ApiError(
            400, "InvalidQueryParameterValue", f"{name} {text[:40]!r} is not a transaction id (<view>.<seqno>)."
        ) from None


def next_link(path: str, params: dict[str, str]) -> str:
    """A relative continuation link; the SDK re-sends these parameters plus its api-version."""
    return f"{path}?{urlencode(params)}"


def path_id(name: str, *actions: str) -> str:
    """``{name}`` in a route's path: one path segment, but not one ending in ``:action`` for any of
    ``actions``. CCF names actions ``{id}:action`` (``/gov/members/proposals/{proposalId}:withdraw``)
    beside ``{id}`` itself: excluded here, such a path is routed to the action's route only, so that
    another method there is 405 naming the action's method, not the ``{id}`` route's."""
    return "{" + name + ":[^{}/]+" + "".join(f"(?<!:{action})" for action in actions) + "}"
