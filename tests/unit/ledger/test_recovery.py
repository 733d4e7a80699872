"""Restart paths: a live chunk with a torn tail, a missing or lying index, `notarium reindex`."""

from __future__ import annotations

import secrets
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from leaks import files_holding
from notarium.auditing import audit, find_target
from notarium.cli import main
from notarium.errors import ServiceError
from notarium.ledger import open_ledger
from notarium.types import TxId, TxStatus
from notarium.verify import verify_json_receipt
from notarium.verify.entry import ChunkName, parse_entry

CHILD = """
import os, sys
from notarium.ledger import open_ledger
led = open_ledger(sys.argv[1])
txs = [led.append_entry(f"entry {i}", "c") for i in range(int(sys.argv[2]))]
led.wait_committed(txs[-1], timeout=30)
print(" ".join(str(t) for t in txs), flush=True)
os._exit(0)  # no close(): the chunk stays live, as after a crash
"""


def _crash_after_writes(service: Path, n: int) -> list[TxId]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(service), str(n)], check=True, capture_output=True, text=True
    )
    return [TxId.parse(t) for t in out.stdout.split()]


def _live_chunk(service: Path) -> Path:
    live = [p for p in (service / "ledger").iterdir() if (c := ChunkName.parse(p.name)) and c.end is None]
    assert len(live) == 1
    return live[0]


def test_restart_after_crash_keeps_committed_entries(service: Path) -> None:
    txs = _crash_after_writes(service, 200)
    _live_chunk(service)
    led = open_ledger(service)
    try:
        for i, tx in enumerate(txs):
            entry = led.get_entry(tx)
            assert entry is not None
            assert entry.contents == f"entry {i}"
        assert led.view == txs[-1].view + 1
    finally:
        led.close()
    assert audit(find_target(service)).signatures >= 2


@pytest.mark.parametrize("cut", [1, 7, 60])
def test_torn_tail_is_dropped(service: Path, cut: int) -> None:
    txs = _crash_after_writes(service, 50)
    live = _live_chunk(service)
    data = live.read_bytes()
    # the last complete entry, written again but cut short: what a crash mid-write leaves
    last = parse_entry(data, _last_entry_offset(data))
    live.write_bytes(data + data[last.start : last.start + cut])
    led = open_ledger(service)
    try:
        assert all(led.status(tx) == TxStatus.COMMITTED for tx in txs)
        tx = led.append_entry("after the crash", "c")
        assert led.wait_committed(tx, timeout=10) == TxStatus.COMMITTED
    finally:
        led.close()
    report = audit(find_target(service))
    assert report.torn_tail_bytes == 0
    assert report.unsigned_tail == 0


def _last_entry_offset(data: bytes) -> int:
    off, last = 8, 8
    while off < len(data):
        last = off
        off = parse_entry(data, off).end
    return last


def test_missing_index_is_rebuilt(service: Path) -> None:
    led = open_ledger(service)
    txs = [led.append_entry(f"e{i}", "c") for i in range(300)]
    led.wait_committed(txs[-1], timeout=10)
    before = led.receipt(txs[123])
    led.close()
    for p in (service / "index").iterdir():
        p.unlink()
    led = open_ledger(service)
    try:
        after = led.receipt(txs[123])
        assert before is not None
        assert after is not None
        assert after.receipt == before.receipt
        assert [e.contents for e in led.entries("c", limit=5)] == [f"e{i}" for i in range(5)]
    finally:
        led.close()


def test_lying_index_is_detected_and_rebuilt(service: Path, caplog: pytest.LogCaptureFixture) -> None:
    led = open_ledger(service)
    txs = [led.append_entry(f"e{i}", "c") for i in range(100)]
    led.wait_committed(txs[-1], timeout=10)
    led.close()
    db = sqlite3.connect(service / "index" / "index.sqlite")
    db.execute("UPDATE tx SET leaf = ? WHERE kind = 2", (bytes(32),))
    db.commit()
    db.close()
    led = open_ledger(service)
    try:
        assert "rebuilding" in caplog.text
        r = led.receipt(txs[50])
        assert r is not None
        verify_json_receipt(r.receipt, led.service_cert, application_claims=r.application_claims)
    finally:
        led.close()


# the index of notarium before format 3: collection ids and tags in clear
FORMAT_2_SCHEMA = """
CREATE TABLE tx (seqno INTEGER PRIMARY KEY, view INTEGER NOT NULL, chunk INTEGER NOT NULL, offset INTEGER NOT NULL,
                 size INTEGER NOT NULL, kind INTEGER NOT NULL, collection TEXT, leaf BLOB NOT NULL);
CREATE INDEX tx_by_collection ON tx(collection, seqno) WHERE collection IS NOT NULL;
CREATE INDEX tx_signatures ON tx(seqno) WHERE kind = 2;
CREATE TABLE tile (idx INTEGER PRIMARY KEY, hash BLOB NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE tag (tag TEXT NOT NULL, seqno INTEGER NOT NULL, PRIMARY KEY (tag, seqno));
CREATE TABLE state (tbl TEXT NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL, seqno INTEGER NOT NULL,
                    PRIMARY KEY (tbl, key));
"""


