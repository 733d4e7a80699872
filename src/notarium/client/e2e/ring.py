"""A collection's key ring: its data keys as the ledger's grants establish them (pure, no I/O).

Grants live in the companion collection ``e2e-keys:<collection>``, in ledger order. A grant is a
JWS (``crypto.sign_grant``) whose payload is::

    {"type": "notarium-e2e-grant", "v": 1, "collection": C, "kid": K, "epoch": N,
     "previous": KID-or-null, "readers": [{"id": READER_ID, "enc": PUBLIC-JWK, "key": WRAPPED}, ...]}

A grant counts only if a **trusted writer** signed it (this reader's own ``sig`` key, or one the
profile pins) and it fits the history: a new key is epoch 1 with no previous key (the first), or
names as ``previous`` a key already known of the epoch before (a rotation); more grants of a known
key (new readers) must repeat its epoch and previous key. Anything else is kept in ``rejected``
with the reason, and changes nothing. A key's readers are the union over its grants.

The **current key** (what a writer encrypts under) is the one of the highest epoch. Two keys of
that epoch (two writers rotated at once, or a replayed history) make writing refuse until a
rotation settles it: the new key goes to the readers **all** of them share (so no removal is lost).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from notarium.client.e2e import crypto
from notarium.client.e2e.keys import ReaderCard, ReaderKey, public_ec_key
from notarium.errors import VerificationError
from notarium.types import TxId

GRANT_TYPE = "notarium-e2e-grant"
READERS_PER_GRANT = 4  # keeps a grant entry under ACL's 8 KiB entry limit


class KeyConflictError(VerificationError):
    """The key history does not name one current key (concurrent rotations, or a replayed history)."""


@dataclass
class KeyState:
    kid: str
    epoch: int
    previous: str | None
    first: TxId  # where its first grant is in the ledger
    readers: dict[str, dict[str, Any]] = field(default_factory=dict)  # reader id -> public enc JWK
    wrapped: str | None = None  # the data key wrapped to this ring's reader
    writers: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Rejected:
    txid: TxId
    reason: str


@dataclass(frozen=True)
class _Grant:
    kid: str
    epoch: int
    previous: str | None
    readers: dict[str, tuple[dict[str, Any], str]]  # id -> (public enc JWK, wrapped key)


def _parse(payload: dict[str, Any], collection: str) -> _Grant:
    if payload.get("type") != GRANT_TYPE or payload.get("v") != 1:
        raise VerificationError("not a notarium-e2e-grant v1 payload")
    if payload.get("collection") != collection:
        raise VerificationError("a grant for another collection")
    kid, epoch, previous, readers = (payload.get(k) for k in ("kid", "epoch", "previous", "readers"))
    if not isinstance(kid, str) or not kid or len(kid) > 64:
        raise VerificationError("a grant without a valid kid")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 1 <= epoch < 1 << 53:
        raise VerificationError("a grant without a valid epoch")
    if previous is not None and not isinstance(previous, str):
        raise VerificationError("a grant whose previous key is not a kid")
    if not isinstance(readers, list) or not readers:
        raise VerificationError("a grant without readers")
    found: dict[str, tuple[dict[str, Any], str]] = {}
    for r in readers:
        if not isinstance(r, dict) or not isinstance(r.get("id"), str) or not isinstance(r.get("key"), str):
            raise VerificationError("a grant's reader lacks id or key")
        enc = public_ec_key(r.get("enc"), "a grant reader's key")
        if enc.thumbprint() != r["id"]:
            raise VerificationError("a grant reader's id is not its key's thumbprint")
        found[r["id"]] = (enc.as_dict(private=False), r["key"])
    return _Grant(kid, epoch, previous, found)


class KeyRing:
    """The data keys of one collection as seen by one reader (``me``), trusting ``writers``."""

    def __init__(self, collection: str, me: ReaderKey, writers: Iterable[str] = ()) -> None:
        self.collection = collection
        self.me = me
        self.trusted = {me.writer_id, *writers}
        self.keys: dict[str, KeyState] = {}
        self.rejected: list[Rejected] = []
        self.last: TxId | None = None  # the last grant entry read
        self._open: dict[str, crypto.DataKey] = {}

    def add(self, txid: TxId, contents: str) -> None:
        """Take in the grant entry at ``txid`` (entries must come in ledger order)."""
        if self.last is not None and txid.seqno <= self.last.seqno:
            return
        self.last = txid
        try:
            self._add(txid, contents)
        except VerificationError as exc:
            self.rejected.append(Rejected(txid, str(exc)))

    def _add(self, txid: TxId, contents: str) -> None:
        signed = crypto.read_grant(contents)
        if signed.writer_id not in self.trusted:
            raise VerificationError(f"signed by {signed.writer_id}, not a trusted writer of this collection")
        grant = _parse(signed.payload, self.collection)
        known = self.keys.get(grant.kid)
        if known is not None:
            if (known.epoch, known.previous) != (grant.epoch, grant.previous):
                raise VerificationError(f"a grant of key {grant.kid} with another epoch or previous key")
        elif grant.previous is None:
            if grant.epoch != 1:
                raise VerificationError("a key without a previous key must be of epoch 1")
        else:
            before = self.keys.get(grant.previous)
            if before is None or before.epoch != grant.epoch - 1:
                raise VerificationError(f"key {grant.kid} does not follow a known key of epoch {grant.epoch - 1}")
        state = known or KeyState(grant.kid, grant.epoch, grant.previous, txid)
        self.keys[grant.kid] = state
        state.writers.add(signed.writer_id)
        for rid, (enc, wrapped) in grant.readers.items():
            state.readers[rid] = enc
            if rid == self.me.reader_id and state.wrapped is None:
                state.wrapped = wrapped

    def data_key(self, kid: str) -> crypto.DataKey | None:
        """The data key ``kid``, if a trusted grant gave it to this reader."""
        if kid in self._open:
            return self._open[kid]
        state = self.keys.get(kid)
        if state is None or state.wrapped is None:
            return None
        key = crypto.unwrap(state.wrapped, self.me, self.collection, kid)
        self._open[kid] = key
        return key

    def heads(self) -> list[KeyState]:
        """The keys of the highest epoch, oldest first."""
        if not self.keys:
            return []
        top = max(k.epoch for k in self.keys.values())
        return sorted((k for k in self.keys.values() if k.epoch == top), key=lambda k: k.first.seqno)

    def current(self) -> KeyState | None:
        """The key to encrypt under (``None``: the collection has none yet)."""
        heads = self.heads()
        if len(heads) > 1:
            raise KeyConflictError(
                f"{len(heads)} keys of epoch {heads[0].epoch} in {self.collection!r} (concurrent rotations "
                "or a replayed history): rotate to settle it (`notarium readers rotate`)",
                check="e2e-conflict",
            )
        return heads[0] if heads else None

    def readers(self) -> dict[str, dict[str, Any]]:
        """The readers every head key shares (the current key's readers when there is one head)."""
        heads = self.heads()
        if not heads:
            return {}
        shared = set(heads[0].readers).intersection(*(h.readers for h in heads[1:]))
        return {rid: heads[-1].readers[rid] for rid in sorted(shared)}


# --- planning the grants to append ----------------------------------------------------------------


def _cards(readers: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return sorted(readers.items())


def _grants(
    writer: ReaderKey,
    collection: str,
    key: crypto.DataKey,
    state: tuple[int, str | None],
    readers: list[tuple[str, dict[str, Any]]],
) -> list[str]:
    epoch, previous = state
    out = []
    for i in range(0, len(readers), READERS_PER_GRANT):
        wrapped = []
        for rid, enc in readers[i : i + READERS_PER_GRANT]:
            reader_enc = public_ec_key(enc, "a reader's key")
            wrapped.append({"id": rid, "enc": enc, "key": crypto.wrap(key, reader_enc, collection)})
        payload = {
            "type": GRANT_TYPE,
            "v": 1,
            "collection": collection,
            "kid": key.kid,
            "epoch": epoch,
            "previous": previous,
            "readers": wrapped,
        }
        out.append(crypto.sign_grant(payload, writer))
    return out


def new_key_grants(ring: KeyRing, remove: Iterable[str] = ()) -> tuple[crypto.DataKey, list[str]]:
    """A fresh data key for the next epoch and its grants: to the readers every current key shares,
    less ``remove``, and always to the writer (a writer is a reader)."""
    me = ring.me
    heads = ring.heads()
    readers = {rid: enc for rid, enc in ring.readers().items() if rid not in set(remove)}
    readers[me.reader_id] = me.card.enc.as_dict(private=False)
    key = crypto.DataKey.generate()
    epoch, previous = (heads[-1].epoch + 1, heads[-1].kid) if heads else (1, None)
    return key, _grants(me, ring.collection, key, (epoch, previous), _cards(readers))


def reader_grants(ring: KeyRing, card: ReaderCard) -> tuple[list[str], list[str]]:
    """Grants of every key this writer holds to a new reader (none for keys they already have),
    and the ids of keys this writer cannot grant (it was never given them)."""
    out: list[str] = []
    missing: list[str] = []
    for state in sorted(ring.keys.values(), key=lambda k: k.first.seqno):
        if card.reader_id in state.readers:
            continue
        key = ring.data_key(state.kid)
        if key is None:
            missing.append(state.kid)
            continue
        reader = [(card.reader_id, card.enc.as_dict(private=False))]
        out += _grants(ring.me, ring.collection, key, (state.epoch, state.previous), reader)
    return out, missing
