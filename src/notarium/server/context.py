"""What request handlers share: the engine link, users, settings, metrics, commit notifications."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from cryptography import x509

from notarium.auth.rbac import builtin_actions
from notarium.auth.roles import RoleStore
from notarium.auth.users import UserStore
from notarium.governance.service import Governance
from notarium.ledger.remote import RemoteLedger
from notarium.server.config import ServerConfig
from notarium.server.consortium import EngineEffects, LedgerStore
from notarium.server.forward import Forwarder
from notarium.server.issuers import IssuerDirectory
from notarium.server.joins import JoinLimits
from notarium.server.metrics import Metrics
from notarium.types import TxId, TxStatus


class CommitWaiter:
    """Async waits for commits, fed by the engine's commit notices (on the event loop)."""

    def __init__(self, ledger: RemoteLedger) -> None:
        self._ledger = ledger
        self._waiting: dict[int, list[asyncio.Future[None]]] = {}
        ledger.add_commit_listener(self._resolve)

    def _resolve(self, seqno: int) -> None:
        for s in [s for s in self._waiting if s <= seqno]:
            for fut in self._waiting.pop(s):
                if not fut.done():
                    fut.set_result(None)

    async def wait(self, txid: TxId, timeout: float = 30.0) -> TxStatus:
        """The status of ``txid`` once it is no longer Pending (or after ``timeout`` seconds)."""
        status = await self._ledger.status(txid)
        # notices and answers arrive in order: a commit reported before this answer is in `committed`
        if status != TxStatus.PENDING or txid.seqno <= self._ledger.committed.seqno:
            return await self._ledger.status(txid) if status == TxStatus.PENDING else status
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(txid.seqno, []).append(fut)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(fut, timeout)
        return await self._ledger.status(txid)

    def close(self) -> None:
        self._ledger.remove_commit_listener(self._resolve)


@dataclass
class ServerContext:
    ledger: RemoteLedger
    users: UserStore
    config: ServerConfig
    metrics: Metrics
    commits: CommitWaiter
    issuers: IssuerDirectory
    roles: RoleStore
    collections: set[str] = field(default_factory=set)
    tags: set[str] = field(default_factory=set)
    # serialises changes to users and roles: each one is checked against the committed copies
    access_changes: asyncio.Lock = field(default_factory=asyncio.Lock)
    # consortium governance (routes/gov.py): signed proposals and ballots, applied to the ledger
    governance: Governance = field(init=False)
    # what governance has the engine do (rekey, shares, renewals); the front hooks `renewed`
    effects: EngineEffects = field(init=False)
    # POST /node/join: the rate and cap of new nodes, and the expiry of Pending ones (server/joins.py)
    join_limits: JoinLimits = field(init=False)

    # a node of a replicated service: sends writes to the primary while it is a follower
    forwarder: Forwarder | None = None
    _reloading: asyncio.Future[None] | None = None

    @property
    def service_cert(self) -> x509.Certificate:
        if self._service_cert is None:
            self._service_cert = x509.load_pem_x509_certificate(self.ledger.facts.service_cert_pem)
        return self._service_cert

    _service_cert: x509.Certificate | None = None

    def __post_init__(self) -> None:
        self.effects = EngineEffects(self.ledger, self.commits.wait)
        self.governance = Governance(LedgerStore(self.ledger, self.commits.wait), self.effects)
        self.join_limits = JoinLimits(
            self.ledger, self.config, self.access_changes, self.commits.wait, self.governance.nodes_to_trust
        )

    @classmethod
    async def create(cls, ledger: RemoteLedger, config: ServerConfig) -> ServerContext:
        commits = CommitWaiter(ledger)
        issuers = IssuerDirectory(ledger, commits.wait)
        await issuers.load()
        roles = await RoleStore.load(ledger, builtin_actions(config))
        ctx = cls(ledger, await UserStore.load(ledger), config, Metrics(), commits, issuers, roles)
        ctx.collections.update(await ledger.collections())
        if ledger.facts.role is not None:  # a node of a replicated service
            facts = ledger.facts
            ctx.forwarder = Forwarder(facts.node_cert_pem, facts.node_key_pem, facts.service_cert_pem)
            ledger.add_state_listener(ctx.state_changed)
        return ctx

    def state_changed(self) -> None:
        """A follower applied writes made through another node: reload what is kept in memory."""
        if self._reloading is None or self._reloading.done():
            self._reloading = asyncio.ensure_future(self._reload())

    async def _reload(self) -> None:
        await self.users.reload()
        await self.roles.reload()
        await self.issuers.load()
        self.collections.update(await self.ledger.collections())
