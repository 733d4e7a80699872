"""What the engine is given from outside: its tunables, and the two hooks of a replicated ledger."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from notarium.ledger.identity import NodeIdentity
from notarium.ledger.layout import ServiceConfig


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Engine tunables. Times in milliseconds, sizes in bytes."""

    signature_interval_ms: float = 10.0
    signature_tx_count: int = 5000
    chunk_size: int = 5_000_000
    fsync: bool = True
    max_unsigned: int = 100_000  # appends wait while this many transactions await a signature
    # False: signature transactions only when sign() is called, so that a sequencer outside the
    # engine (the HTTP front process) knows every seqno in advance; it must then keep to the two
    # limits above itself
    auto_sign: bool = True

    def __post_init__(self) -> None:
        if self.signature_interval_ms <= 0 or self.signature_tx_count < 1 or self.chunk_size < 1:
            raise ValueError("signature interval, signature count and chunk size must be positive")


LogRow = tuple[int, int, bool, bytes]
"""One transaction of a replicated log: seqno, view, is a signature, the entry's bytes."""


class ReplicaLog(Protocol):
    """Where a replicated ledger commits (notarium.ledger.storage.postgres.PostgresLog): the
    primary appends each signed batch, fenced by its lease, before it counts as Committed."""

    def append(self, view: int, holder: str, rows: Sequence[LogRow]) -> None: ...


class LedgerState(Protocol):
    """What a :class:`SecretCourier` reads of the ledger: its facts, its node's identity and its
    committed state tables."""

    @property
    def service(self) -> ServiceConfig: ...
    @property
    def identity(self) -> NodeIdentity: ...
    @property
    def node_id(self) -> str: ...
    def state(self, table: str) -> dict[bytes, bytes]: ...
    def state_get(self, table: str, key: bytes) -> bytes | None: ...


class SecretCourier(Protocol):
    """Carries a new ledger secret to the other nodes of a replicated service through the log
    (notarium.cluster.join.NodeCourier): sealed to each trusted node's key in the rekey itself."""

    def seal_for_nodes(self, ledger: LedgerState, secret: bytes, start: int) -> dict[bytes, bytes]: ...
    def open_for_node(self, ledger: LedgerState, sealed: bytes, start: int) -> bytes: ...
