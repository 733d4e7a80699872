"""The front's link between governance (:mod:`notarium.governance`) and the ledger engine."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from notarium.errors import LedgerError
from notarium.governance import tables as gt
from notarium.governance.actions import Overlay, recovery_members, recovery_threshold
from notarium.governance.service import Writes
from notarium.ledger.remote import RemoteLedger
from notarium.types import TxId, TxStatus


class LedgerStore:
    """:class:`notarium.governance.service.Store` over the engine link: committed state, appends
    that wait for their commit, and the state digest members acknowledge (the newest signed root)."""

    def __init__(self, ledger: RemoteLedger, wait: Callable[[TxId], Awaitable[TxStatus]]) -> None:
        self._ledger = ledger
        self._wait = wait

    async def state(self, table: str) -> dict[bytes, bytes]:
        return await self._ledger.state(table)

    async def state_get(self, table: str, key: bytes) -> bytes | None:
        return await self._ledger.state_get(table, key)

    async def commit(self, writes: Writes) -> bool:
        txid = await self._ledger.append(writes)
        return await self._wait(txid) == TxStatus.COMMITTED

    async def state_digest(self) -> str:
        return (await self._ledger.signed_root()).root.hex()


# tables whose change the front's caches must follow
USER_TABLES = frozenset({gt.USERS})
ISSUER_TABLES = frozenset({gt.JWT_ISSUERS, gt.JWT_KEYS})


class EngineEffects:
    """:class:`notarium.governance.service.Effects` carried out by the engine once the accepted
    proposal's transaction has committed: a ledger rekey, and new recovery shares for the recovery
    members (every member with an encryption key that is not a NonParticipant, Accepted or Active)
    at the recovery threshold in force."""

    def __init__(self, ledger: RemoteLedger, wait: Callable[[TxId], Awaitable[TxStatus]]) -> None:
        self._ledger = ledger
        self._wait = wait
        self.renewed: Callable[[], None] | None = None

    async def _committed(self, txid: TxId, what: str) -> None:
        if await self._wait(txid) != TxStatus.COMMITTED:
            raise LedgerError(f"the {what} at {txid} did not commit")

    async def renew_certificates(self, service_days: int | None, node_days: int | None) -> None:
        txid = await self._ledger.renew_certificates(service_days=service_days, node_days=node_days)
        await self._committed(txid, "certificate renewal")
        if self.renewed is not None:
            self.renewed()  # the front serves the renewed node certificate to new connections

    async def trigger_ledger_rekey(self) -> None:
        await self._committed(await self._ledger.rekey(), "ledger rekey")

    async def refresh_recovery_shares(self) -> None:
        tables = (gt.MEMBERS_INFO, gt.MEMBERS_ENC_KEYS, gt.SERVICE_CONFIG)
        view = Overlay({t: await self._ledger.state(t) for t in tables})
        members = {}
        for member in recovery_members(view):
            key = view.get(gt.MEMBERS_ENC_KEYS, member.encode())
            if key is not None:
                members[member] = key.decode()
        txid = await self._ledger.reissue_recovery_shares(members, recovery_threshold(view))
        await self._committed(txid, "recovery share issuance")
