"""Durability acceptance test: SIGKILL a writer under load, restart, and check nothing was lost.

A child process (crash_child.py) appends entries from several threads and reports every
transaction that ``wait_committed`` said was Committed. The parent kills it with SIGKILL at a
random moment, reopens the ledger in-process (recovery needs no manual step) and checks that
every transaction ever reported Committed is still Committed, with the same contents and (for a
sample) the same write-set digest; that every TxId handed out but not reported is now Committed
or Invalid (never Pending or Unknown); and that the whole ledger passes ``notarium audit``.
Twenty rounds on the same directory cover restart after restart and ever-increasing views.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from notarium.auditing import audit, find_target
from notarium.errors import NotariumError
from notarium.ledger import EngineConfig, Ledger, init_service, open_ledger
from notarium.types import TxId, TxStatus

CHILD = Path(__file__).with_name("crash_child.py")
ROUNDS = 20
START_TIMEOUT = 30.0


@dataclass
class RoundOutput:
    """What one child reported before it was killed (complete lines only)."""

    view: int | None = None
    committed: dict[TxId, tuple[str, str]] = field(default_factory=dict)
    pending: dict[TxId, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    first_report: threading.Event = field(default_factory=threading.Event)


def _read_child(stream, out: RoundOutput) -> None:
    for line in stream:
        if not line.endswith("\n"):
            break  # a line cut by the kill was never reported
        fields = line[:-1].split("\t")
        if fields[0] == "ready":
            out.view = int(fields[1])
        elif fields[0] == "pending":
            out.pending[TxId.parse(fields[1])] = fields[2]
        elif fields[0] == "error" or len(fields) != 3:
            out.errors.append(line)
        else:
            out.committed[TxId.parse(fields[0])] = (fields[1], fields[2])
            out.first_report.set()
    out.first_report.set()


def _run_child(service: Path, seed: int, delay: float, log: Path) -> RoundOutput:
    out = RoundOutput()
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, str(CHILD), str(service), "--threads", "3", "--seed", str(seed)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert proc.stdout is not None
        reader = threading.Thread(target=_read_child, args=(proc.stdout, out), daemon=True)
        reader.start()
        try:
            started = out.first_report.wait(START_TIMEOUT)
            if started and proc.poll() is None:
                time.sleep(delay)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            reader.join(10)
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL, f"child exited on its own ({proc.returncode}):\n{log.read_text()}"
    assert started, f"child reported nothing within {START_TIMEOUT}s:\n{log.read_text()}"
    assert not out.errors, f"child reported errors: {out.errors[:5]}\n{log.read_text()}"
    assert out.committed, "child was killed before it reported a commit"
    return out


def _check_committed(ledger: Ledger, txid: TxId, contents: str, wsd: str, where: str) -> None:
    try:
        status = ledger.status(txid)
        assert status == TxStatus.COMMITTED, f"{where}: {txid} was reported Committed, now {status}"
        entry = ledger.get_entry(txid)
        assert entry is not None, f"{where}: committed {txid} has no entry"
        assert entry.contents == contents, f"{where}: {txid} has other contents"
        if wsd != "-":
            receipt = ledger.receipt(txid)
            assert receipt is not None, f"{where}: committed {txid} has no receipt"
            digest = receipt.receipt["leafComponents"]["writeSetDigest"]
            assert digest == wsd, f"{where}: {txid} has another write-set digest"
    except NotariumError as exc:
        pytest.fail(f"{where}: reading committed {txid} after recovery: {type(exc).__name__}: {exc}")


@pytest.mark.slow
def test_sigkill_under_load_loses_nothing_committed(tmp_path: Path) -> None:
    seed = int(os.environ.get("NOTARIUM_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    service = tmp_path / "crash-service"
    init_service(service)
    committed: dict[TxId, tuple[str, str]] = {}  # every transaction ever reported Committed
    last_view = 0
    last_seqno = 0
    outcomes = {TxStatus.COMMITTED: 0, TxStatus.INVALID: 0}  # of TxIds handed out, not reported
    for rnd in range(ROUNDS):
        delay = rng.uniform(0.2, 1.5)
        where = f"seed {seed}, round {rnd}, kill after {delay:.2f}s"
        out = _run_child(service, rng.randrange(1 << 30), delay, tmp_path / f"child-{rnd}.log")

        # Each start runs in a new, higher view; so does every TxId it hands out.
        assert out.view is not None, where
        assert out.view > last_view, where
        assert all(t.view == out.view for t in out.committed), where
        assert all(t.view == out.view for t in out.pending), where
        assert not committed.keys() & out.committed.keys(), f"{where}: a TxId was reported twice"
        committed.update(out.committed)

        ledger = open_ledger(service)  # recovery after SIGKILL: no manual step
        try:
            assert ledger.view > out.view, where
            last_view = ledger.view
            newest = max(out.committed)
            assert ledger.committed.seqno >= newest.seqno, where
            assert ledger.committed.seqno >= last_seqno, f"{where}: the committed prefix shrank"
            last_seqno = ledger.committed.seqno
            for txid, (contents, wsd) in committed.items():
                _check_committed(ledger, txid, contents, wsd, where)
            for txid, contents in out.pending.items():
                if txid in out.committed:
                    continue
                status = ledger.status(txid)
                assert status in (TxStatus.COMMITTED, TxStatus.INVALID), (
                    f"{where}: {txid} was handed out before the kill and is now {status}"
                )
                outcomes[status] += 1
                if status == TxStatus.COMMITTED:
                    _check_committed(ledger, txid, contents, "-", where)
        finally:
            ledger.close()

        report = audit(find_target(service))
        assert report.last_signed is not None, where
        assert report.last_signed.seqno >= last_seqno, where
        assert report.unsigned_tail == 0, where
        assert report.secrets_checked, where
    assert len(committed) >= ROUNDS
    print(f"crash test: seed {seed}, {len(committed)} reported committed, unreported TxIds after restart: {outcomes}")
    assert outcomes[TxStatus.INVALID] > 0, "no kill ever caught a transaction in flight"


def test_reopen_after_clean_close_keeps_everything(tmp_path: Path) -> None:
    """The non-crash baseline of the same checks, quick: close, reopen, everything is there."""
    service = tmp_path / "clean-service"
    init_service(service)
    ledger = open_ledger(service, EngineConfig(chunk_size=4_000))
    txids = [ledger.append_entry(f"entry {i}", "clean") for i in range(40)]
    assert all(ledger.wait_committed(t, timeout=10) == TxStatus.COMMITTED for t in txids)
    digests = {t: ledger.receipt(t).receipt["leafComponents"]["writeSetDigest"] for t in txids[::7]}
    view = ledger.view
    ledger.close()
    ledger = open_ledger(service)
    try:
        assert ledger.view > view
        for i, t in enumerate(txids):
            assert ledger.status(t) == TxStatus.COMMITTED
            assert ledger.get_entry(t).contents == f"entry {i}"
        for t, wsd in digests.items():
            assert ledger.receipt(t).receipt["leafComponents"]["writeSetDigest"] == wsd
    finally:
        ledger.close()
    audit(find_target(service))
