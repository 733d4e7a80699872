"""Ledger entries: append, read, list, status, receipts (acl-rest-api.md §3.1–3.7)."""

from __future__ import annotations

from aiohttp import web

from notarium.auth.rbac import Action
from notarium.ledger import DEFAULT_COLLECTION, LedgerEntry
from notarium.server.context import ServerContext
from notarium.server.errors import ApiError, bad_input, not_found
from notarium.server.handlers import TXID_HEADER, context, json_response, requires
from notarium.server.routes.common import json_object, next_link, path_txid, query, query_txid
from notarium.types import TxId, TxStatus

COSE_CONTENT_TYPE = "application/cose"


PAGE_BYTES = 4 << 20  # a listing page's contents, at most (about): clients' memory stays bounded


def register(router: web.UrlDispatcher) -> None:
    router.add_post("/app/transactions", append)
    router.add_get("/app/transactions", list_entries)
    router.add_get("/app/transactions/current", current)  # before /{transactionId}
    router.add_get("/app/transactions/{transactionId}", get_entry)
    router.add_get("/app/transactions/{transactionId}/status", status)
    router.add_get("/app/transactions/{transactionId}/receipt", receipt)
    router.add_get("/app/transactions/{transactionId}/receipt/cose", cose_receipt)
    router.add_get("/app/collections", collections)


def _entry_json(e: LedgerEntry) -> dict[str, object]:
    body: dict[str, object] = {"collectionId": e.collection_id, "contents": e.contents, "transactionId": str(e.txid)}
    if e.tags is not None:
        body["tags"] = e.tags
    return body


