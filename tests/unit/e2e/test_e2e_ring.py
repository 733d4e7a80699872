"""The key ring (notarium.client.e2e.ring): which grants count, which key is current, who the
readers are, and the grants a writer appends to add a reader or rotate; fed grant entries as a
ledger (or an operator who writes into it) would list them."""

from __future__ import annotations

from typing import Any

import pytest

from notarium.client.e2e import crypto
from notarium.client.e2e.keys import ReaderKey
from notarium.client.e2e.ring import KeyConflictError, KeyRing, new_key_grants, reader_grants
from notarium.types import TxId

C = "secrets"


class Ledger:
    """The grant collection: entries in order, and a ring per reader fed from it."""

    def __init__(self) -> None:
        self.entries: list[tuple[TxId, str]] = []

    def append(self, grants: list[str]) -> None:
        for g in grants:
            self.entries.append((TxId(2, len(self.entries) + 1), g))

    def ring(self, me: ReaderKey, writers: tuple[str, ...] = ()) -> KeyRing:
        ring = KeyRing(C, me, writers)
        for txid, text in self.entries:
            ring.add(txid, text)
        return ring


def _grant(writer: ReaderKey, to: list[ReaderKey], **fields: Any) -> tuple[crypto.DataKey, str]:
    key = crypto.DataKey.generate()
    payload = {
        "type": "notarium-e2e-grant",
        "v": 1,
        "collection": C,
        "kid": key.kid,
        "epoch": 1,
        "previous": None,
        "readers": [
            {"id": r.reader_id, "enc": r.card.enc.as_dict(private=False), "key": crypto.wrap(key, r.card.enc, C)}
            for r in to
        ],
    } | fields
    return key, crypto.sign_grant(payload, writer)


def test_first_key_then_rotation_then_a_new_reader_gets_the_whole_past() -> None:
    alice, bob, carol = ReaderKey.generate(), ReaderKey.generate(), ReaderKey.generate()
    ledger = Ledger()
    first, grants = new_key_grants(ledger.ring(alice))
    ledger.append(grants)
    ring = ledger.ring(alice)
    state = ring.current()
    assert state is not None
    assert (state.kid, state.epoch, state.previous) == (first.kid, 1, None)
    assert ring.data_key(first.kid) == first
    assert list(ring.readers()) == [alice.reader_id]

    grants, missing = reader_grants(ring, bob.card)
    assert missing == []
    assert len(grants) == 1
    ledger.append(grants)
    assert reader_grants(ledger.ring(alice), bob.card) == ([], [])  # nothing twice

    second, grants = new_key_grants(ledger.ring(alice), remove=[bob.reader_id])
    ledger.append(grants)
    ring = ledger.ring(alice)
    assert ring.current() is not None
    assert ring.current().kid == second.kid
    assert ring.keys[second.kid].epoch == 2
    assert ring.keys[second.kid].previous == first.kid
    assert list(ring.readers()) == [alice.reader_id]

    as_bob = ledger.ring(bob, writers=(alice.writer_id,))
    assert as_bob.data_key(first.kid) == first  # what Bob had, Bob keeps
    assert as_bob.data_key(second.kid) is None  # the key after his removal never reached him

    grants, _ = reader_grants(ledger.ring(alice), carol.card)
    assert len(grants) == 2  # every past key, nothing rewritten
    ledger.append(grants)
    as_carol = ledger.ring(carol, writers=(alice.writer_id,))
    assert as_carol.data_key(first.kid) == first
    assert as_carol.data_key(second.kid) == second
    assert as_carol.rejected == []


def test_a_writer_is_always_a_reader_and_many_readers_take_several_grants() -> None:
    alice = ReaderKey.generate()
    ledger = Ledger()
    ledger.append(new_key_grants(ledger.ring(alice))[1])
    readers = [ReaderKey.generate() for _ in range(9)]
    for r in readers:
        ledger.append(reader_grants(ledger.ring(alice), r.card)[0])
    _key, grants = new_key_grants(ledger.ring(alice), remove=[readers[0].reader_id])
    assert len(grants) == 3  # 9 readers (8 kept and the writer) at 4 a grant
    ledger.append(grants)
    ring = ledger.ring(alice)
    assert set(ring.readers()) == {alice.reader_id, *(r.reader_id for r in readers[1:])}


