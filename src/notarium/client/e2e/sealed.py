"""A collection sealed end to end, through the verifying client: append, read, add and remove readers.

Entries go to the collection itself, as envelopes (``crypto.seal``); the grants of its data keys go
to the companion collection ``e2e-keys:<collection>`` (``ring.py``), so a writer learns the
current key by reading only the grants that are new since it last looked (one small listing per
append), and an SDK user listing the collection sees only its entries.

The server sees envelopes and wrapped keys: never a data key, never a plaintext. What it can still
do (withhold or reorder grants, show a plaintext entry in a sealed collection) is reported, not
trusted: see docs/design/e2e.md.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from notarium.client.client import Client
from notarium.client.e2e import crypto
from notarium.client.e2e.keys import ReaderCard, ReaderKey
from notarium.client.e2e.ring import KeyRing, KeyState, new_key_grants, reader_grants
from notarium.client.errors import ClientError
from notarium.client.operations import Appended, Entry
from notarium.errors import VerificationError
from notarium.types import TxId

DEFAULT_COLLECTION = "subledger:0"
KEYS_PREFIX = "e2e-keys:"
OPENED, SEALED, PLAIN = "opened", "sealed", "plain"


def keys_collection(collection: str) -> str:
    """Where the grants of ``collection``'s data keys are recorded."""
    return KEYS_PREFIX + collection


@dataclass(frozen=True)
class Opened:
    """An entry as a reader sees it. ``state``: ``opened`` (``text`` is the plaintext), ``sealed``
    (an envelope this reader cannot open; ``text`` is the envelope, ``reason`` says why) or
    ``plain`` (not an envelope: not end-to-end encrypted, whoever wrote it)."""

    entry: Entry
    state: str
    text: str
    kid: str | None = None
    epoch: int | None = None
    reason: str = ""

    def to_json(self) -> dict[str, object]:
        e2e: dict[str, object] = {"state": self.state}
        if self.kid is not None:
            e2e["keyId"] = self.kid
        if self.epoch is not None:
            e2e["epoch"] = self.epoch
        if self.reason:
            e2e["reason"] = self.reason
        return e2e


