"""The verifying client, synchronous (:class:`Client`) and asynchronous (:class:`AsyncClient`).

Both run the same operations, written once as generators that yield the HTTP calls (and pauses)
they need and receive the answers (a "sans-I/O" core); the two classes only carry them out with
httpx. Nothing the server says is trusted:

- TLS trusts the pinned service certificate only (never the system's CA bundle);
- every receipt is verified against that certificate, and must be the receipt of the transaction
  asked for, unless the caller passes ``insecure_skip_verification=True``;
- :meth:`Client.sync` keeps the last verified signed root (in memory, and in ``state_file`` if
  given) and accepts a newer one only with a valid consistency proof; a fork or rollback raises
  :class:`ForkError` carrying both signed roots and the proof.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import ssl
import time
from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from notarium.client.errors import ApiError, ClientError, ForkError, NotCommittedError, UnreachableError
from notarium.client.profile import Profile
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


# --- state: the last verified signed root --------------------------------------------------------


class TrustedRoot:
    """The last verified signed root, bound to one service certificate; optionally in a file."""

    def __init__(self, cert: x509.Certificate, path: Path | None) -> None:
        self._cert = cert
        self._path = path
        self._fingerprint = hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()
        self.root: SignedRoot | None = None
        if path is not None and path.exists():
            self.root = self._load(path)

    def _load(self, path: Path) -> SignedRoot:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ClientError(f"cannot read the trusted-root file {path}: {exc}") from None
        if not isinstance(data, dict) or data.get("serviceCertificateSha256") != self._fingerprint:
            raise ClientError(
                f"the trusted-root file {path} belongs to another ledger (another service certificate); "
                "use a state file per ledger"
            )
        root = SignedRoot.from_json(data.get("trusted"))
        verify_signed_root(root, self._cert)
        return root

    def accept(self, root: SignedRoot) -> None:
        self.root = root
        if self._path is not None:
            tmp = self._path.with_name(self._path.name + ".tmp")
            body = {"serviceCertificateSha256": self._fingerprint, "trusted": root.to_json()}
            tmp.write_text(json.dumps(body, indent=2) + "\n")
            tmp.replace(self._path)


# --- the two drivers -----------------------------------------------------------------------------


def _ssl_context(service_cert_pem: bytes, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=service_cert_pem.decode())  # the pinned certificate only
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key) if key is not None else None)
    return ctx


def _error(call: Call, answer: Answer) -> ApiError:
    code, message = "HttpError", answer.body[:200].decode(errors="replace")
    try:
        err = json.loads(answer.body).get("error")
        if isinstance(err, dict):
            code, message = str(err.get("code", code)), str(err.get("message", message))
    except (ValueError, AttributeError):
        pass
    return ApiError(answer.status, code, message, method=call.method, path=call.path.split("?")[0])


class _Base:
    def __init__(
        self,
        endpoint: str,
        service_cert: Path | bytes,
        *,
        cert: Path | None = None,
        key: Path | None = None,
        token: str | None = None,
        state_file: Path | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.service_cert_pem = service_cert if isinstance(service_cert, bytes) else Path(service_cert).read_bytes()
        self.service_cert = x509.load_pem_x509_certificate(self.service_cert_pem)
        self.timeout = timeout
        self._ssl = _ssl_context(self.service_cert_pem, cert, key)
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.trusted = TrustedRoot(self.service_cert, state_file)
        self.verifier = ReceiptVerifier(self.service_cert)

    @classmethod
    def from_profile(cls: type[T], profile: Profile, **kwargs: Any) -> T:
        return cls(  # type: ignore[call-arg]
            profile.endpoint,
            profile.service_cert,
            cert=profile.cert,
            key=profile.key,
            token=profile.token,
            state_file=profile.state,
            **kwargs,
        )

    def _request_args(self, call: Call, api_version: str) -> dict[str, Any]:
        # a nextLink carries its own query (api-version included); httpx would replace it with `params`
        params = None if "?" in call.path else {**call.params, "api-version": api_version}
        return {"params": params, "json": call.json, "headers": call.headers}


class Client(_Base):
    """Synchronous client. Use as a context manager, or call :meth:`close`."""

    def __init__(self, endpoint: str, service_cert: Path | bytes, **kwargs: Any) -> None:
        super().__init__(endpoint, service_cert, **kwargs)
        self.http = httpx.Client(base_url=self.endpoint, verify=self._ssl, timeout=self.timeout, headers=self._headers)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _run(self, op: Op[T], api_version: str = API_VERSION) -> T:
        try:
            step = next(op)
            while True:
                if isinstance(step, Pause):
                    time.sleep(step.seconds)
                    step = op.send(None)
                    continue
                try:
                    r = self.http.request(step.method, step.path, **self._request_args(step, api_version))
                except httpx.HTTPError as exc:
                    raise UnreachableError(f"{step.method} {self.endpoint}{step.path.split('?')[0]}: {exc}") from None
                answer = Answer(r.status_code, dict(r.headers), r.content)
                if answer.status not in step.ok:
                    raise _error(step, answer)
                step = op.send(answer)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    # entries
    def append(
        self,
        contents: str,
        *,
        collection: str | None = None,
        tags: list[str] | None = None,
        wait: bool = True,
        timeout: float | None = None,
    ) -> Appended:
        """Append an entry; with ``wait`` (the default) return once it is Committed."""
        return self._run(op_append(contents, collection, tags, wait, timeout or self.timeout))

    def get(self, txid: TxId | str, *, collection: str | None = None) -> Entry:
        return self._run(op_get(_as_txid(txid), collection, self.timeout))

    def status(self, txid: TxId | str) -> TxStatus:
        return self._run(op_status(_as_txid(txid)))

    def wait(self, txid: TxId | str, *, timeout: float | None = None) -> TxStatus:
        """Wait until a transaction is Committed; raise :class:`NotCommittedError` if it is not in time."""
        return self._run(_wait_status(_as_txid(txid), timeout or self.timeout))

    def latest(self, *, collection: str | None = None) -> Entry | None:
        """The newest committed entry of a collection, or ``None`` when it holds none."""
        return self._run(op_latest(collection))

    def entries(
        self,
        *,
        collection: str | None = None,
        first: TxId | str | None = None,
        last: TxId | str | None = None,
        tag: str | None = None,
    ) -> Iterator[Entry]:
        """Committed entries of a collection in order, across pages."""
        link: str | None = None
        f = _as_txid(first) if first is not None else None
        la = _as_txid(last) if last is not None else None
        while True:
            page, link = self._run(op_page(link, collection, f, la, tag))
            yield from page
            if link is None:
                return

    def receipt(self, txid: TxId | str, *, insecure_skip_verification: bool = False) -> VerifiedReceipt:
        """The transaction's receipt, verified against the pinned service certificate."""
        return self._run(op_receipt(_as_txid(txid), self.verifier, not insecure_skip_verification, self.timeout))

    def cose_receipt(self, txid: TxId | str, *, insecure_skip_verification: bool = False) -> bytes:
        return self._run(
            op_cose_receipt(_as_txid(txid), self.service_cert, not insecure_skip_verification, self.timeout)
        )

    def sync(self) -> SignedRoot:
        """Fetch the newest signed root; accept it only if it extends the one trusted so far."""
        root = self._run(op_sync(self.trusted.root, self.service_cert))
        self.trusted.accept(root)
        return root

    # users
    def users(self) -> list[User]:
        body = self._run(_op_json(Call("GET", "/app/ledgerUsers")), USERS_API_VERSION)
        return _users(body)

    def set_user(self, user_id: str, roles: list[str], issuer: str | None = None) -> User:
        """Create the user, or add these roles to it (ACL's merge-patch of ``/app/ledgerUsers``);
        answers the user with all its roles. ``issuer`` names a token user's issuer (needed when
        the ledger trusts several)."""
        body = self._run(_op_set_user(user_id, roles, issuer), USERS_API_VERSION)
        return _users({"ledgerUsers": [body]})[0]

    def remove_user(self, user_id: str, issuer: str | None = None) -> None:
        self._run(_op_json(_remove_user_call(user_id, issuer)), USERS_API_VERSION)

    # token issuers
    def issuers(self) -> list[dict[str, Any]]:
        """The token issuers the ledger trusts, with the key ids in force."""
        return _issuers(self._run(_op_json(Call("GET", "/app/jwtIssuers"))))

    def set_issuer(self, config: dict[str, Any]) -> dict[str, Any]:
        """Trust an issuer: ``{"issuer", "jwksUri" or "jwks", "audiences"?, "userIdClaim"?, "caCertificate"?}``."""
        body = self._run(_op_json(Call("PUT", "/app/jwtIssuers", json=config)))
        return _issuers({"issuers": [body]})[0]

    def remove_issuer(self, issuer: str) -> None:
        self._run(_op_json(Call("DELETE", "/app/jwtIssuers", params={"issuer": issuer}, ok=frozenset({204}))))


