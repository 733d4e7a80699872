"""Replicated nodes over a real PostgreSQL server: following, takeover, fencing, tampering."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import psycopg
import pytest

from nodes import new_node
from notarium.cluster.node import RETRY_MAX_S, ReplicaNode
from notarium.errors import LedgerError, NotPrimaryError, ServiceError
from notarium.ledger import EngineConfig
from notarium.ledger.remote import Role
from notarium.types import TxStatus
from notarium.verify import tables, verify_json_receipt
from pg import PgCluster

from .conftest import TTL, Cluster, wait_for


def test_first_node_seeds_the_log_and_a_second_follows(cluster: Cluster) -> None:
    a, la = cluster.start(cluster.service)
    wait_for(a.took_over.is_set, what="the first node to take the lease")
    assert la.is_primary
    assert la.view > 1  # a new view, past the one init wrote the genesis in
    txids = [la.append_entry(f"entry {i}", "c1") for i in range(20)]
    wait_for(lambda: la.status(txids[-1]) == TxStatus.COMMITTED, what="commit")
    _, lb = cluster.start(cluster.admit(la, new_node(cluster.service, cluster.root / "n1")))
    wait_for(lambda: lb.committed.seqno >= txids[-1].seqno, what="the follower to catch up")
    assert not lb.is_primary
    with pytest.raises(NotPrimaryError):
        lb.append_entry("not here")
    for txid in txids:
        assert lb.status(txid) == TxStatus.COMMITTED
        assert lb.get_entry(txid) == la.get_entry(txid)
    receipt = lb.receipt(txids[3])
    assert receipt is not None
    verify_json_receipt(receipt.receipt, la.service_cert, application_claims=receipt.application_claims)


def test_takeover_after_the_primary_dies_drops_its_unsigned_tail(cluster: Cluster) -> None:
    a, la = cluster.start(cluster.service, EngineConfig(auto_sign=False, fsync=False))
    wait_for(a.took_over.is_set, what="the first primary")
    committed = [la.append_entry(f"kept {i}") for i in range(5)]
    la.sign()
    wait_for(lambda: la.status(committed[-1]) == TxStatus.COMMITTED, what="commit")
    b, lb = cluster.start(cluster.admit(la, new_node(cluster.service, cluster.root / "n1")))
    wait_for(lambda: lb.committed.seqno >= committed[-1].seqno, what="catch-up")
    lost = [la.append_entry(f"unsigned {i}") for i in range(3)]  # never signed: never in the log
    assert lb.status(lost[0]) == TxStatus.PENDING  # the follower cannot know yet
    a.stop()  # the primary "dies": no more lease renewals
    wait_for(b.took_over.is_set, timeout=10 * TTL + 5, what="the follower to take over")
    assert lb.is_primary
    assert lb.view > la.view
    for txid in committed:
        assert lb.status(txid) == TxStatus.COMMITTED
    for txid in lost:  # a later view has a verified signature: these can never commit
        assert lb.status(txid) == TxStatus.INVALID
    after = lb.append_entry("in the new view")
    wait_for(lambda: lb.status(after) == TxStatus.COMMITTED, what="a commit in the new view")
    assert after.view == lb.view


def test_a_deposed_primary_cannot_write(cluster: Cluster) -> None:
    a, la = cluster.start(cluster.service, EngineConfig(auto_sign=False, fsync=False))
    wait_for(a.took_over.is_set, what="the first primary")
    b, lb = cluster.start(cluster.admit(la, new_node(cluster.service, cluster.root / "n1")))
    wait_for(lambda: lb.committed.seqno >= la.committed.seqno, what="catch-up")
    a.stop()  # paused: stops renewing, but still believes it is the primary
    wait_for(b.took_over.is_set, timeout=10 * TTL + 5, what="takeover")
    wait_for(lambda: lb.committed.view == lb.view, what="the new view's first signature")
    store = cluster.nodes[1][2]
    before = store.last_seqno()
    stale = la.append_entry("from the deposed primary")
    la.sign()
    wait_for(lambda: not la.healthy, what="the deposed primary's write to be fenced")
    assert store.last_seqno() == before  # nothing of it reached the log
    assert lb.status(stale) != TxStatus.COMMITTED
    with pytest.raises(LedgerError):
        la.append_entry("again")


def _sql(dsn: str, statement: str, *params: object) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement, params)


@pytest.mark.parametrize("tamper", ["change", "delete"])
def test_tampering_in_postgresql_is_detected_by_a_follower(cluster: Cluster, tamper: str) -> None:
    a, la = cluster.start(cluster.service)
    wait_for(a.took_over.is_set, what="the first primary")
    txids = [la.append_entry(f"entry {i}") for i in range(10)]
    wait_for(lambda: la.status(txids[-1]) == TxStatus.COMMITTED, what="commit")
    target = txids[4].seqno
    if tamper == "change":  # one byte of an entry's contents
        _sql(
            cluster.dsn,
            "UPDATE notarium.tx SET data = overlay(data placing '\\x00'::bytea from 60 for 1) WHERE seqno = %s",
            target,
        )
    else:
        _sql(cluster.dsn, "DELETE FROM notarium.tx WHERE seqno = %s", target)
    b, lb = cluster.start(cluster.admit(la, new_node(cluster.service, cluster.root / "n1")))
    wait_for(lambda: b.failure is not None, what="the follower to detect it")
    assert lb.committed.seqno < target  # nothing at or after the tampered row was taken
    assert "failed verification" in (b.failure or "")
    a.stop()
    b.took_over.wait(4 * TTL)
    assert not b.took_over.is_set()  # a node that saw tampering never takes the lease


def test_a_retired_primary_hands_the_lease_over(cluster: Cluster) -> None:
    a, la = cluster.start(cluster.service)
    wait_for(a.took_over.is_set, what="the first primary")
    b, lb = cluster.start(cluster.admit(la, new_node(cluster.service, cluster.root / "n1")))
    info = json.loads(la.state_get(tables.NODES_INFO, la.node_id.encode()) or b"{}")
    la.append({tables.NODES_INFO: {la.node_id.encode(): json.dumps({**info, "status": "Retired"}).encode()}})
    la.sign()
    wait_for(a.deposed.is_set, what="the retired primary to step down")
    wait_for(b.took_over.is_set, what="the trusted follower to take over")  # at once: the lease was released
    assert lb.is_primary


def test_a_rekey_reaches_the_followers_through_the_log(cluster: Cluster) -> None:
    a, la = cluster.start(cluster.service)
    wait_for(a.took_over.is_set, what="the first primary")
    n1 = cluster.admit(la, new_node(cluster.service, cluster.root / "n1"))
    b, lb = cluster.start(n1)
    before = la.append_entry("under the first secret")
    wait_for(lambda: lb.status(before) == TxStatus.COMMITTED, what="the follower to catch up")
    rekey = la.rekey()
    after = [la.append_entry(f"under the second secret {i}") for i in range(5)]
    wait_for(lambda: lb.committed.seqno >= after[-1].seqno, what="the follower to pass the rekey")
    assert b.failure is None
    assert lb.ledger_secret_starts == la.ledger_secret_starts == [1, rekey.seqno + 1]
    for i, tx in enumerate(after):  # private entries: readable only with the new secret
        entry = lb.get_entry(tx)
        assert entry is not None
        assert entry.contents == f"under the second secret {i}"
    # the follower sealed the new secret: after a restart it still reads what it verified
    (stopped,) = [n for n in cluster.nodes if n[1] is lb]
    cluster.nodes.remove(stopped)
    b.stop()
    lb.close()
    stopped[2].close()
    _, again = cluster.start(n1)
    entry = again.get_entry(after[-1])
    assert entry is not None
    assert entry.contents == "under the second secret 4"


def test_a_node_not_trusted_at_a_rekey_cannot_follow_past_it(cluster: Cluster) -> None:
    a, la = cluster.start(cluster.service)
    wait_for(a.took_over.is_set, what="the first primary")
    la.rekey()
    after = la.append_entry("under the second secret")
    wait_for(lambda: la.status(after) == TxStatus.COMMITTED, what="commit")
    # a node whose directory was made before the rekey (and admitted after it) lacks the new secret
    late = cluster.admit(la, new_node(cluster.service, cluster.root / "late"))
    b, lb = cluster.start(late)
    wait_for(lambda: b.failure is not None, what="the follower to stop at the rekey")
    assert "no ledger secret for this node" in (b.failure or "")
    assert lb.committed.seqno < after.seqno


def test_rekeying_without_a_courier_is_refused(cluster: Cluster) -> None:
    a, la = cluster.start(cluster.service, courier=False)
    wait_for(a.took_over.is_set, what="the first primary")
    before = la.last_sequenced
    with pytest.raises(LedgerError, match="new secret"):
        la.rekey()
    assert la.last_sequenced == before


# --- PostgreSQL unreachable (docs/design/ha.md) -----------------------------------------------------


def test_nodes_outlive_their_postgresql_retrying_with_backoff_and_rejoin(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL crashed: neither node's thread ends; each says it cannot reach the log (its role:
    not ready) and retries, logging each attempt, waiting longer each time (up to RETRY_MAX_S);
    once PostgreSQL is back both rejoin, one of them primary, and the log goes on."""
    caplog.set_level(logging.WARNING, logger="notarium.cluster")
    with PgCluster.create() as server:
        cluster = Cluster(tmp_path, server.dsn())
        try:
            a, la = cluster.start(cluster.service)
            wait_for(a.took_over.is_set, what="the first primary")
            b, lb = cluster.start(cluster.admit(la, new_node(cluster.service, cluster.root / "n1")))
            before = la.append_entry("before the crash")
            wait_for(lambda: lb.status(before) == TxStatus.COMMITTED, what="the follower to catch up")
            roles: dict[str, list[Role]] = {"a": [], "b": []}
            a.on_role, b.on_role = roles["a"].append, roles["b"].append
            server.stop("immediate")
            retries = re.compile(r"cannot be reached: .*; retrying in ([0-9.]+) s \(attempt (\d+),")

            def logged() -> dict[int, float]:
                """Retry delays by attempt, as logged (either node's: both follow the same schedule)."""
                return {int(m[2]): float(m[1]) for r in caplog.records if (m := retries.search(r.getMessage()))}

            wait_for(lambda: len(logged()) >= 6, what="six logged attempts")
            for node, name in ((a, "a"), (b, "b")):
                assert node.store_error is not None
                assert roles[name][-1].store_reachable is False
            delays = logged()
            assert min(delays) == 1
            assert max(delays.values()) <= RETRY_MAX_S
            assert delays[max(delays)] > delays[1]  # the waits grow (jitter keeps each within [base/2, base])
            server.start()
            wait_for(lambda: b.store_error is None, timeout=30, what="the backup to rejoin")
            assert roles["b"][-1].store_reachable
            assert "reachable again" in caplog.text
            # the primary kept its lease (renewed in time) or lost it (serve starts it again as a follower)
            wait_for(lambda: a.deposed.is_set() or a.store_error is None, timeout=30, what="the primary to rejoin")
            if a.deposed.is_set():
                wait_for(b.took_over.is_set, timeout=30, what="the backup to take over")
            primary = lb if a.deposed.is_set() else la
            after = primary.append_entry("after the crash")
            wait_for(lambda: primary.status(after) == TxStatus.COMMITTED, timeout=30, what="a commit after it")
            assert primary.status(before) == TxStatus.COMMITTED
        finally:
            cluster.close()


