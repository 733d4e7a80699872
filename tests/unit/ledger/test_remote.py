"""The engine link (notarium.ledger.remote): a real ledger behind an EngineService thread, the
RemoteLedger on an asyncio loop, a real socketpair between them.

The front sequences: TxIds it hands out at once must be exactly the ones the engine writes,
signatures included; the engine refuses a seqno it did not expect, and the front then takes no
more writes; reads and errors cross the link; a vanished engine fails calls instead of hanging.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from notarium.errors import LedgerError, ServiceError
from notarium.ledger import EngineConfig, Ledger, open_ledger
from notarium.ledger.engine_service import EngineService
from notarium.ledger.remote import RemoteLedger
from notarium.types import TxId, TxStatus
from notarium.verify import tables

T = TypeVar("T")


@dataclass
class Link:
    ledger: Ledger
    service: EngineService
    front_sock: socket.socket

    def run(self, body: Callable[[RemoteLedger], Awaitable[T]]) -> T:
        async def main() -> T:
            remote = await RemoteLedger.connect(self.front_sock)
            try:
                return await body(remote)
            finally:
                await remote.aclose()

        return asyncio.run(main())


def link(service_dir: Path, **config: float) -> Iterator[Link]:
    ledger = open_ledger(service_dir, EngineConfig(auto_sign=False, **config))  # type: ignore[arg-type]
    ours, theirs = socket.socketpair()
    service = EngineService(ledger, ours)
    service.start()
    try:
        yield Link(ledger, service, theirs)
    finally:
        service.stop()
        ledger.close()


@pytest.fixture
def fast(service: Path) -> Iterator[Link]:
    """Signatures after 5 transactions or 20 ms."""
    yield from link(service, signature_interval_ms=20, signature_tx_count=5)


async def committed(remote: RemoteLedger, txid: TxId, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while remote.committed.seqno < txid.seqno:
            await asyncio.sleep(0.005)


def test_promised_txids_are_the_ones_written_signatures_included(fast: Link) -> None:
    async def body(remote: RemoteLedger) -> list[TxId]:
        txids = [await remote.append_entry(f"entry {i}", "c", None) for i in range(12)]
        await committed(remote, txids[-1])
        return txids

    txids = fast.run(body)
    first = txids[0].seqno
    # five entries, a signature, five entries, a signature, two entries (then the 20 ms signature)
    assert [t.seqno - first for t in txids] == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 12, 13]
    assert {t.view for t in txids} == {fast.ledger.view}
    for i, txid in enumerate(txids):
        entry = fast.ledger.get_entry(txid)
        assert entry is not None, txid
        assert (entry.contents, entry.collection_id) == (f"entry {i}", "c")
    for gap in (first + 5, first + 11, first + 14):
        assert fast.ledger.get_entry(TxId(fast.ledger.view, gap)) is None  # the signatures
        assert fast.ledger.status(TxId(fast.ledger.view, gap)) == TxStatus.COMMITTED
    assert fast.ledger.committed.seqno == first + 14


def test_reads_and_notices_cross_the_link(fast: Link) -> None:
    async def body(remote: RemoteLedger) -> None:
        seen: list[int] = []
        remote.add_commit_listener(seen.append)
        txid = await remote.append_entry("read me", "reads", "t1,t2")
        assert await remote.status(txid) == TxStatus.PENDING
        await committed(remote, txid)
        assert seen
        assert seen[-1] >= txid.seqno
        assert remote.healthy
        assert await remote.status(txid) == TxStatus.COMMITTED
        status, entry = await remote.lookup_entry(txid)
        assert status == TxStatus.COMMITTED
        assert entry is not None
        assert entry.contents == "read me"
        latest = await remote.latest_entry("reads")
        assert latest is not None
        assert latest.txid == txid
        assert [e.txid for e in await remote.entries("reads", 1, txid.seqno, limit=10, tag="t2")] == [txid]
        assert "reads" in await remote.collections()
        receipt = await remote.receipt(txid)
        assert receipt is not None
        assert receipt.txid == txid
        assert await remote.cose_receipt(txid)
        users = await remote.state(tables.USERS)
        assert len(users) == 1
        key = next(iter(users))
        assert await remote.state_get(tables.USERS, key) == users[key]
        metrics = await remote.metrics()
        assert metrics.committed >= txid.seqno
        assert metrics.ledger_bytes > 0

    fast.run(body)


def test_engine_errors_cross_the_link(fast: Link) -> None:
    async def body(remote: RemoteLedger) -> None:
        with pytest.raises(LedgerError, match="unknown engine call"):
            await remote.notice("nobody listens")  # this service was started without a control hook
        with pytest.raises(ValueError, match="public table names"):
            await remote.append({"no-prefix": {b"k": b"v"}})  # refused before a seqno is promised
        txid = await remote.append({tables.USERS: {b"someone": b"{}"}})
        await committed(remote, txid)
        assert await remote.status(txid) == TxStatus.COMMITTED

    fast.run(body)


def test_a_refused_seqno_stops_writes(fast: Link) -> None:
    async def body(remote: RemoteLedger) -> None:
        fast.ledger.append_entry("behind the front's back")  # the front's next seqno is now taken
        await remote.append_entry("refused", "c", None)
        async with asyncio.timeout(10):
            while remote.broken is None:
                await asyncio.sleep(0.005)
        assert "the sequencer expected seqno" in remote.broken
        assert not remote.healthy
        with pytest.raises(LedgerError, match="takes no more writes"):
            await remote.append_entry("after", "c", None)
        assert len(await remote.state(tables.USERS)) == 1  # reads still work

    fast.run(body)


def test_unsigned_limit_holds_appends_until_a_commit(service: Path) -> None:
    for slow in link(service, signature_interval_ms=300, signature_tx_count=1000, max_unsigned=3):

        async def body(remote: RemoteLedger) -> None:
            start = remote.committed.seqno
            early = [await remote.append_entry(str(i), "c", None) for i in range(3)]
            held = asyncio.ensure_future(remote.append_entry("held", "c", None))
            await asyncio.sleep(0.1)
            assert not held.done()  # 4 unsigned would pass max_unsigned=3 (counted from the commit)
            txid = await asyncio.wait_for(held, 10)  # the 300 ms signature commits, making room
            assert remote.committed.seqno > start
            assert txid.seqno == early[-1].seqno + 2  # after the signature that made room

        slow.run(body)


def test_a_vanished_engine_fails_calls(fast: Link) -> None:
    async def body(remote: RemoteLedger) -> None:
        fast.service.stop()
        async with asyncio.timeout(10):
            await remote.closed.wait()
        assert not remote.healthy
        with pytest.raises(ServiceError, match="not running"):
            await remote.status(TxId(1, 1))
        with pytest.raises(ServiceError):
            await remote.append_entry("lost", "c", None)

    fast.run(body)


def test_the_newest_signature_gets_its_receipt(fast: Link) -> None:
    """Its proof needs a later signature: the front places one when asked, once."""

    async def body(remote: RemoteLedger) -> None:
        txid = await remote.append_entry("x", "c", None)
        await committed(remote, txid)
        newest = remote.committed
        assert await remote.receipt(newest) is None
        assert await remote.cose_receipt(newest) is None  # asked again: no second signature
        async with asyncio.timeout(10):
            while (receipt := await remote.receipt(newest)) is None:
                await asyncio.sleep(0.005)
        assert receipt.txid == newest
        assert remote.committed.seqno == newest.seqno + 1
        assert await remote.cose_receipt(newest)

    fast.run(body)


def test_rekey_and_share_reissue_cross_the_link(fast: Link) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()

    async def body(remote: RemoteLedger) -> None:
        before = await remote.append_entry("before", "c", None)
        with pytest.raises(ValueError, match="between 1 and 1"):
            await remote.reissue_recovery_shares({"m": pem}, 2)  # refused before a seqno is promised
        issued = await remote.reissue_recovery_shares({"m": pem}, 1)
        rekeyed = await remote.rekey()
        after = await remote.append_entry("after", "c", None)
        assert [issued.seqno, rekeyed.seqno, after.seqno] == [before.seqno + 1, before.seqno + 2, before.seqno + 3]
        await committed(remote, after)
        record = await remote.recovery_shares()
        assert record is not None
        assert list(record.members) == ["m"]
        assert record.ledger_secret_start == rekeyed.seqno + 1
        assert [e.contents for e in await remote.entries("c", 1, after.seqno, limit=10, tag=None)] == [
            "before",
            "after",
        ]

    fast.run(body)
    assert fast.ledger.healthy
    assert len(fast.ledger.ledger_secret_starts) == 2