def _collection(request: web.Request, ctx: ServerContext | None = None) -> str:
    collection = query(request).get("collectionId", DEFAULT_COLLECTION)
    limit = (ctx or context(request)).config.max_collection_id_bytes
    if not collection:
        raise bad_input("collectionId must not be empty.")
    size = len(collection.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise ApiError(400, "CollectionIdTooLong", f"Collection id of {size} bytes exceeds the limit of {limit} bytes.")
    return collection


def _tags(request: web.Request, ctx: ServerContext) -> list[str]:
    text = query(request).get("tags")
    if text is None:
        return []
    tags = text.split(",")
    limit = ctx.config.max_tag_bytes
    for tag in tags:
        if not tag or len(tag.encode()) > limit:
            raise bad_input(f"tags must be a comma-separated list of non-empty tags of at most {limit} bytes.")
    return list(dict.fromkeys(tags))


_NOT_UNICODE = "Entry contents and collection ids must be valid Unicode text."


@requires(Action.TRANSACTIONS_WRITE)
async def append(request: web.Request) -> web.StreamResponse:
    """Append an entry; answers at once with its transaction id (Pending until committed)."""
    ctx = context(request)
    config = ctx.config
    collection = _collection(request, ctx)
    tags = _tags(request, ctx)
    body = await json_object(request)
    contents = body.get("contents")
    if not isinstance(contents, str):
        raise bad_input("At #/contents: Expected string." if "contents" in body else "At #/: Missing contents.")
    if len(body) > 1:  # hooks are the only other members ACL knows
        for hooks in ("preHooks", "postHooks"):
            if hooks in body and not isinstance(body[hooks], list):
                raise bad_input(f"At #/{hooks}: Expected array.")
            if body.get(hooks):
                raise ApiError(
                    501, "NotImplemented", "Hooks run user-defined functions, which this ledger does not support."
                )
    size = len(contents.encode("utf-8", "surrogatepass"))
    if size > config.max_entry_bytes:
        raise ApiError(
            400,
            "EntrySizeCapacityExceeded",
            f"Entry contents of {size} bytes exceed the limit of {config.max_entry_bytes} bytes.",
        )
    if size != len(contents) and not _is_unicode(contents):  # only non-ASCII text can hold a lone surrogate
        raise bad_input(_NOT_UNICODE)
    if not collection.isascii() and not _is_unicode(collection):
        raise bad_input(_NOT_UNICODE)
    is_new = collection not in ctx.collections and collection != DEFAULT_COLLECTION
    if is_new and len(ctx.collections - {DEFAULT_COLLECTION}) >= config.max_collections:
        raise ApiError(400, "CollectionCapacityExceeded", f"The ledger holds {config.max_collections} collections.")
    new_tags = [t for t in tags if t not in ctx.tags] if tags else tags
    if new_tags and len(ctx.tags) + len(new_tags) > config.max_tags:
        raise ApiError(400, "TagCapacityExceeded", f"The ledger holds {config.max_tags} tags.")
    # counted before the append is awaited, so that concurrent appends cannot overshoot the limits
    ctx.collections.add(collection)
    if new_tags:
        ctx.tags.update(new_tags)
    txid = await ctx.ledger.append_entry(contents, collection, ",".join(tags) if tags else None)
    return json_response({"collectionId": collection}, headers={TXID_HEADER: str(txid)})


def _is_unicode(text: str) -> bool:
    """Whether ``text`` is valid Unicode (no lone surrogates), i.e. encodes as UTF-8."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _not_issued(txid: TxId, state: TxStatus) -> ApiError:
    """CCF's Unknown and Invalid are ACL's 404 InvalidTransactionId (the SDK stops polling on it)."""
    return ApiError(404, "InvalidTransactionId", f"Transaction {txid} does not exist ({state.value}).")


async def _issued(request: web.Request) -> tuple[TxId, TxStatus]:
    """The path's transaction id and its status, which is Pending or Committed (404 otherwise)."""
    txid = path_txid(request)
    state = await context(request).ledger.status(txid)
    if state in (TxStatus.UNKNOWN, TxStatus.INVALID):
        raise _not_issued(txid, state)
    return txid, state


async def _committed_entry(request: web.Request, txid: TxId) -> LedgerEntry | None:
    status, entry = await context(request).ledger.lookup_entry(txid)
    if status in (TxStatus.UNKNOWN, TxStatus.INVALID):
        raise _not_issued(txid, status)
    if status == TxStatus.PENDING:
        return None
    if entry is None:
        raise not_found(f"Transaction {txid} is not a ledger entry.")
    return entry


@requires(Action.TRANSACTIONS_READ)
async def get_entry(request: web.Request) -> web.StreamResponse:
    txid = path_txid(request)
    collection = _collection(request) if "collectionId" in query(request) else None
    entry = await _committed_entry(request, txid)
    if entry is None:
        return json_response({"state": "Loading"})
    if collection is not None and entry.collection_id != collection:
        raise not_found(f"Transaction {txid} is not in collection {collection!r}.")
    return json_response({"state": "Ready", "entry": _entry_json(entry)})


@requires(Action.TRANSACTIONS_READ)
async def current(request: web.Request) -> web.StreamResponse:
    collection = _collection(request)
    entry = await context(request).ledger.latest_entry(collection)
    if entry is None:
        raise not_found(f"Collection {collection!r} holds no committed entry.")
    return json_response(_entry_json(entry))


@requires(Action.TRANSACTIONS_READ)
async def status(request: web.Request) -> web.StreamResponse:
    txid, state = await _issued(request)
    return json_response({"state": state.value, "transactionId": str(txid)})


@requires(Action.TRANSACTIONS_READ)
async def receipt(request: web.Request) -> web.StreamResponse:
    txid, state = await _issued(request)
    ledger = context(request).ledger
    r = await ledger.receipt(txid) if state == TxStatus.COMMITTED else None
    if r is None:
        return json_response({"receipt": None, "state": "Loading", "transactionId": str(txid)})
    body: dict[str, object] = {"receipt": r.receipt, "state": "Ready", "transactionId": str(txid)}
    if r.application_claims is not None:
        body["applicationClaims"] = r.application_claims
    return json_response(body)


@requires(Action.TRANSACTIONS_READ)
async def cose_receipt(request: web.Request) -> web.StreamResponse:
    """notarium's own: the RFC 9942 COSE receipt (CCF profile) of a committed transaction."""
    txid, state = await _issued(request)
    ledger = context(request).ledger
    data = await ledger.cose_receipt(txid) if state == TxStatus.COMMITTED else None
    if data is None:
        return json_response({"state": "Loading", "transactionId": str(txid)}, status=202, headers={"Retry-After": "1"})
    return web.Response(body=data, content_type=COSE_CONTENT_TYPE)


@requires(Action.TRANSACTIONS_READ)
async def list_entries(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    collection = _collection(request)
    first = query_txid(request, "fromTransactionId")
    last = query_txid(request, "toTransactionId")
    tag = query(request).get("tag")
    committed = ctx.ledger.committed
    upper = committed if last is None or last.seqno > committed.seqno else last
    lower = first.seqno if first is not None else 1
    page = ctx.config.page_size
    found = await ctx.ledger.entries(collection, lower, upper.seqno, limit=page + 1, tag=tag, max_bytes=PAGE_BYTES)
    size = 0
    for i, e in enumerate(found[:page]):  # a page also ends at PAGE_BYTES of contents (at least one entry)
        size += len(e.contents)
        if size > PAGE_BYTES and i > 0:
            page = i
            break
    body: dict[str, object] = {"state": "Ready", "entries": [_entry_json(e) for e in found[:page]]}
    if len(found) > page:
        params = {
            "fromTransactionId": str(found[page].txid),
            "toTransactionId": str(upper),
            "collectionId": collection,
        }
        if tag is not None:
            params["tag"] = tag
        params["api-version"] = request.query.get("api-version", "2022-05-13")
        body["nextLink"] = next_link("/app/transactions", params)
    return json_response(body)


@requires(Action.TRANSACTIONS_READ)
async def collections(request: web.Request) -> web.StreamResponse:
    names = await context(request).ledger.collections()
    return json_response({"collections": [{"collectionId": c} for c in names]})
