"""Child process of the crash test (test_crash.py): append under load until killed.

Usage: ``python crash_child.py SERVICE_DIR [--threads N] [--seed S]``

Opens the ledger (crash recovery happens here, with no manual step) and appends entries from a
few threads. It writes one line per event to stdout, flushed at once so that a line the parent
has read was written before the kill:

* ``ready<TAB>view`` once the ledger is open;
* ``pending<TAB>txid<TAB>contents`` right after an append, for a sample of transactions;
* ``txid<TAB>contents<TAB>writeSetDigest`` for every transaction that ``wait_committed``
  reported Committed (the digest, from a fresh receipt, for every 20th; ``-`` otherwise);
* ``error<TAB>txid<TAB>status`` if a wait ends in any other state (the parent fails on it).

The parent kills it with SIGKILL; it never exits on its own.
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
from pathlib import Path

from notarium.ledger import EngineConfig, open_ledger
from notarium.types import TxStatus

# Small chunks so that kills also land while a chunk is being completed and renamed.
CONFIG = EngineConfig(chunk_size=48_000, signature_interval_ms=30)
RECEIPT_EVERY = 20
PENDING_EVERY = 3

_out_lock = threading.Lock()


def emit(*fields: object) -> None:
    line = "\t".join(str(f) for f in fields) + "\n"
    with _out_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


def worker(ledger, tid: int, seed: int) -> None:
    try:
        _work(ledger, tid, seed)
    except Exception as exc:
        emit("error", "exception", repr(exc).replace("\t", " ").replace("\n", " "))
        raise


def _work(ledger, tid: int, seed: int) -> None:
    rng = random.Random(seed * 1000 + tid)
    i = 0
    while True:
        burst = []
        for _ in range(rng.randint(1, 6)):
            contents = f"t{tid}-{i}-{rng.getrandbits(64):016x}-" + "x" * rng.randint(0, 120)
            txid = ledger.append_entry(contents, f"crash-{tid}")
            if i % PENDING_EVERY == 0:
                emit("pending", txid, contents)
            burst.append((i, txid, contents))
            i += 1
        for n, txid, contents in burst:
            status = ledger.wait_committed(txid, timeout=30)
            if status != TxStatus.COMMITTED:
                emit("error", txid, status)
                return
            wsd = "-"
            if n % RECEIPT_EVERY == 0:
                receipt = ledger.receipt(txid)
                wsd = receipt.receipt["leafComponents"]["writeSetDigest"] if receipt else "missing"
            emit(txid, contents, wsd)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("service", type=Path)
    parser.add_argument("--threads", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ledger = open_ledger(args.service, CONFIG)
    emit("ready", ledger.view)
    threads = [threading.Thread(target=worker, args=(ledger, t, args.seed), daemon=True) for t in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Only reached if every worker stopped on an error: keep the ledger open until killed.
    threading.Event().wait()


if __name__ == "__main__":
    main()