def test_grants_from_untrusted_writers_count_for_nothing() -> None:
    """An operator (or anyone with write access) signs a grant with its own key: a 'rotation' to a
    key it knows is rejected, so writers keep using the real one."""
    alice, bob, mallory = ReaderKey.generate(), ReaderKey.generate(), ReaderKey.generate()
    ledger = Ledger()
    first, grants = new_key_grants(ledger.ring(alice))
    ledger.append(grants)
    _, forged = _grant(mallory, [alice, bob], epoch=2, previous=first.kid)
    ledger.append([forged])
    ring = ledger.ring(alice)
    assert ring.current() is not None
    assert ring.current().kid == first.kid
    assert [r.txid for r in ring.rejected] == [TxId(2, 2)]
    assert "not a trusted writer" in ring.rejected[0].reason
    trusting = ledger.ring(alice, writers=(mallory.writer_id,))  # pinned: then it counts
    assert trusting.current() is not None
    assert trusting.current().epoch == 2


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"collection": "other"}, "another collection"),
        ({"epoch": 2}, "epoch 1"),
        ({"epoch": 3, "previous": "unknown"}, "does not follow"),
        ({"v": 2}, "v1"),
        ({"readers": []}, "without readers"),
        ({"epoch": True}, "valid epoch"),
        ({"kid": ""}, "valid kid"),
        ({"previous": 5}, "previous key"),
    ],
)
def test_malformed_or_misplaced_grants_are_rejected_with_a_reason(fields: dict[str, Any], reason: str) -> None:
    alice = ReaderKey.generate()
    ledger = Ledger()
    ledger.append([_grant(alice, [alice], **fields)[1]])
    ring = ledger.ring(alice)
    assert ring.keys == {}
    assert len(ring.rejected) == 1, ring.rejected
    assert reason in ring.rejected[0].reason


def test_a_reader_whose_id_is_not_its_keys_thumbprint_is_rejected() -> None:
    alice, bob = ReaderKey.generate(), ReaderKey.generate()
    key = crypto.DataKey.generate()
    payload = {
        "type": "notarium-e2e-grant",
        "v": 1,
        "collection": C,
        "kid": key.kid,
        "epoch": 1,
        "previous": None,
        "readers": [{"id": alice.reader_id, "enc": bob.card.enc.as_dict(), "key": crypto.wrap(key, bob.card.enc, C)}],
    }
    ledger = Ledger()
    ledger.append([crypto.sign_grant(payload, alice)])
    assert "thumbprint" in ledger.ring(alice).rejected[0].reason


def test_a_later_grant_of_a_known_key_cannot_change_its_place_in_the_history() -> None:
    alice = ReaderKey.generate()
    ledger = Ledger()
    first, grants = new_key_grants(ledger.ring(alice))
    ledger.append(grants)
    ledger.append(new_key_grants(ledger.ring(alice))[1])  # epoch 2
    payload_kid_again = _grant(alice, [alice], kid=first.kid, epoch=3, previous="x")[1]
    ledger.append([payload_kid_again])
    ring = ledger.ring(alice)
    assert ring.keys[first.kid].epoch == 1
    assert "another epoch or previous key" in ring.rejected[-1].reason


def test_concurrent_rotations_stop_writing_until_a_rotation_settles_them_keeping_every_removal() -> None:
    alice, bob, r1, r2, r3 = (ReaderKey.generate() for _ in range(5))
    ledger = Ledger()
    ledger.append(new_key_grants(ledger.ring(alice))[1])
    for r in (bob, r1, r2, r3):
        ledger.append(reader_grants(ledger.ring(alice), r.card)[0])
    before = ledger.ring(alice)
    # Alice removes r1 while Bob (a trusted writer too) removes r2, both from the same state
    as_bob = ledger.ring(bob, writers=(alice.writer_id,))
    ledger.append(new_key_grants(before, remove=[r1.reader_id])[1])
    ledger.append(new_key_grants(as_bob, remove=[r2.reader_id])[1])
    ring = ledger.ring(alice, writers=(bob.writer_id,))
    assert len(ring.heads()) == 2
    with pytest.raises(KeyConflictError, match="rotate to settle"):
        ring.current()
    assert set(ring.readers()) == {alice.reader_id, bob.reader_id, r3.reader_id}
    settled, grants = new_key_grants(ring)
    ledger.append(grants)
    ring = ledger.ring(alice, writers=(bob.writer_id,))
    current = ring.current()
    assert current is not None
    assert current.kid == settled.kid
    assert current.epoch == 3
    assert set(current.readers) == {alice.reader_id, bob.reader_id, r3.reader_id}


def test_a_new_reader_cannot_be_given_keys_the_writer_never_had() -> None:
    alice, bob, carol = ReaderKey.generate(), ReaderKey.generate(), ReaderKey.generate()
    ledger = Ledger()
    ledger.append(new_key_grants(ledger.ring(alice))[1])
    ledger.append(reader_grants(ledger.ring(alice), bob.card)[0])
    ledger.append(new_key_grants(ledger.ring(alice), remove=[bob.reader_id])[1])
    grants, missing = reader_grants(ledger.ring(bob, writers=(alice.writer_id,)), carol.card)
    assert len(grants) == 1
    assert len(missing) == 1


def test_entries_read_twice_or_out_of_order_are_taken_once() -> None:
    alice = ReaderKey.generate()
    ledger = Ledger()
    ledger.append(new_key_grants(ledger.ring(alice))[1])
    ring = ledger.ring(alice)
    ring.add(*ledger.entries[0])  # a listing that repeats itself changes nothing
    assert len(ring.keys) == 1
    assert ring.rejected == []
