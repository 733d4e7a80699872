"""The pages of one ledger: overview, entries, an entry and its receipt, verify, append, users,
governance. Mounted at ``/`` (``--profile``) or at ``/ledgers/{ledger}/`` (``--host-dir``)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from cryptography import x509

from notarium.client import ApiError
from notarium.console.app import PageError, form, render, upload
from notarium.console.ledger import ROLE_NAMES, LedgerView
from notarium.console.steps import verify_steps
from notarium.errors import VerificationError
from notarium.types import TxId, TxStatus

PAGE_SIZE = 25
MAX_PAGE_SIZE = 200
MAX_CONTENTS_PREVIEW = 200
Resolver = Callable[[web.Request], Awaitable[LedgerView]]
RESOLVER: web.AppKey[Resolver] = web.AppKey("ledger_resolver", object)  # type: ignore[arg-type]


async def ledger_of(request: web.Request) -> LedgerView:
    return await request.app[RESOLVER](request)


def register(app: web.Application, prefix: str, resolver: Resolver) -> None:
    app[RESOLVER] = resolver
    r = app.router
    r.add_get(prefix + "/", overview)
    r.add_get(prefix + "/entries", entries)
    r.add_get(prefix + "/entries/{txid}", entry)
    r.add_get(prefix + "/entries/{txid}/receipt.json", receipt_json)
    r.add_get(prefix + "/entries/{txid}/status", entry_status)
    r.add_get(prefix + "/entries/{txid}/badge", badge)
    r.add_get(prefix + "/verify", verify_form)
    r.add_post(prefix + "/verify", verify_post)
    r.add_get(prefix + "/append", append_form)
    r.add_post(prefix + "/append", append_post)
    r.add_get(prefix + "/users", users)
    r.add_post(prefix + "/users/add", user_add)
    r.add_post(prefix + "/users/roles", user_roles)
    r.add_post(prefix + "/users/remove", user_remove)
    r.add_get(prefix + "/governance", governance)
    r.add_get(prefix + "/governance/proposals/{proposal}", proposal)


def _page(request: web.Request, template: str, view: LedgerView, **values: Any) -> web.Response:
    return render(request, template, base=view.base, ledger_name=view.name, **values)


def _txid(text: str | None, what: str) -> TxId | None:
    if not text:
        return None
    try:
        return TxId.parse(text.strip())
    except ValueError:
        raise PageError(400, "InvalidTransactionId", f"{what} must be a transaction id such as 2.15.") from None


def _path_txid(request: web.Request) -> TxId:
    txid = _txid(request.match_info["txid"], "The transaction id")
    if txid is None:
        raise PageError(404, "InvalidTransactionId", "No transaction id.")
    return txid


# --- overview --------------------------------------------------------------------------------------


async def overview(request: web.Request) -> web.StreamResponse:
    view = await ledger_of(request)
    data = await view.overview()
    return _page(request, "overview.html", view, o=data, summary=_constitution_summary(data.get("constitution")))


def _constitution_summary(c: Any) -> list[str]:
    if not isinstance(c, dict) or "error" in c:
        return []
    lines = []
    default = c.get("default")
    if isinstance(default, dict):
        lines.append(f"default approval: {default.get('approval')}")
    actions = c.get("actions")
    if isinstance(actions, dict):
        for name, rule in sorted(actions.items()):
            approval = rule.get("approval") if isinstance(rule, dict) else rule
            lines.append(f"{name}: {approval}")
    if "veto" in c:
        lines.append("members may veto" if c.get("veto") else "no veto")
    if c.get("format"):
        lines.append(f"format {c.get('format')}")
    return lines


# --- entries ---------------------------------------------------------------------------------------


def _int(text: str | None, what: str, lo: int, hi: int) -> int | None:
    if not text:
        return None
    if not text.isdigit() or not lo <= int(text) <= hi:
        raise PageError(400, "InvalidQueryParameterValue", f"{what} must be a number from {lo} to {hi}.")
    return int(text)


async def entries(request: web.Request) -> web.StreamResponse:
    view = await ledger_of(request)
    q = request.query
    collection = q.get("collection") or None
    tag = q.get("tag") or None
    first, last = _txid(q.get("from"), "From"), _txid(q.get("to"), "To")
    if first is not None and last is not None and first.seqno > last.seqno:
        raise PageError(400, "InvalidQueryParameterValue", "From must not be after To.")
    before = _int(q.get("before"), "before", 1, 1 << 62)
    size = _int(q.get("size"), "size", 1, MAX_PAGE_SIZE) or PAGE_SIZE
    collections = await view.collections()
    page = await view.page(collection, size=size, before=before, first=first, last=last, tag=tag)
    rows = [
        {
            "txid": str(e.txid),
            "collection": e.collection_id,
            "preview": e.contents[:MAX_CONTENTS_PREVIEW],
            "cut": len(e.contents) > MAX_CONTENTS_PREVIEW,
            "tags": e.tags,
            "digest": hashlib.sha256(e.contents.encode("utf-8", "surrogatepass")).hexdigest(),
        }
        for e in page.entries
    ]
    params = (("collection", collection), ("tag", tag), ("from", q.get("from")), ("to", q.get("to")))
    keep = {k: v for k, v in params if v}
    if size != PAGE_SIZE:
        keep["size"] = str(size)
    return _page(
        request,
        "entries.html",
        view,
        rows=rows,
        collections=collections,
        collection=collection or "",
        tag=tag or "",
        first=q.get("from", ""),
        last=q.get("to", ""),
        older={**keep, "before": str(page.older)} if page.older is not None else None,
        newest=keep if before is not None else None,
        incomplete=page.incomplete,
    )


async def entry(request: web.Request) -> web.StreamResponse:
    view = await ledger_of(request)
    detail = await view.detail(_path_txid(request))
    receipt_text = json.dumps(detail.receipt, indent=2) if detail.receipt is not None else None
    return _page(request, "entry.html", view, d=detail, receipt_text=receipt_text, v=detail.verification)


async def receipt_json(request: web.Request) -> web.StreamResponse:
    view = await ledger_of(request)
    txid = _path_txid(request)
    r = await view.client.receipt(txid)  # verified before it is handed out
    return web.Response(
        text=json.dumps(r.to_json(), indent=2),
        content_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="receipt-{txid}.json"'},
    )


async def entry_status(request: web.Request) -> web.StreamResponse:
    view = await ledger_of(request)
    txid = _path_txid(request)
    status = await view.status(txid)
    return _page(request, "status.html", view, txid=str(txid), status=status.value, final=status != TxStatus.PENDING)


async def badge(request: web.Request) -> web.StreamResponse:
    """One row's check: the receipt verifies and its claims prove the contents the row shows."""
    view = await ledger_of(request)
    txid = _path_txid(request)
    shown = request.query.get("h", "")
    try:
        r = await view.client.receipt(txid)
        claims = r.application_claims or []
        entry = claims[0].get("ledgerEntry") if claims and isinstance(claims[0], dict) else None
        contents = entry.get("contents") if isinstance(entry, dict) else None
        if not isinstance(contents, str):
            raise VerificationError("the receipt carries no entry claim")
        if hashlib.sha256(contents.encode("utf-8", "surrogatepass")).hexdigest() != shown:
            raise VerificationError("the contents shown are not the ones the receipt proves")
        ok, message = True, "receipt verified"
    except VerificationError as exc:
        ok, message = False, f"NOT verified: {exc}"
    return _page(request, "badge.html", view, ok=ok, message=message)


