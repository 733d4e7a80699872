"""The verifying client, synchronous (:class:`Client`) and asynchronous (:class:`AsyncClient`).

Both run the same operations (:mod:`notarium.client.operations`), written once as generators that
yield the HTTP calls (and pauses) they need and receive the answers (a "sans-I/O" core); the two
classes only carry them out with httpx. Nothing the server says is trusted:

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
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from notarium.client.errors import ApiError, ClientError, UnreachableError
from notarium.client.operations import (
    API_VERSION,
    USERS_API_VERSION,
    Answer,
    Appended,
    Call,
    Entry,
    Op,
    Pause,
    T,
    User,
    VerifiedReceipt,
    _as_txid,
    _issuers,
    _op_json,
    _op_set_user,
    _remove_user_call,
    _users,
    _wait_status,
    op_append,
    op_cose_receipt,
    op_get,
    op_latest,
    op_page,
    op_receipt,
    op_status,
    op_sync,
)
from notarium.client.profile import Profile
from notarium.types import TxId, TxStatus
from notarium.verify.consistency import SignedRoot, verify_signed_root
from notarium.verify.receipt import ReceiptVerifier

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
