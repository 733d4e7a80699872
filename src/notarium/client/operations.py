"""The client's operations, written once as generators (a "sans-I/O" core): each yields the HTTP
calls (and pauses) it needs, receives the answers, and verifies what they say before returning.
:class:`notarium.client.client.Client` and ``AsyncClient`` carry them out with httpx."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

from cryptography import x509

from notarium.client.errors import ClientError, ForkError, NotCommittedError
from notarium.errors import VerificationError
from notarium.types import TxId, TxStatus
from notarium.verify import verify_cose_receipt
from notarium.verify.consistency import SignedRoot, verify_extension, verify_signed_root
from notarium.verify.keys import ec_public_key
from notarium.verify.receipt import ReceiptVerifier

T = TypeVar("T")
API_VERSION = "2022-05-13"
USERS_API_VERSION = "2024-12-09-preview"  # ledgerUsers (several roles)
TXID_HEADER = "x-ms-ccf-transaction-id"
_CE = re.compile(r"^ce:(\d+)\.(\d+):")


# --- the operations' vocabulary ----------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    ok: frozenset[int] = frozenset({200})


@dataclass(frozen=True)
class Pause:
    seconds: float


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            raise VerificationError("the server's answer is not JSON") from None


Op = Generator[Call | Pause, Answer | None, T]


@dataclass(frozen=True)
class Entry:
    txid: TxId
    collection_id: str
    contents: str
    tags: list[str]


@dataclass(frozen=True)
class Appended:
    txid: TxId
    status: TxStatus


@dataclass(frozen=True)
class VerifiedReceipt:
    """A receipt that verified against the pinned service certificate (unless ``verified`` is False)."""

    txid: TxId
    receipt: dict[str, Any]
    application_claims: list[dict[str, Any]] | None
    verified: bool

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"receipt": self.receipt, "state": "Ready", "transactionId": str(self.txid)}
        if self.application_claims is not None:
            body["applicationClaims"] = self.application_claims
        return body


@dataclass(frozen=True)
class User:
    user_id: str
    roles: list[str]


# --- parsing untrusted answers -------------------------------------------------------------------


def _txid(text: object, what: str) -> TxId:
    if not isinstance(text, str):
        raise VerificationError(f"{what} is not a transaction id")
    try:
        return TxId.parse(text)
    except ValueError:
        raise VerificationError(f"{what} {text[:40]!r} is not a transaction id") from None


def _entry(obj: Any) -> Entry:
    if not isinstance(obj, dict):
        raise VerificationError("an entry is not a JSON object")
    contents, collection, tags = obj.get("contents"), obj.get("collectionId"), obj.get("tags")
    if not isinstance(contents, str) or not isinstance(collection, str):
        raise VerificationError("an entry lacks contents or collectionId")
    if tags is not None and not isinstance(tags, str):
        raise VerificationError("an entry's tags are not a string")
    return Entry(_txid(obj.get("transactionId"), "the entry's transactionId"), collection, contents, _tags(tags))


def _tags(text: str | None) -> list[str]:
    return text.split(",") if text else []


def receipt_txid(receipt: dict[str, Any]) -> TxId:
    """The transaction a JSON receipt proves, from its commit evidence (``ce:<view>.<seqno>:…``)."""
    leaf = receipt.get("leafComponents") if isinstance(receipt, dict) else None
    evidence = leaf.get("commitEvidence") if isinstance(leaf, dict) else None
    m = _CE.match(evidence) if isinstance(evidence, str) else None
    if m is None:
        raise VerificationError("the receipt's commit evidence does not name a transaction")
    return TxId(int(m.group(1)), int(m.group(2)))


def check_json_receipt(body: Any, txid: TxId, verifier: ReceiptVerifier) -> VerifiedReceipt:
    """Verify an ACL receipt answer (``{"receipt": ..., "applicationClaims": ...}``) for ``txid``
    against the verifier's (pinned) service certificate."""
    if not isinstance(body, dict) or not isinstance(body.get("receipt"), dict):
        raise VerificationError("the answer holds no receipt")
    claims = body.get("applicationClaims")
    if claims is not None and not isinstance(claims, list):
        raise VerificationError("applicationClaims is not a list")
    verifier.verify_json(body["receipt"], application_claims=claims)
    proven = receipt_txid(body["receipt"])
    if proven != txid:
        raise VerificationError(f"the server sent the receipt of {proven}, not of {txid}")
    return VerifiedReceipt(txid, body["receipt"], claims, verified=True)


# --- the operations ------------------------------------------------------------------------------


def _wait_status(txid: TxId, timeout: float) -> Op[TxStatus]:
    start = time.monotonic()
    delay = 0.005
    while True:
        answer = yield Call("GET", f"/app/transactions/{txid}/status", ok=frozenset({200, 404}))
        if answer is None:
            raise ClientError("no answer")
        if answer.status == 404:
            raise NotCommittedError(str(txid), "Invalid", time.monotonic() - start)
        state = answer.json().get("state")
        if state == TxStatus.COMMITTED:
            return TxStatus.COMMITTED
        if state != TxStatus.PENDING:
            raise NotCommittedError(str(txid), str(state), time.monotonic() - start)
        if time.monotonic() - start > timeout:
            raise NotCommittedError(str(txid), "Pending", time.monotonic() - start)
        yield Pause(delay)
        delay = min(delay * 2, 0.25)