# --- verify ----------------------------------------------------------------------------------------


async def verify_form(request: web.Request) -> web.StreamResponse:
    view = await ledger_of(request)
    return _page(request, "verify.html", view, v=None, receipt_text="", claims_text="", cert_text="", error=None)


def _parse_receipt(text: str) -> tuple[Any, Any]:
    """The receipt and claims from what was pasted: a whole answer or the inner receipt."""
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):
        raise PageError(400, "InvalidInput", "The receipt is not JSON.") from None
    if isinstance(body, dict) and isinstance(body.get("receipt"), dict):
        return body["receipt"], body.get("applicationClaims")
    return body, None


async def verify_post(request: web.Request) -> web.StreamResponse:
    view = await ledger_of(request)
    values, files = await upload(request)
    text = values.get("receipt", "").strip()
    if files.get("receipt_file"):
        text = files["receipt_file"].decode("utf-8", "replace").strip()
    cert_text = values.get("service_cert", "").strip()
    claims_text = values.get("claims", "").strip()
    if not text:
        raise PageError(400, "InvalidInput", "Paste a receipt, or choose a receipt file.")
    receipt, claims = _parse_receipt(text)
    if claims_text:
        try:
            claims = json.loads(claims_text)
        except ValueError:
            raise PageError(400, "InvalidInput", "The application claims are not JSON.") from None
    cert = view.client.service_cert
    if cert_text:
        try:
            cert = x509.load_pem_x509_certificate(cert_text.encode())
        except ValueError:
            raise PageError(400, "InvalidInput", "The service certificate is not a PEM certificate.") from None
    result = verify_steps(receipt, cert, application_claims=claims if isinstance(claims, list) else None)
    return _page(
        request,
        "verify.html",
        view,
        v=result,
        receipt_text=text,
        claims_text=claims_text,
        cert_text=cert_text,
        error=None,
    )


