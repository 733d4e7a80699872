"""SealedCollection against a ledger that withholds grants: a writer never falls back to a key
older than one it saw (the rotation that removed a reader cannot be hidden from it); and the
profile's e2e settings."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from notarium.client.e2e import ReaderKey, SealedCollection, crypto, keys_collection
from notarium.client.errors import ClientError
from notarium.client.operations import Appended, Entry
from notarium.client.profile import E2ESetting, load_profile
from notarium.errors import VerificationError
from notarium.ledger.identity import self_signed_identity
from notarium.types import TxId, TxStatus


class FakeLedger:
    """The few client calls SealedCollection makes, over an in-memory list; ``hide`` withholds
    entries from listings (as a server may)."""

    def __init__(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        self.service_cert = self_signed_identity(key, "svc", now=datetime.datetime.now(datetime.UTC), days=1)
        self.log: list[Entry] = []
        self.hide: set[TxId] = set()

    def append(self, contents: str, *, collection: str | None = None, tags: Any = None, **_: Any) -> Appended:
        txid = TxId(2, len(self.log) + 1)
        self.log.append(Entry(txid, collection or "subledger:0", contents, list(tags or [])))
        return Appended(txid, TxStatus.COMMITTED)

    def entries(self, *, collection: str | None = None, first: Any = None, **_: Any) -> Iterator[Entry]:
        lo = first.seqno if first is not None else 1
        for e in self.log:
            if e.collection_id == collection and e.txid.seqno >= lo and e.txid not in self.hide:
                yield e


def test_a_withheld_rotation_is_noticed_by_a_writer_who_saw_it(tmp_path: Path) -> None:
    ledger = FakeLedger()
    alice, bob = ReaderKey.generate(), ReaderKey.generate()
    memory = tmp_path / "alice.key.seen"
    sealed = SealedCollection(ledger, "c", alice, memory=memory)  # type: ignore[arg-type]
    sealed.add_reader(bob.card)
    sealed.remove_reader(bob.reader_id)
    assert json.loads(memory.read_text())
    assert max(json.loads(memory.read_text()).values()) == 2
    rotation = [e.txid for e in ledger.log if e.collection_id == keys_collection("c")][-1]
    ledger.hide.add(rotation)  # the server now lists the grants as if the rotation never was
    again = SealedCollection(ledger, "c", alice, memory=memory)  # type: ignore[arg-type]
    with pytest.raises(VerificationError) as caught:
        again.append("would be readable by bob under the old key")
    assert caught.value.check == "e2e-rollback"
    assert not any(e.collection_id == "c" for e in ledger.log)  # nothing was written


def test_a_reader_without_a_grant_of_the_current_key_cannot_write(tmp_path: Path) -> None:
    ledger = FakeLedger()
    alice, bob = ReaderKey.generate(), ReaderKey.generate()
    SealedCollection(ledger, "c", alice).append("first")  # type: ignore[arg-type]
    as_bob = SealedCollection(ledger, "c", bob, writers=[alice.writer_id])  # type: ignore[arg-type]
    with pytest.raises(ClientError, match="holds no grant of the current key"):
        as_bob.append("x")
    with pytest.raises(ClientError, match="cannot remove itself"):
        SealedCollection(ledger, "c", alice).remove_reader(alice.reader_id)  # type: ignore[arg-type]
    with pytest.raises(ClientError, match="is not a reader"):
        SealedCollection(ledger, "c", alice).remove_reader(bob.reader_id)  # type: ignore[arg-type]


def test_a_sealed_entry_altered_in_the_ledger_fails_to_open() -> None:
    ledger = FakeLedger()
    alice = ReaderKey.generate()
    sealed = SealedCollection(ledger, "c", alice)  # type: ignore[arg-type]
    sealed.append("genuine")
    entry = next(e for e in ledger.log if e.collection_id == "c")
    parts = entry.contents.split(".")
    parts[3] = ("B" if parts[3][0] == "A" else "A") + parts[3][1:]
    altered = Entry(entry.txid, "c", ".".join(parts), [])
    with pytest.raises(VerificationError, match=f"entry {entry.txid}"):
        sealed.open(altered)
    assert sealed.open(entry).text == "genuine"


def test_the_profile_marks_collections_and_names_their_keys_and_writers(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(
        json.dumps(
            {
                "endpoint": "https://x",
                "service_cert": "c.pem",
                "e2e_key": "default.key",
                "e2e": {"secrets": {"key": "keys/a.key", "writers": ["w1"]}, "other": {}},
            }
        )
    )
    profile = load_profile(path, env={})
    assert profile.e2e_key == tmp_path / "default.key"
    assert profile.e2e_setting("secrets") == E2ESetting(tmp_path / "keys" / "a.key", ("w1",))
    assert profile.e2e_setting("other") == E2ESetting(None, ())
    assert profile.e2e_setting("plain") is None
    saved = tmp_path / "saved.json"
    profile.save(saved)
    assert load_profile(saved, env={}).e2e == profile.e2e
    assert load_profile(path, env={"NOTARIUM_E2E_KEY": "/k"}).e2e_key == Path("/k")


@pytest.mark.parametrize(
    ("e2e", "message"),
    [
        ([], "must map collection ids"),
        ({"c": {"keys": "x"}}, "takes only key and writers"),
        ({"c": {"key": 1}}, "must be a path"),
        ({"c": {"writers": "w"}}, "list of writer ids"),
    ],
)
def test_bad_e2e_settings_are_refused(tmp_path: Path, e2e: Any, message: str) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"endpoint": "https://x", "service_cert": "c.pem", "e2e": e2e}))
    with pytest.raises(ClientError, match=message):
        load_profile(path, env={})


def test_data_keys_never_leave_the_ring_in_a_repr() -> None:
    ledger = FakeLedger()
    sealed = SealedCollection(ledger, "c", ReaderKey.generate())  # type: ignore[arg-type]
    sealed.append("x")
    current = sealed.ring.current()
    assert current is not None
    key = sealed.ring.data_key(current.kid)
    assert isinstance(key, crypto.DataKey)
    assert crypto.b64url(key.secret) not in repr(sealed.ring.__dict__)
