"""A ledger engine child: one service directory served to a parent that is its HTTP front.

``notarium serve`` keeps the engine in its own process and starts the HTTP front as a child
(:mod:`notarium.server.runner`). A ledger host (:mod:`notarium.host`) is the inverse: the host
process is the single HTTP front of many ledgers and starts one engine per ledger as
``python -m notarium.server.engine DIR FD LOGLEVEL [SETTINGS_JSON]``, with one end of a socketpair
on ``FD``. The engine runs with ``auto_sign=False`` (the front sequences, see
:mod:`notarium.ledger.remote`); it stops when the link closes or on SIGTERM/SIGINT, and then closes
the ledger, which signs everything sequenced and completes the live chunk.

Exit status: 0 after a clean stop, 1 if the ledger could not be opened (the reason is on stderr).
"""

from __future__ import annotations

import gc
import json
import logging
import signal
import socket
import sys
import threading
from dataclasses import replace
from pathlib import Path
from types import FrameType

from notarium.cluster.join import ENGINE_CALLS
from notarium.errors import NotariumError
from notarium.ledger import EngineConfig, open_ledger
from notarium.ledger.engine_service import EngineService
from notarium.server.config import LOG_FORMAT

log = logging.getLogger("notarium.server.engine")

EXIT_OK, EXIT_FAILED = 0, 1


def engine_config(settings: str | None) -> EngineConfig:
    """The engine's tunables from the JSON the parent passes (field names of EngineConfig)."""
    fields = json.loads(settings) if settings else {}
    if not isinstance(fields, dict):
        raise ValueError("engine settings must be a JSON object")
    return replace(EngineConfig(**fields), auto_sign=False)


def run_engine(directory: Path, sock: socket.socket, config: EngineConfig) -> int:
    try:
        ledger = open_ledger(directory, config)
    except NotariumError as exc:
        print(f"error: cannot open the ledger in {directory}: {exc}", file=sys.stderr, flush=True)
        sock.close()
        return EXIT_FAILED
    stop = threading.Event()

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    gc.collect()
    gc.freeze()  # the engine's long-lived objects: out of the collector's way (see front.py)
    service = EngineService(ledger, sock, calls=ENGINE_CALLS)
    service.start()
    try:
        while not stop.is_set() and not service.disconnected.is_set():
            service.disconnected.wait(0.2)
    finally:
        service.stop()
        ledger.close()  # signs what the front sequenced and completes the chunk
    log.info("engine for %s stopped", directory)
    return EXIT_OK


def main(argv: list[str]) -> int:
    directory, fd, level = Path(argv[0]), int(argv[1]), int(argv[2])
    logging.basicConfig(level=level, format=LOG_FORMAT)
    config = engine_config(argv[3] if len(argv) > 3 else None)
    return run_engine(directory, socket.socket(fileno=fd), config)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