class AsyncClient(_Base):
    """Asynchronous client (same operations as :class:`Client`, awaited)."""

    def __init__(self, endpoint: str, service_cert: Path | bytes, **kwargs: Any) -> None:
        super().__init__(endpoint, service_cert, **kwargs)
        self.http = httpx.AsyncClient(
            base_url=self.endpoint, verify=self._ssl, timeout=self.timeout, headers=self._headers
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _run(self, op: Op[T], api_version: str = API_VERSION) -> T:
        try:
            step = next(op)
            while True:
                if isinstance(step, Pause):
                    await asyncio.sleep(step.seconds)
                    step = op.send(None)
                    continue
                try:
                    r = await self.http.request(step.method, step.path, **self._request_args(step, api_version))
                except httpx.HTTPError as exc:
                    raise UnreachableError(f"{step.method} {self.endpoint}{step.path.split('?')[0]}: {exc}") from None
                answer = Answer(r.status_code, dict(r.headers), r.content)
                if answer.status not in step.ok:
                    raise _error(step, answer)
                step = op.send(answer)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    async def append(
        self,
        contents: str,
        *,
        collection: str | None = None,
        tags: list[str] | None = None,
        wait: bool = True,
        timeout: float | None = None,
    ) -> Appended:
        return await self._run(op_append(contents, collection, tags, wait, timeout or self.timeout))

    async def get(self, txid: TxId | str, *, collection: str | None = None) -> Entry:
        return await self._run(op_get(_as_txid(txid), collection, self.timeout))

    async def status(self, txid: TxId | str) -> TxStatus:
        return await self._run(op_status(_as_txid(txid)))

    async def latest(self, *, collection: str | None = None) -> Entry | None:
        return await self._run(op_latest(collection))

    async def entries(
        self,
        *,
        collection: str | None = None,
        first: TxId | str | None = None,
        last: TxId | str | None = None,
        tag: str | None = None,
    ) -> AsyncIterator[Entry]:
        link: str | None = None
        f = _as_txid(first) if first is not None else None
        la = _as_txid(last) if last is not None else None
        while True:
            page, link = await self._run(op_page(link, collection, f, la, tag))
            for entry in page:
                yield entry
            if link is None:
                return

    async def receipt(self, txid: TxId | str, *, insecure_skip_verification: bool = False) -> VerifiedReceipt:
        return await self._run(op_receipt(_as_txid(txid), self.verifier, not insecure_skip_verification, self.timeout))

    async def cose_receipt(self, txid: TxId | str, *, insecure_skip_verification: bool = False) -> bytes:
        return await self._run(
            op_cose_receipt(_as_txid(txid), self.service_cert, not insecure_skip_verification, self.timeout)
        )

    async def sync(self) -> SignedRoot:
        root = await self._run(op_sync(self.trusted.root, self.service_cert))
        self.trusted.accept(root)
        return root

    async def users(self) -> list[User]:
        return _users(await self._run(_op_json(Call("GET", "/app/ledgerUsers")), USERS_API_VERSION))

    async def set_user(self, user_id: str, roles: list[str], issuer: str | None = None) -> User:
        body = await self._run(_op_set_user(user_id, roles, issuer), USERS_API_VERSION)
        return _users({"ledgerUsers": [body]})[0]

    async def remove_user(self, user_id: str, issuer: str | None = None) -> None:
        await self._run(_op_json(_remove_user_call(user_id, issuer)), USERS_API_VERSION)


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
