"""The engine's contract, over both storage backends: statuses, views, reads, receipts, chunking,
confidentiality, an external sequencer.

Every test runs twice (``backend``): on the embedded local files, and as the primary of a
replicated service on a real PostgreSQL server (docs/design/ha.md), where the log in PostgreSQL is
what makes a transaction Committed and the local files are the node's verified replica.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from leaks import files_holding, tables_holding
from notarium.auditing import audit, find_target
from notarium.cluster.node import NodeSettings, ReplicaNode, check_replica
from notarium.errors import LedgerError, ServiceError
from notarium.ledger import EngineConfig, Ledger, open_ledger
from notarium.ledger.storage.postgres import PostgresLog
from notarium.types import TxId, TxStatus
from notarium.verify import verify_cose_receipt, verify_json_receipt
from notarium.verify.keys import ec_public_key

Opener = Callable[..., Ledger]


@pytest.fixture(params=["files", "postgresql"])
def open_service(request: pytest.FixtureRequest) -> Iterator[Opener]:
    """``open_service(DIR, config=None)``: the ledger in DIR on this test's backend, ready to write."""
    if request.param == "files":
        yield open_ledger
        return
    dsn: str = request.getfixturevalue("pg_dsn")
    opened: list[Ledger] = []

    def open_replicated(directory: Path, config: EngineConfig | None = None) -> Ledger:
        store = PostgresLog(dsn)
        led = open_ledger(directory, replace(config or EngineConfig(), fsync=False), replica=store)
        check_replica(led, store)
        node = ReplicaNode(led, store, NodeSettings(led.node_id, "https://node.test", 5.0, 0.02))
        node.start()
        deadline = time.monotonic() + 20
        while not node.took_over.is_set():
            if time.monotonic() > deadline:
                raise AssertionError("the node did not take the lease")
            time.sleep(0.01)
        close = led.close

        def close_replicated() -> None:
            node.stop()
            try:
                close()
                node.release()
            finally:
                store.close()

        led.close = close_replicated  # type: ignore[method-assign]
        opened.append(led)
        return led

    yield open_replicated
    for led in opened:
        led.close()


@pytest.fixture
def ledger(service: Path, open_service: Opener) -> Iterator[Ledger]:
    led = open_service(service, EngineConfig(signature_interval_ms=5))
    yield led
    led.close()


def test_append_is_pending_then_committed(service: Path, open_service: Opener) -> None:
    led = open_service(service, EngineConfig(signature_interval_ms=300, signature_tx_count=10_000))
    try:
        tx = led.append_entry("hello")
        assert led.status(tx) == TxStatus.PENDING
        assert led.get_entry(tx) is None
        assert led.receipt(tx) is None
        assert led.wait_committed(tx, timeout=10) == TxStatus.COMMITTED
        assert led.committed.seqno > tx.seqno  # the covering signature comes after it
        entry = led.get_entry(tx)
        assert entry is not None
        assert entry.contents == "hello"
        assert entry.collection_id == "subledger:0"
    finally:
        led.close()


def test_statuses(ledger: Ledger) -> None:
    tx = ledger.append_entry("a")
    ledger.wait_committed(tx, timeout=10)
    assert ledger.status(tx) == TxStatus.COMMITTED
    assert ledger.status(TxId(tx.view + 1, tx.seqno)) == TxStatus.INVALID  # not the view it has
    assert ledger.status(TxId(tx.view, 10**9)) == TxStatus.UNKNOWN
    assert ledger.status(TxId(tx.view + 5, 10**9)) == TxStatus.UNKNOWN
    assert ledger.status(TxId(tx.view, 0)) == TxStatus.UNKNOWN
    assert ledger.status(TxId(tx.view - 1, 10**9)) == TxStatus.INVALID  # an ended view


def test_each_start_is_a_new_view(service: Path, open_service: Opener) -> None:
    views = []
    txs = []
    for i in range(3):
        led = open_service(service)
        tx = led.append_entry(f"run {i}")
        led.wait_committed(tx, timeout=10)
        views.append(led.view)
        txs.append(tx)
        led.close()
    assert views == sorted(views)
    assert len(set(views)) == 3
    led = open_service(service)
    try:
        for i, tx in enumerate(txs):
            assert led.status(tx) == TxStatus.COMMITTED
            entry = led.get_entry(tx)
            assert entry is not None
            assert entry.contents == f"run {i}"
    finally:
        led.close()


