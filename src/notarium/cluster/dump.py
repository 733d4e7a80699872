"""The replicated log as CCF chunk files, for `notarium audit --store` (docs/operations/ha.md).

The rows are written as they are stored: nothing is checked here, the audit checks everything.
Chunks end on signatures (a chunk is completed at the first signature past ``chunk_size``); rows
after the last signature stay in an unfinished chunk, which the audit reports as an unsigned tail.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from notarium.errors import LedgerAuditError
from notarium.ledger.config import LogRow
from notarium.ledger.storage.files import ChunkFiles

BATCH = 20_000


class Readable(Protocol):
    def read(self, start: int, end: int | None = None, limit: int = 10_000) -> list[LogRow]: ...


def dump_log(store: Readable, folder: Path, *, chunk_size: int = 5_000_000) -> int:
    """Write every row of ``store`` into chunk files in ``folder`` (new); the number of rows.

    A missing row (a gap in the seqnos) is a ``LedgerAuditError``: the rows after it cannot be
    placed, and a ledger that merely ended early would otherwise pass."""
    files = ChunkFiles(folder, fsync=False)
    try:
        expected = 1
        while True:
            rows = store.read(expected, limit=BATCH)
            run = []
            for seqno, _view, is_signature, data in rows:
                if seqno != expected:
                    raise LedgerAuditError(
                        f"the replicated log has no transaction {expected} (the next one stored is {seqno})",
                        txid=f"?.{expected}",
                        check="log-sequence",
                    )
                run.append(data)
                expected += 1
                if is_signature and files.current_size + sum(map(len, run)) >= chunk_size:
                    files.append(expected - len(run), run)
                    run = []
                    files.complete_current(seqno)
            if run:
                files.append(expected - len(run), run)
            if len(rows) < BATCH:
                break
        files.sync()
    finally:
        files.close()
    return expected - 1
