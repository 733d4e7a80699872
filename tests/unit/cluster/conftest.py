"""Nodes of one replicated service, in this process, over the session's real PostgreSQL server."""

from __future__ import annotations

import datetime
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from notarium.cluster.node import NodeSettings, ReplicaNode
from notarium.ledger import EngineConfig, Ledger, init_service, open_ledger
from notarium.ledger import identity as ids
from notarium.ledger.layout import Layout
from notarium.ledger.storage.postgres import PostgresLog
from notarium.verify.keys import key_id

TTL = 0.6  # seconds: short leases keep takeovers quick in tests


def new_node(service: Path, directory: Path) -> Path:
    """Another node of ``service``: same service identity and secrets, its own node key and
    certificate (issued by the service key), and no ledger yet (it fills from the log)."""
    shutil.copytree(service, directory, ignore=shutil.ignore_patterns("ledger", "index", "view", "LOCK"))
    layout = Layout(directory)
    key = ids.new_ec_key()
    service_key, service_cert = ids.load_private_ec(layout.service_key), ids.load_cert(layout.service_cert)
    now = datetime.datetime.now(datetime.UTC)
    cert = ids.node_certificate(key.public_key(), service_key, service_cert, hosts=[], now=now)
    layout.node_key.unlink()
    layout.node_cert.unlink()
    ids.write_secret(layout.node_key, ids.private_pem(key))
    ids.write_public(layout.node_cert, ids.cert_pem(cert))
    config = json.loads(layout.config.read_text())
    config["nodeId"] = key_id(key.public_key())
    layout.config.write_text(json.dumps(config, indent=2))
    return directory


class Cluster:
    def __init__(self, root: Path, dsn: str) -> None:
        self.root = root
        self.dsn = dsn
        self.service = root / "n0"
        init_service(self.service)
        self.nodes: list[tuple[ReplicaNode, Ledger, PostgresLog]] = []

    def start(self, directory: Path, engine: EngineConfig | None = None) -> tuple[ReplicaNode, Ledger]:
        store = PostgresLog(self.dsn)
        ledger = open_ledger(directory, engine or EngineConfig(signature_interval_ms=5, fsync=False), replica=store)
        node = ReplicaNode(ledger, store, NodeSettings(ledger.node_id, f"https://{directory.name}", TTL, 0.05))
        node.start()
        self.nodes.append((node, ledger, store))
        return node, ledger

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
