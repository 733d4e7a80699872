"""Signed roots and consistency proofs (notarium's own; docs/api.md "Consistency proofs").

A client keeps a signed root; later it asks for the proof that the ledger's newest signed root
extends it, and checks both with :func:`notarium.verify.verify_extension` against the service
certificate: a fork or a rollback of the ledger cannot pass.
"""

from __future__ import annotations

from aiohttp import web

from notarium.auth.rbac import Action
from notarium.errors import LedgerError
from notarium.server.errors import ApiError, not_found
from notarium.server.handlers import context, json_response, requires
from notarium.server.routes.common import query_txid
from notarium.types import TxId, TxStatus
from notarium.verify.consistency import proof_to_json


def register(router: web.UrlDispatcher) -> None:
    router.add_get("/app/signedRoot", signed_root)
    router.add_get("/app/consistency", consistency)


@requires(Action.TRANSACTIONS_READ)
async def signed_root(request: web.Request) -> web.StreamResponse:
    """The signed root of the newest committed signature transaction."""
    try:
        root = await context(request).ledger.signed_root(None)
    except LedgerError as exc:  # no signature yet: a ledger always has one once created
        raise not_found(str(exc)) from None
    return json_response(root.to_json())


async def _refusal(request: web.Request, exc: LedgerError, txids: list[TxId]) -> ApiError:
    """The 4xx for a refused proof: 404 for a TxId that was never committed, 400 otherwise."""
    ledger = context(request).ledger
    for txid in txids:
        status = await ledger.status(txid)
        if status in (TxStatus.UNKNOWN, TxStatus.INVALID):
            return ApiError(404, "InvalidTransactionId", f"Transaction {txid} does not exist ({status.value}).")
    return ApiError(400, "InvalidQueryParameterValue", f"{str(exc)[:1].upper()}{str(exc)[1:]}.")


@requires(Action.TRANSACTIONS_READ)
async def consistency(request: web.Request) -> web.StreamResponse:
    """The signed roots at ``fromTransactionId`` and ``toTransactionId`` (default: the newest) and the
    consistency proof between them."""
    first = query_txid(request, "fromTransactionId")
    if first is None:
        raise ApiError(
            400,
            "InvalidQueryParameterValue",
            "fromTransactionId is required: the transaction id of a signature transaction whose signed root you hold.",
        )
    second = query_txid(request, "toTransactionId")
    try:
        old, new, proof = await context(request).ledger.consistency(first, second)
    except LedgerError as exc:
        raise await _refusal(request, exc, [t for t in (first, second) if t is not None]) from None
    return json_response({"from": old.to_json(), "to": new.to_json(), "proof": proof_to_json(proof)})