class EpochMemory:
    """The highest key epoch this key has seen per ledger and collection, in a small JSON file, so
    a writer never falls back to an older key (a server withholding a rotation's grants)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._seen: dict[str, int] = {}
        if path is not None and path.exists():
            try:
                data = json.loads(path.read_text())
            except ValueError:
                raise ClientError(f"{path} is not JSON: remove it only if you trust the ledger") from None
            if isinstance(data, dict):
                self._seen = {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, int)}

    def get(self, slot: str) -> int:
        return self._seen.get(slot, 0)

    def raise_to(self, slot: str, epoch: int) -> None:
        if epoch <= self.get(slot):
            return
        self._seen[slot] = epoch
        if self.path is not None:
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps(self._seen, indent=2, sort_keys=True) + "\n")
            tmp.replace(self.path)


class SealedCollection:
    """One collection, sealed end to end, as ``key``'s holder reads and writes it."""

    def __init__(
        self,
        client: Client,
        collection: str | None,
        key: ReaderKey,
        *,
        writers: Iterable[str] = (),
        memory: Path | None = None,
    ) -> None:
        self.client = client
        self.collection = collection or DEFAULT_COLLECTION
        self.key = key
        self.ring = KeyRing(self.collection, key, writers)
        self.memory = EpochMemory(memory)
        der = client.service_cert.public_bytes(Encoding.DER)
        self._slot = f"{hashlib.sha256(der).hexdigest()}/{self.collection}"

    # reading the grants

    def refresh(self) -> KeyRing:
        """Read the grants recorded since the last look."""
        last = self.ring.last
        first = TxId(last.view, last.seqno + 1) if last is not None else None
        for e in self.client.entries(collection=keys_collection(self.collection), first=first):
            self.ring.add(e.txid, e.contents)
        return self.ring

    def _current(self) -> tuple[KeyState, crypto.DataKey]:
        state = self.ring.current()
        if state is None:
            raise ClientError(f"collection {self.collection!r} has no data key yet")
        floor = self.memory.get(self._slot)
        if state.epoch < floor:
            raise VerificationError(
                f"the ledger shows key epoch {state.epoch} of {self.collection!r} as the newest, but this key "
                f"saw epoch {floor} before: a rotation's grants are withheld (or their writer is no longer trusted)",
                check="e2e-rollback",
            )
        key = self.ring.data_key(state.kid)
        if key is None:
            raise ClientError(
                f"this key (reader {self.key.reader_id}) holds no grant of the current key of {self.collection!r}: "
                "a writer must add it (`notarium readers add CARD`)"
            )
        self.memory.raise_to(self._slot, state.epoch)
        return state, key

    # entries

    def append(
        self, text: str, *, tags: list[str] | None = None, wait: bool = True, timeout: float | None = None
    ) -> Appended:
        """Seal ``text`` under the current data key and append it (the first append creates the
        collection's first key, granted to this writer alone)."""
        self.refresh()
        if not self.ring.keys:
            self._record(new_key_grants(self.ring)[1])
            self.refresh()
        _, key = self._current()
        envelope = crypto.seal(text, key, self.collection)
        return self.client.append(envelope, collection=self.collection, tags=tags, wait=wait, timeout=timeout)

    def open(self, entry: Entry) -> Opened:
        """The entry as this reader sees it; raises :class:`VerificationError` when an envelope it
        holds the key of does not open (altered, or moved from another collection)."""
        header = crypto.envelope_header(entry.contents)
        if header is None:
            return Opened(entry, PLAIN, entry.contents, reason="not end-to-end encrypted")
        if header.collection != entry.collection_id:
            raise VerificationError(
                f"entry {entry.txid} was sealed for collection {header.collection[:80]!r}, "
                f"found in {entry.collection_id[:80]!r}",
                check="e2e-collection",
            )
        if header.kid not in self.ring.keys or self.ring.keys[header.kid].wrapped is None:
            self.refresh()
        state = self.ring.keys.get(header.kid)
        key = self.ring.data_key(header.kid)
        if state is None or key is None:
            why = "its key was not granted to this reader"
            if state is None:
                ignored = len(self.ring.rejected)
                why = "no trusted grant of its key" + (
                    f" ({ignored} grant(s) ignored: `notarium readers list` says why; pin their writer in the profile)"
                    if ignored
                    else ""
                )
            return Opened(entry, SEALED, entry.contents, header.kid, state.epoch if state else None, why)
        try:
            text = crypto.open_envelope(entry.contents, key, entry.collection_id)
        except VerificationError as exc:
            raise VerificationError(f"entry {entry.txid}: {exc}", check=exc.check) from None
        return Opened(entry, OPENED, text, header.kid, state.epoch)

    def entries(
        self, *, first: TxId | str | None = None, last: TxId | str | None = None, tag: str | None = None
    ) -> Iterator[Opened]:
        self.refresh()
        for entry in self.client.entries(collection=self.collection, first=first, last=last, tag=tag):
            yield self.open(entry)

    # readers

    def readers(self) -> dict[str, dict[str, object]]:
        """The readers of the current key (or shared by the current keys), by reader id."""
        self.refresh()
        return dict(self.ring.readers())

    def add_reader(self, card: ReaderCard) -> list[Appended]:
        """Give a reader every data key this writer holds (the collection's whole past, nothing
        rewritten); a collection without a key gets its first, for this writer and the reader."""
        self.refresh()
        if not self.ring.keys:
            done = self._record(new_key_grants(self.ring)[1])
            return done + self.add_reader(card)
        grants, missing = reader_grants(self.ring, card)
        if missing:
            raise ClientError(
                f"this writer was never granted key(s) {', '.join(missing)} of {self.collection!r}: "
                "a writer who holds them must add the reader"
            )
        return self._record(grants)

    def remove_reader(self, reader_id: str) -> list[Appended]:
        """Rotate: a new data key for every current reader but ``reader_id``. The removed reader
        keeps every key it was given, so every entry sealed before the rotation."""
        self.refresh()
        if reader_id == self.key.reader_id:
            raise ClientError("a writer cannot remove itself (a writer is a reader): another writer can")
        if reader_id not in self.ring.readers():
            raise ClientError(f"{reader_id} is not a reader of the current key of {self.collection!r}")
        return self.rotate(remove=[reader_id])

    def rotate(self, remove: Iterable[str] = ()) -> list[Appended]:
        """A new data key for the current readers (less ``remove``); settles concurrent rotations."""
        self.refresh()
        done = self._record(new_key_grants(self.ring, remove)[1])
        self.refresh()
        self._current()  # checks the new key is the current one, and remembers its epoch
        return done

    def _record(self, grants: list[str]) -> list[Appended]:
        target = keys_collection(self.collection)
        return [self.client.append(g, collection=target) for g in grants]
