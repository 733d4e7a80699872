"""Anchoring a ledger's signed roots in a second ledger (docs/design/anchoring.md).

An **anchor** is one entry in another ledger (the *anchoring* ledger: another notarium, or an
Azure Confidential Ledger) holding a signed root of this one (the *watched* ledger): the TxId of a
signature transaction, its tree size, the Merkle root and the service key's COSE_Sign1 over it,
with the service certificate that verifies it. The anchoring ledger's receipt fixes *when* the
root was seen; the watched ledger's own signature fixes *what* it was. A watched ledger that is
later rolled back or forked cannot prove that its history extends the anchored root, and any
client, with no state of its own, can ask it to (:mod:`notarium.client.anchors`).

Anchors of one service key go to the collection ``anchors:<key id>`` (the key id is the COSE kid:
hex SHA-256 of the key's DER SubjectPublicKeyInfo), so a renewed certificate (same key) keeps its
collection and a new identity (disaster recovery) starts its own. Only ACL's data-plane API is used
on the anchoring side: append, list a collection, the newest entry of a collection, receipts.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from notarium.client.client import Client
from notarium.client.errors import ApiError, ClientError, NotCommittedError, UnreachableError
from notarium.client.operations import Entry, VerifiedReceipt
from notarium.errors import VerificationError
from notarium.types import TxId
from notarium.verify.consistency import SignedRoot, verify_signed_root
from notarium.verify.keys import ec_public_key, key_id, load_pem_cert

ANCHOR_FORMAT = "notarium-anchor/1"
COLLECTION_PREFIX = "anchors:"
_FIELDS = frozenset({"format", "ledger", "signedRoot", "observedAt"})
_LEDGER_FIELDS = frozenset({"endpoint", "serviceKeyId", "serviceCertificate"})
MAX_ANCHOR_BYTES = 8192  # ACL's own limit on an entry: anchors must fit in any anchoring ledger


def service_key_id(cert: x509.Certificate) -> str:
    """The service key's id (the COSE kid of its signatures): what names a ledger's anchors."""
    return key_id(ec_public_key(cert, "service certificate"))


def anchor_collection(cert: x509.Certificate) -> str:
    """The anchoring ledger's collection that holds the anchors of the ledger with this certificate."""
    return COLLECTION_PREFIX + service_key_id(cert)


def _bad(message: str) -> VerificationError:
    return VerificationError(message, check="anchor-format")


