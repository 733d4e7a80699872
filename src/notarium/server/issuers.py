"""Trusted token issuers and their keys, kept in the ledger (the front's side).

The issuers (``public:notarium.jwt.issuers``) and the signing keys in force for each
(``public:notarium.jwt.keys``) are ledger state: an audit shows who could authenticate when.
Keys given inline are recorded as they are; keys behind a ``jwksUri`` are fetched when the issuer
is set, every ``REFRESH_S``, and when a token names a key id the ledger does not know (at most
once per ``REFETCH_MIN_S`` per issuer, so that made-up key ids cannot make the ledger hammer the
issuer). A fetched key set that differs from the recorded one is recorded (and waited for)
before it is used.

Token users are users of one issuer (:mod:`notarium.auth.identity`). A change of the trusted
issuers (setting or removing one) first binds the unbound token users to the issuer trusted
until then if it was the only one, in the same transaction: they were its users, and must not
become another's. The caller holds ``ServerContext.access_changes`` and reloads the users after.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from notarium.auth.identity import Principal, bind_unbound
from notarium.auth.tokens import IssuerConfig, TokenError, TokenValidator, UnknownKeyError, parse_jwks
from notarium.ledger.remote import RemoteLedger
from notarium.types import TxId, TxStatus
from notarium.verify import tables

log = logging.getLogger("notarium.server.issuers")

REFRESH_S = 300.0
REFETCH_MIN_S = 2.0
FETCH_TIMEOUT_S = 10.0
MAX_JWKS_BYTES = 1 << 20


class IssuerError(Exception):
    """An issuer could not be set (bad configuration, keys not fetchable): the caller's 400."""


def _canonical(keys: dict[str, dict[str, Any]]) -> bytes:
    return json.dumps({"keys": [keys[k] for k in sorted(keys)]}, sort_keys=True, separators=(",", ":")).encode()


