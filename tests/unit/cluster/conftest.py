"""Nodes of one replicated service, in this process, over the session's real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nodes import admission
from notarium.cluster.node import NodeSettings, ReplicaNode
from notarium.cluster.sealing import NodeCourier
from notarium.ledger import EngineConfig, Ledger, init_service, open_ledger
from notarium.ledger.storage.postgres import PostgresLog

TTL = 0.6  # seconds: short leases keep takeovers quick in tests


class Cluster:
    def __init__(self, root: Path, dsn: str) -> None:
        self.root = root
        self.dsn = dsn
        self.service = root / "n0"
        init_service(self.service)
        self.nodes: list[tuple[ReplicaNode, Ledger, PostgresLog]] = []

    def start(
        self, directory: Path, engine: EngineConfig | None = None, *, courier: bool = True
    ) -> tuple[ReplicaNode, Ledger]:
        store = PostgresLog(self.dsn)
        config = engine or EngineConfig(signature_interval_ms=5, fsync=False)
        ledger = open_ledger(directory, config, replica=store, courier=NodeCourier() if courier else None)
        node = ReplicaNode(ledger, store, NodeSettings(ledger.node_id, f"https://{directory.name}", TTL, 0.05))
        node.start()
        self.nodes.append((node, ledger, store))
        return node, ledger

    @staticmethod
    def admit(primary: Ledger, directory: Path) -> Path:
        """Record the node in ``directory`` Trusted, through ``primary``, and wait for the commit."""
        txid = primary.append(admission(directory))
        primary.sign()
        wait_for(lambda: primary.committed.seqno >= txid.seqno, what="the admission to commit")
        return directory

    def close(self) -> None:
        for node, ledger, store in self.nodes:
            node.stop()
            try:
                ledger.close()
            finally:
                store.close()


@pytest.fixture
def cluster(tmp_path: Path, pg_dsn: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path, pg_dsn)
    yield c
    c.close()


def wait_for(check: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    import time

    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