def test_collections_and_ranges(ledger: Ledger) -> None:
    txs = {c: [ledger.append_entry(f"{c}-{i}", c, tags=f"t{i}") for i in range(30)] for c in ("a", "b", "c")}
    ledger.wait_committed(txs["c"][-1], timeout=10)
    assert ledger.collections() == ["a", "b", "c"]
    got = ledger.entries("b", first=txs["b"][5].seqno, last=txs["b"][14].seqno)
    assert [e.contents for e in got] == [f"b-{i}" for i in range(5, 15)]
    assert [e.tags for e in got] == [f"t{i}" for i in range(5, 15)]
    assert len(ledger.entries("a", limit=7)) == 7
    # a byte bound: the entries up to the first that crosses it (the next page's first), no further
    sizes = [len(f"a-{i}") for i in range(30)]  # 3 bytes for a-0 .. a-9, then 4
    bounded = ledger.entries("a", max_bytes=sum(sizes[:12]))
    assert [e.contents for e in bounded] == [f"a-{i}" for i in range(13)]
    assert [e.contents for e in ledger.entries("a", max_bytes=1)] == ["a-0", "a-1"]  # one, and the next
    assert len(ledger.entries("a", max_bytes=1 << 20)) == 30
    latest = ledger.latest_entry("a")
    assert latest is not None
    assert latest.contents == "a-29"
    assert ledger.latest_entry("nope") is None
    sig = ledger.committed
    assert ledger.get_entry(sig) is None  # a signature transaction is not an entry


def test_receipts_verify_with_claims(ledger: Ledger) -> None:
    txs = [ledger.append_entry(f"entry {i}", "claims") for i in range(50)]
    ledger.wait_committed(txs[-1], timeout=10)
    service_cert = ledger.service_cert
    for tx in txs[::7]:
        r = ledger.receipt(tx)
        assert r is not None
        assert r.application_claims is not None
        result = verify_json_receipt(r.receipt, service_cert, application_claims=r.application_claims)
        assert result.leaf.commit_evidence.startswith(f"ce:{tx}:")
        cose = ledger.cose_receipt(tx)
        assert cose is not None
        verify_cose_receipt(cose, ec_public_key(service_cert), claims_digest=result.leaf.claims_digest)
    # a signature transaction has a receipt too (from the next signature), without claims
    led_sig = ledger.committed
    tx = ledger.append_entry("after")
    ledger.wait_committed(tx, timeout=10)
    r = ledger.receipt(led_sig)
    assert r is not None
    assert r.application_claims is None
    assert r.receipt["leafComponents"]["claimsDigest"] == "00" * 32


def test_private_contents_never_reach_disk_in_clear(tmp_path: Path, ledger: Ledger) -> None:
    secret = "the-plaintext-must-not-appear-4f1d"  # noqa: S105  (a marker, not a credential)
    tx = ledger.append_entry(secret, "secret-collection")
    ledger.wait_committed(tx, timeout=10)
    root = ledger.layout.root
    ledger.close()
    for f in (root / "ledger").iterdir():
        data = f.read_bytes()
        assert secret.encode() not in data
        assert b"secret-collection" not in data


def test_collection_ids_and_tags_never_reach_disk_in_clear(
    service: Path, open_service: Opener, request: pytest.FixtureRequest
) -> None:
    """On a private ledger the index finds entries by keyed tokens: the collection id and tags
    are in no file of the service directory (nor in PostgreSQL), and lookups work as before."""
    in_collection, in_tag = secrets.token_hex(8), secrets.token_hex(8)
    collection, tag = f"orders-{in_collection}", f"urgent-{in_tag}"
    markers = [in_collection.encode(), in_tag.encode()]
    led = open_service(service, EngineConfig(signature_interval_ms=5))
    try:
        txs = [led.append_entry(f"e{i}", collection, tags=f"{tag},x" if i % 3 == 0 else "x") for i in range(12)]
        elsewhere = led.append_entry("same tag, another collection", "other", tags=tag)
        assert led.wait_committed(elsewhere, timeout=10) == TxStatus.COMMITTED
        assert led.collections() == sorted([collection, "other"])
        assert [e.txid for e in led.entries(collection)] == txs
        assert [e.txid for e in led.entries(collection, tag=tag)] == txs[::3]
        assert [e.txid for e in led.entries(collection, tag=tag, limit=2)] == txs[:6:3]
        assert [e.txid for e in led.entries("other", tag=tag)] == [elsewhere]
        assert [e.txid for e in led.entries("other", tag="x")] == []
        latest = led.latest_entry(collection)
        assert latest is not None
        assert latest.txid == txs[-1]
    finally:
        led.close()
    assert files_holding(service, markers) == []
    if request.node.callspec.params["open_service"] == "postgresql":
        assert tables_holding(request.getfixturevalue("pg_dsn"), markers) == []
    with open_service(service) as led:  # reopened: the index answers the same
        assert led.collections() == sorted([collection, "other"])
        assert [e.txid for e in led.entries(collection, tag=tag)] == txs[::3]


def test_public_ledger_keeps_contents_in_clear(tmp_path: Path, open_service: Opener) -> None:
    from notarium.ledger import init_service

    d = tmp_path / "pub"
    init_service(d, ledger_type="Public")
    led = open_service(d)
    tx = led.append_entry("visible-contents-77", "pubcoll")
    led.wait_committed(tx, timeout=10)
    r = led.receipt(tx)
    assert r is not None
    verify_json_receipt(r.receipt, led.service_cert, application_claims=r.application_claims)
    led.close()
    assert any(b"visible-contents-77" in f.read_bytes() for f in (d / "ledger").iterdir())
    assert audit(find_target(d)).signatures >= 2