class IssuerDirectory:
    def __init__(
        self,
        ledger: RemoteLedger,
        wait_committed: Callable[[TxId], Awaitable[TxStatus]],
        validator: TokenValidator | None = None,
    ) -> None:
        self._ledger = ledger
        self._wait = wait_committed
        self.validator = validator or TokenValidator()
        self._issuers: dict[str, IssuerConfig] = {}
        self._keys: dict[str, dict[str, dict[str, Any]]] = {}
        self._fetched_at: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._refresher: asyncio.Task[None] | None = None

    async def load(self) -> None:
        issuers = {}
        for key, value in (await self._ledger.state(tables.JWT_ISSUERS)).items():
            issuers[key.decode()] = IssuerConfig.from_json(json.loads(value))
        keys = {}
        for key, value in (await self._ledger.state(tables.JWT_KEYS)).items():
            if key.decode() in issuers:
                keys[key.decode()] = parse_jwks(value)
        self._issuers, self._keys = issuers, keys
        self.validator.configure(issuers, keys)

    def start(self) -> None:
        self._refresher = asyncio.ensure_future(self._refresh_loop())

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher

    def issuers(self) -> list[tuple[IssuerConfig, list[str]]]:
        return [(c, sorted(self._keys.get(i, {}))) for i, c in sorted(self._issuers.items())]

    def trusted(self) -> frozenset[str]:
        """The issuers in force (their ``iss`` values)."""
        return frozenset(self._issuers)

    # --- authentication -------------------------------------------------------------------------

    async def principal(self, token: str) -> Principal:
        """The caller a bearer token names; ``TokenError`` says why it is refused."""
        try:
            return self.validator.validate(token)
        except UnknownKeyError as exc:
            config = self._issuers.get(exc.issuer)
            if config is None or config.jwks_uri is None:
                raise
            if time.monotonic() - self._fetched_at.get(exc.issuer, 0.0) < REFETCH_MIN_S:
                raise
            try:
                await self._refresh(config)
            except (IssuerError, OSError) as fetch_error:
                log.warning("could not refresh the keys of %s: %s", exc.issuer, fetch_error)
                raise exc from None
            return self.validator.validate(token)

    # --- administration -------------------------------------------------------------------------

    async def set_issuer(self, config: IssuerConfig, inline_jwks: object | None) -> None:
        """Record ``config`` and its keys (inline, or fetched from its jwksUri now) in one transaction."""
        if (inline_jwks is None) == (config.jwks_uri is None):
            raise IssuerError("give the issuer's keys either inline (jwks) or by URL (jwksUri), not both")
        try:
            keys = parse_jwks(inline_jwks) if inline_jwks is not None else await self._fetch(config)
        except ValueError as exc:
            raise IssuerError(str(exc)) from None
        issuer = config.issuer.encode()
        txid = await self._ledger.append(
            {
                **await self._bind_unbound_users(),
                tables.JWT_ISSUERS: {issuer: json.dumps(config.to_json(), sort_keys=True).encode()},
                tables.JWT_KEYS: {issuer: _canonical(keys)},
            }
        )
        await self._committed(txid)
        self._fetched_at[config.issuer] = time.monotonic()
        await self.load()

    async def remove_issuer(self, issuer: str) -> bool:
        if issuer not in self._issuers:
            return False
        raw = issuer.encode()
        await self._committed(
            await self._ledger.append(
                {**await self._bind_unbound_users(), tables.JWT_ISSUERS: {raw: None}, tables.JWT_KEYS: {raw: None}}
            )
        )
        await self.load()
        return True

    async def _bind_unbound_users(self) -> dict[str, dict[bytes, bytes | None]]:
        """The writes binding unbound token users to the only issuer trusted so far (none if there
        are several or none: with several, they were not anyone's; with none, nobody's yet)."""
        if len(self._issuers) != 1:
            return {}
        (only,) = self._issuers
        users, info = await self._ledger.state(tables.USERS), await self._ledger.state(tables.USERS_INFO)
        user_writes, info_writes = bind_unbound(users, info, only)
        if user_writes:
            log.info("token users recorded without an issuer are now users of %s", only)
        writes = {tables.USERS: user_writes, tables.USERS_INFO: info_writes}
        return {table: rows for table, rows in writes.items() if rows}

    # --- keys -----------------------------------------------------------------------------------

    async def _committed(self, txid: TxId) -> None:
        if await self._wait(txid) != TxStatus.COMMITTED:
            raise IssuerError("the change could not be committed; retry")

    async def _fetch(self, config: IssuerConfig) -> dict[str, dict[str, Any]]:
        if config.jwks_uri is None:
            raise IssuerError("the issuer has no jwksUri")
        context = ssl.create_default_context(cadata=config.ca_certificate) if config.ca_certificate else True
        timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(config.jwks_uri, ssl=context, allow_redirects=False) as r,
            ):
                if r.status != 200:
                    raise IssuerError(f"fetching {config.jwks_uri} answered {r.status}")
                body = await r.content.read(MAX_JWKS_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise IssuerError(f"cannot fetch {config.jwks_uri}: {exc or type(exc).__name__}") from None
        if len(body) > MAX_JWKS_BYTES:
            raise IssuerError(f"the JWK set at {config.jwks_uri} is larger than {MAX_JWKS_BYTES} bytes")
        try:
            return parse_jwks(body)
        except ValueError as exc:
            raise IssuerError(f"{config.jwks_uri}: {exc}") from None

    async def _refresh(self, config: IssuerConfig) -> None:
        lock = self._locks.setdefault(config.issuer, asyncio.Lock())
        async with lock:
            if time.monotonic() - self._fetched_at.get(config.issuer, 0.0) < REFETCH_MIN_S:
                return  # someone just did
            self._fetched_at[config.issuer] = time.monotonic()
            keys = await self._fetch(config)
            if self._issuers.get(config.issuer) != config:
                return  # removed or changed meanwhile
            if _canonical(keys) == _canonical(self._keys.get(config.issuer, {})):
                return
            log.info("the keys of %s changed (now %s); recording them", config.issuer, ", ".join(sorted(keys)))
            txid = await self._ledger.append({tables.JWT_KEYS: {config.issuer.encode(): _canonical(keys)}})
            await self._committed(txid)
            await self.load()

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            for config in list(self._issuers.values()):
                if config.jwks_uri is not None:
                    try:
                        await self._refresh(config)
                    except (IssuerError, OSError, TokenError) as exc:
                        log.warning("could not refresh the keys of %s: %s", config.issuer, exc)