def op_append(
    contents: str, collection: str | None, tags: list[str] | None, wait: bool, timeout: float
) -> Op[Appended]:
    params = {}
    if collection is not None:
        params["collectionId"] = collection
    if tags:
        params["tags"] = ",".join(tags)
    answer = yield Call("POST", "/app/transactions", params=params, json={"contents": contents})
    if answer is None:
        raise ClientError("no answer")
    txid = _txid(answer.headers.get(TXID_HEADER), "the transaction id header")
    if not wait:
        return Appended(txid, TxStatus.PENDING)
    return Appended(txid, (yield from _wait_status(txid, timeout)))


def op_status(txid: TxId) -> Op[TxStatus]:
    answer = yield Call("GET", f"/app/transactions/{txid}/status")
    if answer is None:
        raise ClientError("no answer")
    state = answer.json().get("state")
    try:
        return TxStatus(state)
    except ValueError:
        raise VerificationError(f"unknown transaction state {str(state)[:40]!r}") from None


def op_get(txid: TxId, collection: str | None, timeout: float) -> Op[Entry]:
    params = {"collectionId": collection} if collection is not None else {}
    start = time.monotonic()
    while True:
        answer = yield Call("GET", f"/app/transactions/{txid}", params=params)
        if answer is None:
            raise ClientError("no answer")
        body = answer.json()
        if body.get("state") == "Ready":
            entry = _entry(body.get("entry"))
            if entry.txid != txid:
                raise VerificationError(f"the server sent entry {entry.txid} for {txid}")
            return entry
        if time.monotonic() - start > timeout:
            raise NotCommittedError(str(txid), "Loading", time.monotonic() - start)
        yield Pause(0.02)


def op_latest(collection: str | None) -> Op[Entry | None]:
    """The newest committed entry of a collection (``None`` when it holds none)."""
    params = {"collectionId": collection} if collection is not None else {}
    answer = yield Call("GET", "/app/transactions/current", params=params, ok=frozenset({200, 404}))
    if answer is None:
        raise ClientError("no answer")
    if answer.status == 404:
        return None
    return _entry(answer.json())


def op_page(
    path_and_query: str | None, collection: str | None, first: TxId | None, last: TxId | None, tag: str | None
) -> Op[tuple[list[Entry], str | None]]:
    """One page of a listing; returns its entries and the next page's link."""
    if path_and_query is None:
        params = {k: v for k, v in (("collectionId", collection), ("tag", tag)) if v is not None}
        if first is not None:
            params["fromTransactionId"] = str(first)
        if last is not None:
            params["toTransactionId"] = str(last)
        call = Call("GET", "/app/transactions", params=params)
    else:
        if not path_and_query.startswith("/app/transactions?"):
            raise VerificationError("the server's nextLink points elsewhere")
        call = Call("GET", path_and_query)
    while True:
        answer = yield call
        if answer is None:
            raise ClientError("no answer")
        body = answer.json()
        if body.get("state") == "Ready":
            break
        yield Pause(0.05)
    entries = body.get("entries")
    if not isinstance(entries, list):
        raise VerificationError("a listing holds no entries list")
    link = body.get("nextLink")
    if link is not None and not isinstance(link, str):
        raise VerificationError("nextLink is not a string")
    return [_entry(e) for e in entries], link


def op_receipt(txid: TxId, verifier: ReceiptVerifier, verify: bool, timeout: float) -> Op[VerifiedReceipt]:
    start = time.monotonic()
    while True:
        answer = yield Call("GET", f"/app/transactions/{txid}/receipt")
        if answer is None:
            raise ClientError("no answer")
        body = answer.json()
        if body.get("state") == "Ready":
            break
        if time.monotonic() - start > timeout:
            raise NotCommittedError(str(txid), "Loading", time.monotonic() - start)
        yield Pause(0.02)
    if not verify:
        claims = body.get("applicationClaims")
        return VerifiedReceipt(txid, body.get("receipt"), claims if isinstance(claims, list) else None, False)
    return check_json_receipt(body, txid, verifier)


def op_cose_receipt(txid: TxId, cert: x509.Certificate, verify: bool, timeout: float) -> Op[bytes]:
    start = time.monotonic()
    while True:
        answer = yield Call("GET", f"/app/transactions/{txid}/receipt/cose", ok=frozenset({200, 202}))
        if answer is None:
            raise ClientError("no answer")
        if answer.status == 200:
            break
        if time.monotonic() - start > timeout:
            raise NotCommittedError(str(txid), "Loading", time.monotonic() - start)
        yield Pause(0.02)
    if verify:
        result = verify_cose_receipt(answer.body, ec_public_key(cert, "service certificate"))
        evidence = result.leaves[0].commit_evidence if result.leaves else ""
        m = _CE.match(evidence)
        if m is None or TxId(int(m.group(1)), int(m.group(2))) != txid:
            raise VerificationError(f"the server sent a COSE receipt that does not prove {txid}")
    return answer.body