def test_signature_cadence_by_count_and_chunking(service: Path, open_service: Opener) -> None:
    led = open_service(service, EngineConfig(signature_interval_ms=10_000, signature_tx_count=10, chunk_size=4000))
    txs = [led.append_entry(f"{i:04d}" * 20, "c") for i in range(100)]
    assert led.wait_committed(txs[-1], timeout=10) == TxStatus.COMMITTED
    led.close()
    report = audit(find_target(service))
    assert report.signatures >= 1 + 100 // 10
    chunks = sorted((service / "ledger").iterdir())
    assert len(chunks) > 3
    assert all(c.name.endswith(".committed") for c in chunks)


def test_closed_ledger_refuses_writes(ledger: Ledger) -> None:
    ledger.close()
    with pytest.raises(LedgerError, match="closed"):
        ledger.append_entry("late")


def test_raw_write_sets_need_table_prefixes(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="public"):
        ledger.append({"not-public": {b"k": b"v"}})
    with pytest.raises(ValueError, match="private"):
        ledger.append({}, {"public:oops": {b"k": b"v"}})
    tx = ledger.append({"public:app.table": {b"k": b"v", b"gone": None}}, {"app.secret": {b"k2": b"v2"}})
    assert ledger.wait_committed(tx, timeout=10) == TxStatus.COMMITTED
    assert ledger.get_entry(tx) is None  # not an application entry, but it has a receipt
    r = ledger.receipt(tx)
    assert r is not None
    verify_json_receipt(r.receipt, ledger.service_cert)


def test_receipt_of_the_newest_signature_arrives_after_the_next(ledger: Ledger) -> None:
    tx = ledger.append_entry("x")
    ledger.wait_committed(tx, timeout=10)
    newest = ledger.committed
    assert ledger.receipt(newest) is None  # requests a signature that will cover it
    deadline = time.monotonic() + 10
    while ledger.committed == newest and time.monotonic() < deadline:
        time.sleep(0.005)
    r = ledger.receipt(newest)
    assert r is not None
    verify_json_receipt(r.receipt, ledger.service_cert)
    assert ledger.cose_receipt(newest) is not None


# --------------------------------------------------------------------------- an external sequencer


def test_without_auto_sign_only_sign_makes_signatures(service: Path, open_service: Opener) -> None:
    led = open_service(service, EngineConfig(auto_sign=False, signature_interval_ms=1, signature_tx_count=2))
    try:
        first = led.append_entry("a", seqno=led.last_sequenced + 1)
        second = led.append_entry("b")
        third = led.append_entry("c")  # past signature_tx_count: still no signature of its own
        time.sleep(0.05)  # many signature intervals
        assert led.status(first) == TxStatus.PENDING
        assert led.last_sequenced == third.seqno
        signature = led.sign(seqno=third.seqno + 1)
        assert signature == TxId(led.view, third.seqno + 1)
        assert led.wait_committed(third, timeout=10) == TxStatus.COMMITTED
        assert led.committed == signature
        assert led.status(second) == TxStatus.COMMITTED
        assert led.receipt(signature) is None  # the newest signature: proven by the next one, which
        time.sleep(0.05)  # the engine does not place on its own here
        assert led.committed == signature
        empty = led.sign()  # an empty batch: a signature over nothing new
        assert empty == TxId(led.view, signature.seqno + 1)
        assert led.wait_committed(empty, timeout=10) == TxStatus.COMMITTED
        assert led.receipt(signature) is not None
    finally:
        led.close()
    report = audit(find_target(service))
    assert report.unsigned_tail == 0
    assert report.last_signed == empty


def test_a_wrong_seqno_is_refused_and_appends_nothing(service: Path, open_service: Opener) -> None:
    led = open_service(service, EngineConfig(auto_sign=False))
    try:
        expected = led.last_sequenced + 1
        with pytest.raises(LedgerError, match=f"ledger is at {expected}"):
            led.append_entry("skips one", seqno=expected + 1)
        with pytest.raises(LedgerError, match=f"ledger is at {expected}"):
            led.append({"public:t": {b"k": b"v"}}, seqno=expected - 1)
        with pytest.raises(LedgerError, match=f"ledger is at {expected}"):
            led.sign(seqno=expected + 1)
        assert led.last_sequenced + 1 == expected
        tx = led.append_entry("fits", seqno=expected)
        with pytest.raises(LedgerError, match=f"ledger is at {expected + 1}"):
            led.sign(seqno=expected + 5)
        assert tx.seqno == expected
    finally:
        led.close()


def test_close_signs_what_an_external_sequencer_left_pending(service: Path, open_service: Opener) -> None:
    led = open_service(service, EngineConfig(auto_sign=False))
    tx = led.append_entry("left pending")
    assert led.status(tx) == TxStatus.PENDING
    led.close()
    led = open_service(service)
    try:
        assert led.status(tx) == TxStatus.COMMITTED
    finally:
        led.close()


def test_a_directory_in_use_is_refused(service: Path, open_service: Opener) -> None:
    led = open_service(service)
    try:
        with pytest.raises(ServiceError, match="in use by another notarium process"):
            open_ledger(service)
    finally:
        led.close()