def test_a_log_that_lost_committed_transactions_stops_a_follower_not_its_process(cluster: Cluster) -> None:
    """PostgreSQL back from an old backup: a starting node refuses it; a node already running (its
    replication thread checks the log again after every outage) stops following and says why."""
    a, la = cluster.start(cluster.service)
    wait_for(a.took_over.is_set, what="the first primary")
    b, lb = cluster.start(cluster.admit(la, new_node(cluster.service, cluster.root / "n1")))
    txids = [la.append_entry(f"entry {i}") for i in range(5)]
    wait_for(lambda: lb.committed.seqno >= txids[-1].seqno, what="the follower to catch up")
    a.stop()
    b.stop()
    _sql(cluster.dsn, "DELETE FROM notarium.tx WHERE seqno >= %s", txids[0].seqno)  # restored from an old backup
    store = cluster.nodes[1][2]
    with pytest.raises(ServiceError, match="lost committed transactions"):
        ReplicaNode(lb, store, b.settings).check(refuse=True)
    again = ReplicaNode(lb, store, b.settings)  # the thread of a node that reconnects
    again.start()
    try:
        wait_for(lambda: again.failure is not None, what="the follower to find it")
        assert "lost committed transactions" in (again.failure or "")
        assert again.role().following is False
        again.took_over.wait(4 * TTL)
        assert not again.took_over.is_set()  # and it never takes the lease
        assert not again.deposed.is_set()
    finally:
        again.stop()