# --- append ----------------------------------------------------------------------------------------


async def append_form(request: web.Request) -> web.StreamResponse:
    view = await ledger_of(request)
    txid = _txid(request.query.get("txid"), "txid")
    return _page(request, "append.html", view, txid=str(txid) if txid else None, collections=await view.collections())


async def append_post(request: web.Request) -> web.StreamResponse:
    view = await ledger_of(request)
    values = await form(request)
    contents = values.get("contents", "")
    if not contents:
        raise PageError(400, "InvalidInput", "The entry is empty: write something to append.")
    collection = values.get("collection", "").strip() or None
    tags = [t.strip() for t in values.get("tags", "").split(",") if t.strip()]
    txid = await view.append(contents, collection, tags)
    if request.headers.get("HX-Request"):
        return _page(request, "status.html", view, txid=str(txid), status="Pending", final=False)
    raise web.HTTPSeeOther(f"{view.base}/append?txid={txid}")


# --- users -----------------------------------------------------------------------------------------


async def users(request: web.Request) -> web.StreamResponse:
    view = await ledger_of(request)
    listed: list[Any] | None = None
    issuers: list[dict[str, Any]] | None = None
    refused = []
    try:
        listed = sorted(await view.users(), key=lambda u: u.user_id)
    except ApiError as exc:
        refused.append(f"users: {exc.status} {exc.code}: {exc.message}")
    try:
        issuers = await view.issuers()
    except ApiError as exc:
        refused.append(f"token issuers: {exc.status} {exc.code}: {exc.message}")
    roles = [str(r.get("role_name")) for r in await _roles(view)] or list(ROLE_NAMES)
    return _page(request, "users.html", view, users=listed, issuers=issuers, refused=refused, roles=roles)


async def _roles(view: LedgerView) -> list[dict[str, Any]]:
    try:
        return await view.roles()
    except ApiError:
        return []


def _user_and_roles(values: dict[str, str], data: Any) -> tuple[str, list[str]]:
    user_id = values.get("user_id", "").strip()
    if not user_id:
        raise PageError(400, "InvalidInput", "Give the user's id (a certificate fingerprint or an object id).")
    roles = [r for r in data.getall("roles", []) if isinstance(r, str)]
    return user_id, roles


async def user_add(request: web.Request) -> web.StreamResponse:
    view = await ledger_of(request)
    user_id, roles = _user_and_roles(await form(request), await request.post())
    if not roles:
        raise PageError(400, "InvalidInput", "Choose at least one role.")
    await view.add_user(user_id, roles)
    raise web.HTTPSeeOther(f"{view.base}/users")


async def user_roles(request: web.Request) -> web.StreamResponse:
    view = await ledger_of(request)
    user_id, roles = _user_and_roles(await form(request), await request.post())
    if not roles:
        raise PageError(400, "InvalidInput", "A user needs at least one role: remove the user instead.")
    await view.set_roles(user_id, roles)
    raise web.HTTPSeeOther(f"{view.base}/users")


async def user_remove(request: web.Request) -> web.StreamResponse:
    view = await ledger_of(request)
    values = await form(request)
    user_id = values.get("user_id", "").strip()
    if not user_id:
        raise PageError(400, "InvalidInput", "Give the user's id.")
    await view.remove_user(user_id)
    raise web.HTTPSeeOther(f"{view.base}/users")


# --- governance ------------------------------------------------------------------------------------


async def governance(request: web.Request) -> web.StreamResponse:
    view = await ledger_of(request)
    data = await view.consortium()
    proposals = await view.proposals()
    return _page(
        request,
        "governance.html",
        view,
        proposals=proposals,
        o=data,
        summary=_constitution_summary(data.get("constitution")),
        constitution_text=json.dumps(data.get("constitution"), indent=2),
    )


async def proposal(request: web.Request) -> web.StreamResponse:
    view = await ledger_of(request)
    info, actions = await view.proposal(request.match_info["proposal"])
    return _page(
        request,
        "proposal.html",
        view,
        p=info if isinstance(info, dict) else {},
        actions_text=json.dumps(actions, indent=2),
    )
