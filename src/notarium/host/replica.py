"""A hosted ledger's node on PostgreSQL: the engine child of ``notarium host DIR --store``.

``python -m notarium.host.replica DIR FD LOGLEVEL SETTINGS_JSON``, with the DSN in the environment
variable ``NOTARIUM_STORE`` (never on a command line). It is what ``notarium serve DIR --store``
runs in its engine process (:mod:`notarium.server.runner`: the local replica checked against the
log and caught up, the replication thread following the log or holding the ledger's lease), served
to the host process over the socketpair on ``FD`` as :mod:`notarium.server.engine` serves an
embedded ledger. Its role (primary or backup) reaches the host's front over the same link.

Exit status: 0 after a clean stop (a primary signs what it sequenced and hands its lease on),
:data:`EXIT_DEPOSED` when it stopped being the primary (the host starts it again at once, as a
follower, as ``serve`` does), 1 when it could not start.

The process dies with the host process (``PR_SET_PDEATHSIG``): a host process that is killed
takes its nodes with it, as the loss of its machine would, and the other host processes take over
its ledgers when their leases expire (docs/design/host.md).
"""

from __future__ import annotations

import ctypes
import gc
import json
import logging
import os
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from notarium.cluster.join import ENGINE_CALLS
from notarium.errors import NotariumError
from notarium.ledger import EngineConfig
from notarium.ledger.engine_service import EngineService
from notarium.server.config import LOG_FORMAT, ServerConfig
from notarium.server.engine import engine_config
from notarium.server.runner import Replication, _close_primary, _open_node

log = logging.getLogger("notarium.host")

EXIT_OK, EXIT_FAILED, EXIT_DEPOSED = 0, 1, 75
STORE_ENV = "NOTARIUM_STORE"
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class ReplicaSettings:
    """What a hosted ledger's node needs besides the engine's tunables."""

    schema: str  # the ledger's PostgreSQL schema
    address: str  # where the other host processes forward writes: https://host:port/ledgers/{name}
    lease_ttl_s: float = 3.0

    def to_json(self, engine: EngineConfig) -> str:
        fields = {k: getattr(engine, k) for k in engine.__dataclass_fields__ if k != "auto_sign"}
        return json.dumps(
            {"engine": fields, "schema": self.schema, "address": self.address, "leaseTtl": self.lease_ttl_s}
        )


def _die_with_parent() -> None:
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() == 1:  # the parent died before the call
            os._exit(EXIT_FAILED)


def run_replica(directory: Path, sock: socket.socket, dsn: str, settings: dict[str, object]) -> int:
    engine = engine_config(json.dumps(settings["engine"]))
    replication = Replication(
        dsn, str(settings["address"]), float(str(settings["leaseTtl"])), schema=str(settings["schema"])
    )
    try:
        node, ledger = _open_node(directory, engine, replication, ServerConfig())
    except NotariumError as exc:
        print(f"error: cannot open the ledger node in {directory}: {exc}", file=sys.stderr, flush=True)
        sock.close()
        return EXIT_FAILED
    stop = threading.Event()
    deposed = threading.Event()

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)

    def on_deposed() -> None:
        deposed.set()
        stop.set()

    gc.collect()
    gc.freeze()
    service = EngineService(ledger, sock, calls=ENGINE_CALLS)
    service.role = node.role()
    node.on_role = service.announce_role
    node.on_deposed = on_deposed
    service.start()
    node.start()
    try:
        while not stop.is_set() and not service.disconnected.is_set():
            service.disconnected.wait(0.2)
    finally:
        node.stop()
        if not deposed.is_set():
            _close_primary(node)
        service.stop()
        ledger.close()
        node.store.close()
    log.info("ledger node for %s stopped%s", directory, " (deposed)" if deposed.is_set() else "")
    return EXIT_DEPOSED if deposed.is_set() else EXIT_OK


def main(argv: list[str]) -> int:
    _die_with_parent()
    directory, fd, level = Path(argv[0]), int(argv[1]), int(argv[2])
    logging.basicConfig(level=level, format=LOG_FORMAT)
    settings = json.loads(argv[3])
    dsn = os.environ.pop(STORE_ENV, "")
    if not dsn:
        print(f"error: {STORE_ENV} is not set", file=sys.stderr, flush=True)
        return EXIT_FAILED
    return run_replica(directory, socket.socket(fileno=fd), dsn, settings)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
