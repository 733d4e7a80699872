"""The engine's signed roots and consistency proofs (Ledger.signed_root, Ledger.consistency).

Signatures are placed by hand (``auto_sign=False``) so that the test knows every signature
transaction. Proofs between many pairs of signatures verify with ``verify_extension``, across
restarts (new views) too; anything that is not a committed signature transaction is refused; and
two copies of one service that diverge are caught as a fork.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from notarium.errors import LedgerError, VerificationError
from notarium.ledger import EngineConfig, Ledger, open_ledger
from notarium.types import TxId, TxStatus
from notarium.verify import (
    SignedRoot,
    proof_from_json,
    proof_to_json,
    verify_extension,
    verify_json_receipt,
    verify_signed_root,
)

MANUAL = EngineConfig(auto_sign=False, fsync=False)


def sign(ledger: Ledger) -> TxId:
    txid = ledger.sign()
    assert ledger.wait_committed(txid, timeout=10) == TxStatus.COMMITTED
    return txid


def grow(ledger: Ledger, batches: list[int], tag: str = "") -> list[TxId]:
    """Append ``k`` entries and a signature for each ``k`` in ``batches``; the signatures' TxIds."""
    sigs = []
    for i, k in enumerate(batches):
        for j in range(k):
            ledger.append_entry(f"{tag}batch {i} entry {j}", "c")
        sigs.append(sign(ledger))
    return sigs


@pytest.fixture
def manual(service: Path) -> Iterator[Ledger]:
    led = open_ledger(service, MANUAL)
    yield led
    led.close()


def test_newest_signed_root(manual: Ledger) -> None:
    sig = grow(manual, [3])[-1]
    sr = manual.signed_root()
    assert sr.txid == sig == manual.committed
    assert sr.tree_size == sig.seqno
    verify_signed_root(sr, manual.service_cert)
    assert SignedRoot.from_json(sr.to_json()) == sr
    assert manual.signed_root(sig) == sr
    # the root is the one receipts prove against: the receipt of the last entry before it
    # (covered by this signature) folds to it
    receipt = manual.receipt(TxId(sig.view, sig.seqno - 1))
    assert receipt is not None
    result = verify_json_receipt(receipt.receipt, manual.service_cert, application_claims=receipt.application_claims)
    assert result.root == sr.root


def test_what_is_not_a_committed_signature_is_refused(manual: Ledger) -> None:
    entry = manual.append_entry("an entry", "c")
    sig = sign(manual)
    pending = manual.append_entry("not signed yet", "c")
    assert manual.status(pending) == TxStatus.PENDING
    cases = {
        entry: "not a signature transaction",
        pending: "not a committed transaction",
        TxId(sig.view + 1, sig.seqno): "not a committed transaction",  # Invalid: not the view it has
        TxId(sig.view - 1, sig.seqno): "not a committed transaction",
        TxId(sig.view, 10**9): "not a committed transaction",
        TxId(sig.view, 0): "not a committed transaction",
    }
    for txid, message in cases.items():
        with pytest.raises(LedgerError, match=message):
            manual.signed_root(txid)
        with pytest.raises(LedgerError, match=message):
            manual.consistency(txid)
        with pytest.raises(LedgerError, match=message):
            manual.consistency(sig, txid)
    first = manual.signed_root()
    later = grow(manual, [2])[-1]
    with pytest.raises(LedgerError, match="comes after"):
        manual.consistency(later, first.txid)
    old, new, proof = manual.consistency(first.txid, later)
    verify_extension(old, new, proof, manual.service_cert)


def test_proofs_between_many_pairs(manual: Ledger) -> None:
    # batch sizes that cross the 256-leaf tiles the tree store keeps, and sizes around powers of two
    sigs = [manual.signed_root().txid, *grow(manual, [0, 1, 2, 5, 60, 63, 64, 120, 1, 250, 7, 410, 0, 31])]
    assert sigs[-1].seqno > 1024
    roots = {s: manual.signed_root(s) for s in sigs}
    cert = manual.service_cert
    for i, a in enumerate(sigs):
        for b in sigs[i:]:
            old, new, proof = manual.consistency(a, b)
            assert (old, new) == (roots[a], roots[b])
            verify_extension(old, new, proof, cert)
            assert (proof == []) == (a == b)
            if a != b:
                assert proof_from_json(proof_to_json(proof)) == proof
                with pytest.raises(VerificationError):
                    verify_extension(new, old, proof, cert)  # the other way round is a rollback
        old, newest, proof = manual.consistency(a)
        assert newest == roots[sigs[-1]]
        verify_extension(old, newest, proof, cert)


def test_proofs_across_restarts(service: Path) -> None:
    """A client keeps signed roots (as JSON) from each run; later runs prove they extend them all."""
    kept: list[dict[str, object]] = []
    for run, batches in enumerate([[1, 3], [300], [2, 0, 9], [40]]):
        led = open_ledger(service, MANUAL)
        try:
            if run == 0:
                kept.append(led.signed_root().to_json())  # the genesis signature of init
            for sig in grow(led, batches, tag=f"run {run} "):
                kept.append(led.signed_root(sig).to_json())
            views = {TxId.parse(str(k["transactionId"])).view for k in kept}
            assert len(views) == run + 2  # init's view and one per run
            newest = led.signed_root()
            for obj in kept:
                old = SignedRoot.from_json(obj)
                got_old, got_new, proof = led.consistency(old.txid)
                assert got_old == old  # the same signed root as in its own run
                assert got_new == newest
                verify_extension(old, newest, proof, led.service_cert)
        finally:
            led.close()


def test_a_diverged_copy_is_a_fork(tmp_path: Path, service: Path) -> None:
    """Two copies of one service that go different ways: both sign with the service key, and a
    client holding one's signed root detects the other as a fork."""
    led = open_ledger(service, MANUAL)
    common = grow(led, [4])[-1]
    led.close()
    copy = tmp_path / "copy"
    shutil.copytree(service, copy)
    a, b = open_ledger(service, MANUAL), open_ledger(copy, MANUAL)
    try:
        sig_a, sig_b = grow(a, [5, 3], tag="A "), grow(b, [5, 3], tag="B ")
        assert sig_a == sig_b  # the same TxIds ...
        ra, rb = a.signed_root(sig_a[0]), b.signed_root(sig_b[0])
        assert ra.root != rb.root  # ... over different histories
        cert = a.service_cert
        verify_signed_root(rb, cert)  # both are genuinely signed by the service
        for ledger in (a, b):
            old, new, proof = ledger.consistency(common)
            verify_extension(old, new, proof, cert)  # each extends the common past
        with pytest.raises(VerificationError) as info:
            verify_extension(ra, rb, [], cert)
        assert info.value.check == "fork"
        _, newer_b, proof_b = b.consistency(sig_b[0], sig_b[1])
        with pytest.raises(VerificationError) as info:
            verify_extension(ra, newer_b, proof_b, cert)
        assert info.value.check == "consistency"
    finally:
        a.close()
        b.close()
