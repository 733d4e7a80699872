"""What the console shows of one ledger, read with the user's own verifying client.

:class:`LedgerView` wraps a :class:`notarium.client.AsyncClient` (the user's profile: the key stays
in this process) and answers what the pages need: the overview, pages of entries newest first,
an entry with its receipt checked step by step, appends, users, issuers and governance. Listings
of the API are oldest first; newest-first pages are read backwards in windows of transaction ids
sized from what the previous window held, so a page costs a few indexed reads whatever the size of
the ledger.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from cryptography.hazmat.primitives.serialization import Encoding

from notarium.client import ApiError, AsyncClient, Entry, ForkError, User
from notarium.client.operations import API_VERSION
from notarium.console.steps import Verification, verify_steps
from notarium.errors import NotariumError, VerificationError
from notarium.types import TxId, TxStatus

MAX_WINDOW_GROWTH = 16
MAX_PAGE_READS = 40  # a newest-first page gives up (and says so) after this many reads of the API
ROLE_NAMES = ("Administrator", "Contributor", "Reader")


@dataclass(frozen=True)
class Page:
    entries: list[Entry]
    older: int | None  # the seqno to continue below (the next page's ``before``), if there are more
    incomplete: bool = False


@dataclass(frozen=True)
class EntryDetail:
    txid: TxId
    status: TxStatus
    entry: Entry | None
    receipt: dict[str, Any] | None
    verification: Verification | None


class LedgerView:
    """One ledger, as one user sees it."""

    def __init__(self, client: AsyncClient, *, name: str, base: str = "") -> None:
        self.client = client
        self.name = name
        self.base = base  # the console's URL prefix of this ledger's pages ("" or "/ledgers/NAME")
        der = client.service_cert.public_bytes(Encoding.DER)
        self.service_cert_sha256 = hashlib.sha256(der).hexdigest()

    async def close(self) -> None:
        await self.client.aclose()

    # --- raw reads (state the API answers; receipts are verified elsewhere) ----------------------

    async def get_json(self, path: str, params: dict[str, str] | None = None, api: str = API_VERSION) -> Any:
        r = await self.client.http.get(path, params={**(params or {}), "api-version": api})
        return _answer(r.status_code, r.content, "GET", path)

    async def send_json(self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None) -> Any:
        r = await self.client.http.request(
            method, path, params={**(params or {}), "api-version": API_VERSION}, json=body
        )
        return _answer(r.status_code, r.content, method, path)

    # --- overview --------------------------------------------------------------------------------

    async def overview(self) -> dict[str, Any]:
        """Everything the overview shows; parts the user may not read say so instead."""
        identity, quotes, nodes, members, constitution = await asyncio.gather(
            self._try(self.get_json("/ledgerIdentity/current")),
            self._try(self.get_json("/app/enclaveQuotes")),
            self._try(self.get_json("/node/network/nodes")),
            self._try(self.get_json("/gov/service/members")),
            self._try(self.get_json("/gov/service/constitution")),
        )
        out: dict[str, Any] = {
            "endpoint": self.client.endpoint,
            "service_cert_sha256": self.service_cert_sha256,
            "service_cert_pem": self.client.service_cert_pem.decode(),
            "identity": identity,
            "quotes": quotes,
            "nodes": nodes,
            "members": members,
            "constitution": constitution,
        }
        if isinstance(identity, dict) and isinstance(identity.get("ledgerTlsCertificate"), str):
            presented = identity["ledgerTlsCertificate"].strip()
            out["identity_matches"] = self.client.service_cert_pem.decode().strip().startswith(presented) or (
                presented.startswith(self.client.service_cert_pem.decode().strip())
            )
        out["sync"] = await self.sync()
        return out

    async def consortium(self) -> dict[str, Any]:
        """Members, nodes and the constitution (what governance shows beside the proposals)."""
        members, nodes, constitution = await asyncio.gather(
            self._try(self.get_json("/gov/service/members")),
            self._try(self.get_json("/node/network/nodes")),
            self._try(self.get_json("/gov/service/constitution")),
        )
        return {"members": members, "nodes": nodes, "constitution": constitution}

    async def sync(self) -> dict[str, Any]:
        """The ``sync`` check: the newest signed root, accepted only if it extends the trusted one."""
        before = self.client.trusted.root
        try:
            root = await self.client.sync()
        except ForkError as exc:
            return {"ok": False, "kind": exc.kind, "message": str(exc), "trusted": before}
        except (NotariumError, OSError) as exc:
            return {"ok": False, "kind": "error", "message": str(exc), "trusted": before}
        return {
            "ok": True,
            "root": root,
            "previous": before,
            "extended": before is not None and before.tree_size < root.tree_size,
        }

    async def _try(self, call: Any) -> Any:
        try:
            return await call
        except ApiError as exc:
            return {"error": f"{exc.status} {exc.code}: {exc.message}"}
        except (NotariumError, OSError) as exc:
            return {"error": str(exc)}

    # --- entries ---------------------------------------------------------------------------------

    async def collections(self) -> list[str]:
        body = await self.get_json("/app/collections")
        items = body.get("collections") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise VerificationError("the collections answer holds no list")
        return [str(c.get("collectionId")) for c in items if isinstance(c, dict)]

    async def newest(self, collection: str | None) -> Entry | None:
        return await self.client.latest(collection=collection)

    async def page(
        self,
        collection: str | None,
        *,
        size: int,
        before: int | None = None,
        first: TxId | None = None,
        last: TxId | None = None,
        tag: str | None = None,
    ) -> Page:
        """Up to ``size`` committed entries, newest first, with seqno below ``before`` and within
        ``first``..``last``; ``older`` continues below them."""
        if last is None:
            newest = await self.client.latest(collection=collection)
            if newest is None:
                return Page([], None)
            last = newest.txid
        hi = last.seqno if before is None else min(last.seqno, before - 1)
        lo_bound = first.seqno if first is not None else 1
        view = last.view
        found: list[Entry] = []
        window = max(2 * size, 8)
        reads = 0
        while len(found) <= size and hi >= lo_bound:
            reads += 1
            if reads > MAX_PAGE_READS:
                return Page(found[:size], found[size - 1].txid.seqno if len(found) >= size else hi + 1, True)
            lo = max(lo_bound, hi - window + 1)
            entries, more = await self._window(collection, view, lo, hi, tag)
            if more:  # more entries in the window than one page of the API: look closer to the top
                window = max(1, (hi - lo + 1) // 4)
                continue
            found.extend(reversed(entries))
            span = hi - lo + 1
            hi = lo - 1
            missing = size + 1 - len(found)
            if entries:
                window = min(span * MAX_WINDOW_GROWTH, max(8, int(missing * span / len(entries) * 1.5) + 1))
            else:
                window = span * MAX_WINDOW_GROWTH
        if len(found) > size:
            return Page(found[:size], found[size - 1].txid.seqno)
        return Page(found, None)

    async def _window(
        self, collection: str | None, view: int, lo: int, hi: int, tag: str | None
    ) -> tuple[list[Entry], bool]:
        params = {"fromTransactionId": f"{view}.{lo}", "toTransactionId": f"{view}.{hi}"}
        if collection is not None:
            params["collectionId"] = collection
        if tag:
            params["tag"] = tag
        for _ in range(100):
            body = await self.get_json("/app/transactions", params)
            if isinstance(body, dict) and body.get("state") == "Ready":
                break
            await asyncio.sleep(0.05)
        else:
            raise VerificationError("the ledger kept answering Loading")
        raw = body.get("entries")
        if not isinstance(raw, list):
            raise VerificationError("a listing holds no entries list")
        from notarium.client.operations import _entry  # noqa: PLC0415  (the client's own parser of entries)

        return [_entry(e) for e in raw], body.get("nextLink") is not None

    async def detail(self, txid: TxId) -> EntryDetail:
        """An entry (or any transaction) with its receipt verified step by step."""
        status = await self.client.status(txid)
        if status != TxStatus.COMMITTED:
            return EntryDetail(txid, status, None, None, None)
        entry: Entry | None
        try:
            entry = await self.client.get(txid)
        except ApiError as exc:
            if exc.status != 404:
                raise
            entry = None  # a committed transaction that is not an entry (a signature, governance)
        body = await self.client.receipt(txid, insecure_skip_verification=True)
        claims = body.application_claims
        verification = verify_steps(
            body.receipt, self.client.service_cert, application_claims=claims, expected_txid=txid
        )
        if entry is not None and claims:
            _check_claims_match_entry(verification, entry, claims)
        return EntryDetail(txid, status, entry, body.to_json(), verification)

    async def verify_entries(self, txids: list[TxId]) -> dict[str, str]:
        """Each entry's receipt checked with the client's verifier: ``ok`` or why not."""

        async def one(txid: TxId) -> tuple[str, str]:
            try:
                await self.client.receipt(txid)
            except VerificationError as exc:
                return str(txid), f"receipt does not verify: {exc}"
            except (NotariumError, OSError) as exc:
                return str(txid), f"not checked: {exc}"
            return str(txid), "ok"

        return dict(await asyncio.gather(*(one(t) for t in txids)))

    async def append(self, contents: str, collection: str | None, tags: list[str]) -> TxId:
        done = await self.client.append(contents, collection=collection, tags=tags or None, wait=False)
        return done.txid

    async def status(self, txid: TxId) -> TxStatus:
        return await self.client.status(txid)

    # --- users, roles, issuers -------------------------------------------------------------------

    async def users(self) -> list[User]:
        return await self.client.users()

    async def set_roles(self, user_id: str, roles: list[str]) -> User:
        """Give ``user_id`` exactly ``roles``. ``/app/ledgerUsers`` only adds roles (a merge), so a
        role is taken away as the API documents it: the user is deleted and added again."""
        current = next((u for u in await self.client.users() if u.user_id == user_id), None)
        if current is not None and set(current.roles) - set(roles):
            await self.client.remove_user(user_id)
        return await self.client.set_user(user_id, roles)

    async def add_user(self, user_id: str, roles: list[str]) -> User:
        return await self.client.set_user(user_id, roles)

    async def remove_user(self, user_id: str) -> None:
        await self.client.remove_user(user_id)

    async def roles(self) -> list[dict[str, Any]]:
        body = await self.get_json("/app/roles")
        roles = body.get("roles") if isinstance(body, dict) else None
        return [r for r in roles if isinstance(r, dict)] if isinstance(roles, list) else []

    async def issuers(self) -> list[dict[str, Any]]:
        body = await self.get_json("/app/jwtIssuers")
        found = body.get("issuers") if isinstance(body, dict) else None
        return [i for i in found if isinstance(i, dict)] if isinstance(found, list) else []

    # --- governance ------------------------------------------------------------------------------

    async def proposals(self) -> list[dict[str, Any]]:
        body = await self.get_json("/gov/members/proposals")
        found = body.get("value") if isinstance(body, dict) else None
        return [p for p in found if isinstance(p, dict)] if isinstance(found, list) else []

    async def proposal(self, proposal_id: str) -> tuple[Any, Any]:
        path = "/gov/members/proposals/" + quote(proposal_id, safe="")
        return await asyncio.gather(self.get_json(path), self._try(self.get_json(path + "/actions")))


def _check_claims_match_entry(verification: Verification, entry: Entry, claims: list[dict[str, Any]]) -> None:
    """The entry shown must be the one the receipt's claims prove (same contents and collection)."""
    claim = claims[0].get("ledgerEntry") if isinstance(claims[0], dict) else None
    if not isinstance(claim, dict):
        return
    step = next((s for s in verification.steps if s.key == "claims"), None)
    if step is None:
        return
    if claim.get("contents") != entry.contents or claim.get("collectionId") != entry.collection_id:
        step.status = "failed"
        step.detail = "the entry shown is not the one the receipt's application claims prove"
        verification.verified = False


def _answer(status: int, body: bytes, method: str, path: str) -> Any:
    if status >= 400:
        code, message = "HttpError", body[:200].decode(errors="replace")
        try:
            err = json.loads(body).get("error")
            if isinstance(err, dict):
                code, message = str(err.get("code", code)), str(err.get("message", message))
        except (ValueError, AttributeError):
            pass
        raise ApiError(status, code, message, method=method, path=path)
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        raise VerificationError(f"the answer to {method} {path} is not JSON") from None
