"""``notarium pg status``: how far the trail is behind the database."""

from __future__ import annotations

import contextlib
import datetime
import time
from typing import Any

import psycopg

from notarium.pgtrail import database as pgdb
from notarium.pgtrail.capture import MESSAGE_PREFIX
from notarium.pgtrail.pgoutput import lsn_text
from notarium.pgtrail.prepare import require_trail
from notarium.pgtrail.state import position_of
from notarium.pgtrail.trail import TrailLedger


def status(dsn: str, ledger: TrailLedger, *, wait: float = 1.0) -> dict[str, Any]:
    """The trail against the database. A running agent is asked (a progress message) to record how
    far it has read, and given up to ``wait`` seconds, so that WAL holding no captured change does
    not count as lag."""
    with pgdb.connect(dsn) as conn:
        db = pgdb.info(conn)
        init_txid, init = require_trail(ledger, db)
        slot = pgdb.slot(conn, init.slot)
        deadline = time.monotonic() + wait
        nudged = False
        while True:
            latest = ledger.latest()
            pos = position_of(latest.entry if latest else None, init)
            if pos.end >= db.lsn or time.monotonic() >= deadline or slot is None or not slot.active:
                break
            if not nudged:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("SELECT pg_logical_emit_message(true, %s, 'status')", (MESSAGE_PREFIX,))
                nudged = True
            time.sleep(0.05)
    lag_bytes = max(0, db.lsn - pos.end)
    lag_seconds = 0.0
    if pos.last_commit_time and lag_bytes:
        last = datetime.datetime.fromisoformat(pos.last_commit_time)
        lag_seconds = max(0.0, (datetime.datetime.now(datetime.UTC) - last).total_seconds())
    return {
        "ok": True,
        "database": db.database,
        "collection": ledger.collection,
        "epoch": init.epoch,
        "initialisedAt": str(init_txid),
        "tables": [t.name for t in init.tables],
        "baselineDone": pos.baseline_done,
        "transactionsCaptured": pos.count,
        "lastEntry": None if latest is None else str(latest.txid),
        "lastCapturedCommit": pos.last_commit_time,
        "trailEnd": lsn_text(pos.end),
        "databaseLsn": lsn_text(db.lsn),
        "lagBytes": lag_bytes,
        "lagSeconds": round(lag_seconds, 3),
        "stopped": None if pos.stopped is None else pos.stopped.reason,
        "slot": None
        if slot is None
        else {
            "name": slot.name,
            "active": slot.active,
            "confirmedFlush": None if slot.confirmed_flush is None else lsn_text(slot.confirmed_flush),
            "walRetainedBytes": None if slot.restart is None else max(0, db.lsn - slot.restart),
            "walStatus": slot.wal_status,
        },
    }