@dataclass(frozen=True)
class Anchor:
    """One anchored signed root and the service certificate that verifies it."""

    root: SignedRoot
    service_key_id: str
    service_cert_pem: str
    endpoint: str
    observed_at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "format": ANCHOR_FORMAT,
            "ledger": {
                "endpoint": self.endpoint,
                "serviceKeyId": self.service_key_id,
                "serviceCertificate": self.service_cert_pem,
            },
            "signedRoot": self.root.to_json(),
            "observedAt": self.observed_at,
        }

    def contents(self) -> str:
        """The entry's contents: compact JSON, keys sorted (an ACL SDK user reads it as a string)."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def parse(cls, contents: str) -> Anchor:
        """Parse an anchor entry strictly; anything else is a :class:`VerificationError`
        (``check="anchor-format"``). It says nothing yet about who signed it: see :meth:`verify`."""
        if len(contents.encode()) > MAX_ANCHOR_BYTES:
            raise _bad(f"an anchor is at most {MAX_ANCHOR_BYTES} bytes")
        try:
            body = json.loads(contents)
        except ValueError:
            raise _bad("the entry is not JSON") from None
        if not isinstance(body, Mapping) or set(body) != _FIELDS or body.get("format") != ANCHOR_FORMAT:
            raise _bad(f"the entry is not an anchor ({ANCHOR_FORMAT}: {sorted(_FIELDS)})")
        ledger = body["ledger"]
        if not isinstance(ledger, Mapping) or set(ledger) != _LEDGER_FIELDS:
            raise _bad(f"an anchor's ledger holds exactly {sorted(_LEDGER_FIELDS)}")
        if not all(isinstance(ledger[k], str) for k in _LEDGER_FIELDS) or not isinstance(body["observedAt"], str):
            raise _bad("an anchor's ledger fields and observedAt are strings")
        try:
            root = SignedRoot.from_json(body["signedRoot"])
        except VerificationError as exc:
            raise _bad(f"an anchor's signedRoot: {exc}") from None
        return cls(
            root, ledger["serviceKeyId"], ledger["serviceCertificate"], ledger["endpoint"], body["observedAt"][:64]
        )

    def verify(self, service_cert: x509.Certificate) -> None:
        """Require that this anchor is of the ledger with ``service_cert``: the key ids match, the
        certificate it carries holds the same key, and the root's COSE signature verifies with it.
        Raises :class:`VerificationError` (``check="anchor-signature"``)."""
        expected = service_key_id(service_cert)
        if self.service_key_id != expected:
            raise VerificationError(
                f"the anchor names service key {self.service_key_id[:16]}…, this ledger's is {expected[:16]}…",
                check="anchor-signature",
            )
        carried = load_pem_cert(self.service_cert_pem, "the anchor's service certificate")
        if service_key_id(carried) != expected:
            raise VerificationError("the anchor carries another key's certificate", check="anchor-signature")
        try:
            verify_signed_root(self.root, service_cert)
        except VerificationError as exc:
            raise VerificationError(str(exc), check="anchor-signature") from None


def new_anchor(root: SignedRoot, service_cert: x509.Certificate, endpoint: str) -> Anchor:
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    pem = service_cert.public_bytes(Encoding.PEM).decode("ascii")
    return Anchor(root, service_key_id(service_cert), pem, endpoint, now.isoformat().replace("+00:00", "Z"))


def check_entry_receipt(entry: Entry, receipt: VerifiedReceipt, collection: str) -> None:
    """The anchoring ledger's (verified) receipt must cover exactly this entry: one ``LedgerEntry``
    claim naming its collection and contents (the receipt's claims digest binds them)."""
    claims = receipt.application_claims
    claim = claims[0] if isinstance(claims, list) and len(claims) == 1 else None
    ledger_entry = claim.get("ledgerEntry") if isinstance(claim, dict) and claim.get("kind") == "LedgerEntry" else None
    if not isinstance(ledger_entry, dict):
        raise VerificationError(
            f"the receipt of {entry.txid} carries no ledger entry claim: it does not prove the anchor",
            check="anchor-receipt",
        )
    if ledger_entry.get("collectionId") != collection or ledger_entry.get("contents") != entry.contents:
        raise VerificationError(
            f"the receipt of {entry.txid} proves another entry than the one listed", check="anchor-receipt"
        )


class LedgerUnavailableError(ClientError):
    """One of the two ledgers could not take part right now (unreachable, overloaded, restarting,
    or the anchor not yet Committed): try again later. ``side`` is ``"watched"`` or ``"anchoring"``."""

    def __init__(self, side: str, cause: ClientError) -> None:
        super().__init__(f"the {side} ledger: {cause}")
        self.side = side
        self.cause = cause


def _transient(exc: ClientError) -> bool:
    if isinstance(exc, UnreachableError | NotCommittedError):
        return True
    return isinstance(exc, ApiError) and (exc.status >= 500 or exc.status in (408, 429))


@dataclass(frozen=True)
class Anchored:
    """A root anchored by :meth:`Anchorer.once`: the root, and the entry that holds it."""

    root: SignedRoot
    txid: TxId


class Anchorer:
    """Anchors the watched ledger's newest signed root in the anchoring ledger, once per call.

    The newest root is taken with :meth:`Client.sync`, so the anchorer itself refuses (``ForkError``)
    a root that does not extend the last one it saw (kept in the watched profile's state file, if
    any). A root already anchored is not anchored again; a root that could not be anchored is not
    remembered, and the next call anchors the newest root, which extends it.
    """

    def __init__(self, watched: Client, anchoring: Client) -> None:
        self.watched = watched
        self.anchoring = anchoring
        self.collection = anchor_collection(watched.service_cert)
        self.last: SignedRoot | None = None
        self._looked = False

    def _last_anchored(self) -> SignedRoot | None:
        """The newest anchor of this ledger already in the anchoring ledger (a restarted anchorer
        does not repeat it); an entry that is not a valid anchor of this ledger is ignored."""
        entry = self.anchoring.latest(collection=self.collection)
        if entry is None:
            return None
        try:
            anchor = Anchor.parse(entry.contents)
            anchor.verify(self.watched.service_cert)
        except VerificationError:
            return None
        return anchor.root

    def once(self) -> Anchored | None:
        """Anchor the newest signed root; ``None`` when it is anchored already.

        The first call reads the newest anchor already there: a restarted anchorer does not repeat
        it, and (with no state file of its own) accepts only a root that extends it."""
        try:
            if not self._looked:
                self.last = self._last_anchored()
                self._looked = True
                if self.watched.trusted.root is None and self.last is not None:
                    self.watched.trusted.root = self.last
        except ClientError as exc:
            raise LedgerUnavailableError("anchoring", exc) if _transient(exc) else exc from None
        try:
            root = self.watched.sync()
        except ClientError as exc:
            raise LedgerUnavailableError("watched", exc) if _transient(exc) else exc from None
        if self.last == root:
            return None
        anchor = new_anchor(root, self.watched.service_cert, self.watched.endpoint)
        try:
            done = self.anchoring.append(anchor.contents(), collection=self.collection)
            receipt = self.anchoring.receipt(done.txid)
        except ClientError as exc:
            raise LedgerUnavailableError("anchoring", exc) if _transient(exc) else exc from None
        check_entry_receipt(Entry(done.txid, self.collection, anchor.contents(), []), receipt, self.collection)
        self.last = root
        return Anchored(root, done.txid)