def op_sync(trusted: SignedRoot | None, cert: x509.Certificate) -> Op[SignedRoot]:
    """The newest signed root, accepted only if it extends ``trusted`` (a consistency proof)."""
    answer = yield Call("GET", "/app/signedRoot")
    if answer is None:
        raise ClientError("no answer")
    latest = SignedRoot.from_json(answer.json())
    verify_signed_root(latest, cert)
    if trusted is None:
        return latest
    if latest.tree_size < trusted.tree_size:
        raise ForkError(
            f"the ledger's newest signed root ({latest.txid}, size {latest.tree_size}) is older than the one "
            f"verified before ({trusted.txid}, size {trusted.tree_size})",
            kind="rollback",
            trusted=trusted,
            presented=latest,
            proof=None,
        )
    if latest.tree_size == trusted.tree_size:
        if latest != trusted:
            raise ForkError(
                f"two different signed roots for tree size {latest.tree_size}",
                kind="fork",
                trusted=trusted,
                presented=latest,
                proof=None,
            )
        return trusted
    answer = yield Call(
        "GET",
        "/app/consistency",
        params={"fromTransactionId": str(trusted.txid), "toTransactionId": str(latest.txid)},
        ok=frozenset({200, 400, 404}),
    )
    if answer is None:
        raise ClientError("no answer")
    if answer.status != 200:
        raise ForkError(
            f"the ledger cannot prove that it extends {trusted.txid} ({answer.status}): it no longer has that history",
            kind="fork",
            trusted=trusted,
            presented=latest,
            proof=None,
        )
    body = answer.json()
    if not isinstance(body, dict) or not isinstance(body.get("proof"), list):
        raise VerificationError("the consistency answer holds no proof")
    try:
        proof = [bytes.fromhex(p) for p in body["proof"]]
    except (TypeError, ValueError):
        raise VerificationError("the consistency proof is not a list of hex strings") from None
    old, new = SignedRoot.from_json(body.get("from")), SignedRoot.from_json(body.get("to"))
    if new != latest:
        raise VerificationError("the consistency proof is not for the newest signed root")
    if old != trusted:
        verify_signed_root(old, cert)
        raise ForkError(
            f"the ledger presents a different signed root for {trusted.txid}",
            kind="fork",
            trusted=trusted,
            presented=old,
            proof=proof,
        )
    try:
        verify_extension(trusted, latest, proof, cert)
    except VerificationError as exc:
        raise ForkError(
            str(exc), kind=exc.check or "consistency", trusted=trusted, presented=latest, proof=proof
        ) from exc
    return latest


# --- ledger users ---------------------------------------------------------------------------------


def _user_path(user_id: str) -> str:
    """The path of a user: any id (``auth0|…``, ``a/b``, …) travels percent-encoded; colons stay."""
    return "/app/ledgerUsers/" + quote(user_id, safe=":")


def _set_user_call(user_id: str, roles: list[str], issuer: str | None = None) -> Call:
    return Call(
        "PATCH",
        _user_path(user_id),
        params={"issuer": issuer} if issuer is not None else {},
        json={"assignedRoles": roles},
        headers={"Content-Type": "application/merge-patch+json"},
    )


def _op_set_user(user_id: str, roles: list[str], issuer: str | None) -> Op[Any]:
    """PATCH the user (the answer shows only the roles given), then read all its roles."""
    yield _set_user_call(user_id, roles, issuer)
    answer = yield Call("GET", _user_path(user_id), params={"issuer": issuer} if issuer is not None else {})
    if answer is None:
        raise ClientError("no answer")
    return answer.json()


def _remove_user_call(user_id: str, issuer: str | None = None) -> Call:
    params = {"issuer": issuer} if issuer is not None else {}
    return Call("DELETE", _user_path(user_id), params=params, ok=frozenset({204}))


def _op_json(call: Call) -> Op[Any]:
    answer = yield call
    if answer is None:
        raise ClientError("no answer")
    return answer.json() if answer.body else None


def _users(body: Any) -> list[User]:
    users = body.get("ledgerUsers") if isinstance(body, dict) else None
    if not isinstance(users, list):
        raise VerificationError("the answer holds no ledgerUsers list")
    out = []
    for u in users:
        if (
            not isinstance(u, dict)
            or not isinstance(u.get("userId"), str)
            or not isinstance(u.get("assignedRoles"), list)
        ):
            raise VerificationError("a ledger user is malformed")
        out.append(User(u["userId"], [str(r) for r in u["assignedRoles"]]))
    return out


def _issuers(body: Any) -> list[dict[str, Any]]:
    found = body.get("issuers") if isinstance(body, dict) else None
    if not isinstance(found, list) or not all(isinstance(i, dict) and isinstance(i.get("issuer"), str) for i in found):
        raise VerificationError("the answer holds no list of issuers")
    return found


def _as_txid(value: TxId | str) -> TxId:
    if isinstance(value, TxId):
        return value
    try:
        return TxId.parse(value)
    except ValueError:
        raise ClientError(f"{value[:40]!r} is not a transaction id (<view>.<seqno>)") from None