def test_an_index_of_format_2_is_replaced_at_start(service: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An index written by an older notarium, complete and consistent but holding collection ids
    and tags in clear, is deleted and rebuilt when the ledger opens; lookups answer as before."""
    in_collection, in_tag = secrets.token_hex(8), secrets.token_hex(8)
    collection, tag = f"orders-{in_collection}", f"urgent-{in_tag}"
    markers = [in_collection.encode(), in_tag.encode()]
    led = open_ledger(service)
    txs = [led.append_entry(f"e{i}", collection, tags=tag if i % 2 else None) for i in range(20)]
    led.wait_committed(txs[-1], timeout=10)
    led.close()
    # the same ledger as format 2 indexed it (its rows, tiles, state and Merkle frontier)
    path = service / "index" / "index.sqlite"
    current = sqlite3.connect(path)
    rows = current.execute("SELECT seqno, view, chunk, offset, size, kind, collection, leaf FROM tx").fetchall()
    tiles = current.execute("SELECT idx, hash FROM tile").fetchall()
    state = current.execute("SELECT tbl, key, value, seqno FROM state").fetchall()
    meta = current.execute("SELECT key, value FROM meta WHERE key != 'format_version'").fetchall()
    current.close()
    for p in path.parent.iterdir():
        p.unlink()
    old = sqlite3.connect(path)
    old.executescript(FORMAT_2_SCHEMA)
    old.executemany(
        "INSERT INTO tx VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(*row[:6], None if row[6] is None else collection, row[7]) for row in rows],
    )
    old.executemany("INSERT INTO tag VALUES (?, ?)", [(tag, tx.seqno) for tx in txs[1::2]])
    old.executemany("INSERT INTO tile VALUES (?, ?)", tiles)
    old.executemany("INSERT INTO state VALUES (?, ?, ?, ?)", state)
    old.executemany("INSERT INTO meta VALUES (?, ?)", [("format_version", "2"), *meta])
    old.commit()
    old.close()
    assert files_holding(service, markers) == [f"index/index.sqlite: {m.decode()}" for m in markers]

    led = open_ledger(service)
    try:
        assert "index" in caplog.text
        assert "format 2" in caplog.text
        assert led.collections() == [collection]
        assert [e.txid for e in led.entries(collection)] == txs
        assert [e.txid for e in led.entries(collection, tag=tag)] == txs[1::2]
        assert led.get_entry(txs[7]) is not None
    finally:
        led.close()
    assert files_holding(service, markers) == []


def test_an_index_that_moves_an_entry_to_another_collection_is_caught(service: Path) -> None:
    """The index is not trusted: an entry a lookup finds is checked against the collection and
    tag asked for (the index's Merkle state, checked at start, does not cover its tokens)."""
    led = open_ledger(service)
    a = led.append_entry("in a", "a", tags="t")
    b = led.append_entry("in b", "b", tags="t")
    led.wait_committed(b, timeout=10)
    led.close()
    db = sqlite3.connect(service / "index" / "index.sqlite")
    (token_a,) = db.execute("SELECT collection FROM tx WHERE seqno = ?", (a.seqno,)).fetchone()
    db.execute("UPDATE tx SET collection = ? WHERE seqno = ?", (token_a, b.seqno))
    db.commit()
    db.close()
    led = open_ledger(service)
    try:
        with pytest.raises(
            ServiceError, match=f"lists entry {b} under another collection or tag; run `notarium reindex`"
        ):
            led.entries("a")
        with pytest.raises(ServiceError, match="another collection or tag"):
            led.latest_entry("a")
    finally:
        led.close()
    assert main(["reindex", str(service)]) == 0
    with open_ledger(service) as led:
        assert [e.txid for e in led.entries("a", tag="t")] == [a]


def test_reindex_command(service: Path, capsys: pytest.CaptureFixture[str]) -> None:
    led = open_ledger(service)
    tx = led.append_entry("x", "c")
    led.wait_committed(tx, timeout=10)
    led.close()
    assert main(["reindex", str(service)]) == 0
    assert "reindexed" in capsys.readouterr().out
    led = open_ledger(service)
    try:
        assert led.get_entry(tx) is not None
    finally:
        led.close()
    assert main(["reindex", str(service.parent / "nothing-here")]) == 1
