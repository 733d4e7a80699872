"""What request handlers share: the ledger, users, settings, metrics, commit notifications."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass, field

from notarium.auth.users import UserStore
from notarium.ledger import Ledger
from notarium.server.config import ServerConfig
from notarium.server.metrics import Metrics
from notarium.types import TxId, TxStatus


class CommitWaiter:
    """Async waits for commits, fed by the engine's commit listener (a thread)."""

    def __init__(self, ledger: Ledger, loop: asyncio.AbstractEventLoop) -> None:
        self._ledger = ledger
        self._loop = loop
        self._waiting: dict[int, list[asyncio.Future[None]]] = {}
        ledger.add_commit_listener(self._on_commit)

    def _on_commit(self, seqno: int) -> None:
        self._loop.call_soon_threadsafe(self._resolve, seqno)

    def _resolve(self, seqno: int) -> None:
        for s in [s for s in self._waiting if s <= seqno]:
            for fut in self._waiting.pop(s):
                if not fut.done():
                    fut.set_result(None)

    async def wait(self, txid: TxId, timeout: float = 30.0) -> TxStatus:
        status = self._ledger.status(txid)
        if status != TxStatus.PENDING:
            return status
        fut: asyncio.Future[None] = self._loop.create_future()
        self._waiting.setdefault(txid.seqno, []).append(fut)
        if self._ledger.status(txid) != TxStatus.PENDING:  # committed meanwhile
            self._resolve(txid.seqno)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(fut, timeout)
        return self._ledger.status(txid)

    def close(self) -> None:
        self._ledger.remove_commit_listener(self._on_commit)


@dataclass
class ServerContext:
    ledger: Ledger
    users: UserStore
    config: ServerConfig
    metrics: Metrics
    commits: CommitWaiter
    collections: set[str] = field(default_factory=set)
    tags: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
