"""The ledger side of the trail: appending trail entries and reading them back verified.

Reading back trusts nothing but the pinned service certificate: every entry is taken from its
receipt's application claims (which carry the contents and collection id the receipt's claims
digest commits to), after the receipt verified; the listing only says which TxIds to ask for.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from notarium.client.client import Client
from notarium.client.errors import ApiError, ClientError, NotCommittedError, UnreachableError
from notarium.errors import VerificationError
from notarium.pgtrail.errors import TrailError
from notarium.pgtrail.format import BaselineEnd, Init, TrailEntry, decode, encode
from notarium.types import TxId

INIT_TAG = "init"
BASELINE_END_TAG = "baseline-end"


def default_collection(database: str) -> str:
    return f"pg:{database}"


@dataclass(frozen=True, slots=True)
class Recorded:
    txid: TxId
    entry: TrailEntry
    digest: str  # SHA-256 (hex) of the entry's contents as the ledger holds them

    @classmethod
    def of(cls, txid: TxId, contents: str) -> Recorded:
        """The entry ``contents`` recorded at ``txid``: decoded and checked (:func:`~.format.decode`)."""
        return cls(txid, decode(contents), hashlib.sha256(contents.encode()).hexdigest())


def _tags(entry: TrailEntry) -> list[str] | None:
    if isinstance(entry, Init):
        return [INIT_TAG]
    if isinstance(entry, BaselineEnd):
        return [BASELINE_END_TAG]
    return None


def retryable(exc: BaseException) -> bool:
    """A ledger failure that waiting cures: unreachable, or busy (429, 5xx)."""
    if isinstance(exc, UnreachableError):
        return True
    return isinstance(exc, ApiError) and (exc.status == 429 or exc.status >= 500)


class TrailLedger:
    def __init__(self, client: Client, collection: str) -> None:
        self.client = client
        self.collection = collection

    def append(self, entry: TrailEntry, *, text: str | None = None, wait: bool = True) -> TxId:
        """Append ``entry`` (``text``: its encoding, when the caller has it already)."""
        try:
            done = self.client.append(
                encode(entry) if text is None else text, collection=self.collection, tags=_tags(entry), wait=wait
            )
        except ApiError as exc:
            if exc.code == "EntrySizeCapacityExceeded" or exc.status == 413:
                raise TrailError(
                    f"the ledger refused a trail entry as too large: {exc}",
                    hint="start capture with a smaller --max-entry-bytes (at most the ledger's own limit)",
                ) from None
            raise
        return done.txid

    def append_retrying(
        self,
        entry: TrailEntry,
        *,
        text: str | None = None,
        say: Callable[[str], None],
        keepalive: Callable[[], None] = lambda: None,
    ) -> TxId:
        """Append and wait until Committed, waiting out an unreachable or busy ledger (with a visible
        message each time, and ``keepalive`` called while waiting).

        Never twice: once the ledger has handed out a TxId for the entry, that TxId is waited for
        (a ledger that stops signs what is pending: it commits), and the entry is appended again
        only if it became Invalid; when the append itself got no answer, the collection's newest
        entry is looked at first (the ledger may have taken it)."""
        contents = encode(entry) if text is None else text
        delay = 0.5
        txid: TxId | None = None
        asked = False
        while True:
            try:
                if txid is None and asked:
                    newest = self.client.latest(collection=self.collection)
                    if newest is not None and newest.contents == contents:
                        return newest.txid
                if txid is None:
                    asked = True
                    txid = self.append(entry, text=contents, wait=False)
                self.client.wait(txid)
                return txid
            except NotCommittedError as exc:
                if exc.state != "Invalid":
                    raise
                txid, asked = None, False  # lost when the ledger restarted: append it again
            except ClientError as exc:
                if not retryable(exc):
                    raise
                say(f"the ledger is not available ({exc}); retrying in {delay:.0f} s (the slot holds the WAL)")
                waited = 0.0
                while waited < delay:
                    keepalive()
                    step = min(1.0, delay - waited)
                    time.sleep(step)
                    waited += step
                delay = min(delay * 2, 30.0)

    def wait_committed(self, txid: TxId) -> None:
        """Wait until an entry appended with ``wait=False`` is Committed (raises if it became Invalid)."""
        self.client.wait(txid)

    def latest(self) -> Recorded | None:
        entry = self.client.latest(collection=self.collection)
        if entry is None:
            return None
        return Recorded.of(entry.txid, entry.contents)

    def tagged(self, tag: str) -> list[Recorded]:
        return [Recorded.of(e.txid, e.contents) for e in self.client.entries(collection=self.collection, tag=tag)]

    def read(self, *, first: TxId | None = None, last: TxId | None = None) -> Iterator[Recorded]:
        """The trail's entries in ledger order, each verified by its receipt."""
        for listed in self.client.entries(collection=self.collection, first=first, last=last):
            proven = self.client.receipt(listed.txid)
            claims = proven.application_claims or []
            if len(claims) != 1 or not isinstance(claims[0].get("ledgerEntry"), dict):
                raise VerificationError(f"the receipt of {listed.txid} does not carry the entry's claim")
            claim = claims[0]["ledgerEntry"]
            if claim.get("collectionId") != self.collection or claim.get("contents") != listed.contents:
                raise VerificationError(f"the entry {listed.txid} is not the one its receipt proves")
            yield Recorded.of(listed.txid, claim["contents"])
