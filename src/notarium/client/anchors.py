"""Checking the anchors of a ledger (``notarium verify-anchors``; docs/design/anchoring.md).

For every anchor of the watched ledger in the anchoring ledger (the collection
``anchors:<service key id>``), in order:

1. its **receipt** in the anchoring ledger must verify against that ledger's pinned certificate and
   prove exactly the entry listed (collection and contents): the anchor is Committed there;
2. the anchored **signed root** must verify with the watched ledger's pinned service key; an entry
   that is not an anchor, or a root this key did not sign, is *rejected*: anyone allowed to write
   to the anchoring ledger could have put it there, so it proves nothing either way;
3. the watched ledger must **extend** the anchored root: ``GET /app/consistency`` from the anchored
   TxId to its newest signed root, and the proof must verify (RFC 9162 over CCF's tree). A ledger
   that was rolled back or forked since cannot give it: it refuses (it does not have that
   transaction), or presents another root for it, or a proof that fails. Each is a *failure*, with
   the evidence: the anchored root (signed by the watched ledger's own key), the anchor's receipt
   in the other ledger, and the watched ledger's answer or the failed proof.

A refusal that says the transaction is unknown is asked again after a short pause (a replica that
serves reads may lag behind the anchor's root by a few milliseconds); one that says it is not a
signature transaction, or Invalid, is final. Anything that cannot be checked (a ledger unreachable,
a refusal of another kind) raises: the caller never reports success for what it could not check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from notarium.client.anchor import COLLECTION_PREFIX, Anchor, anchor_collection, check_entry_receipt
from notarium.client.client import Client
from notarium.client.errors import ClientError, ForkError
from notarium.client.operations import Answer, Call, Entry, Op, Pause, _op_json
from notarium.errors import VerificationError
from notarium.types import TxId
from notarium.verify.consistency import SignedRoot, proof_from_json, verify_extension, verify_signed_root

RETRY_PAUSES = (0.5, 1.0)


@dataclass
class Finding:
    """What became of one entry of the anchors' collection."""

    entry: TxId  # the anchor's transaction in the anchoring ledger
    status: str  # "holds", "rejected" (not an anchor of this ledger) or "failed"
    check: str = ""
    message: str = ""
    root: SignedRoot | None = None
    evidence: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"anchorTransactionId": str(self.entry), "status": self.status}
        if self.root is not None:
            body["anchoredRoot"] = {"transactionId": str(self.root.txid), "treeSize": self.root.tree_size}
        if self.check:
            body["check"] = self.check
            body["message"] = self.message
        if self.evidence is not None:
            body["evidence"] = self.evidence
        return body


@dataclass
class Report:
    collection: str
    held: list[Finding] = field(default_factory=list)
    rejected: list[Finding] = field(default_factory=list)
    failed: list[Finding] = field(default_factory=list)
    newest: SignedRoot | None = None  # the watched ledger's newest signed root seen
    other_identities: list[str] = field(default_factory=list)  # anchors:<kid> collections of other keys

    def to_json(self) -> dict[str, Any]:
        roots = [f.root for f in self.held if f.root is not None]
        return {
            "collection": self.collection,
            "held": len(self.held),
            "oldestAnchored": roots[0].to_json() if roots else None,
            "newestAnchored": roots[-1].to_json() if roots else None,
            "watchedNewest": self.newest.to_json() if self.newest else None,
            "rejected": [f.to_json() for f in self.rejected],
            "failed": [f.to_json() for f in self.failed],
            "otherIdentities": self.other_identities,
        }


def op_extends(
    anchored: SignedRoot, cert: x509.Certificate, pauses: Sequence[float]
) -> Op[tuple[SignedRoot, list[bytes]]]:
    """Ask the watched ledger to prove that its newest signed root extends ``anchored``; return
    that root and the proof, or raise :class:`ForkError` with the evidence."""
    answer: Answer | None = None
    for attempt in range(len(pauses) + 1):
        answer = yield Call(
            "GET",
            "/app/consistency",
            params={"fromTransactionId": str(anchored.txid)},
            ok=frozenset({200, 400, 404}),
        )
        if answer is None or answer.status != 404 or attempt == len(pauses):
            break
        yield Pause(pauses[attempt])
    if answer is None:
        raise ClientError("no answer")
    if answer.status != 200:
        raise ForkError(
            f"the ledger cannot prove that it extends the anchored root {anchored.txid} (tree size "
            f"{anchored.tree_size}): it answered {answer.status} {_error_text(answer)}",
            kind="rollback" if answer.status == 404 else "fork",
            trusted=anchored,
            presented=None,
            proof=None,
        )
    body = answer.json()
    if not isinstance(body, dict):
        raise VerificationError("the consistency answer is not a JSON object", check="consistency")
    proof = proof_from_json(body.get("proof"))
    newest = SignedRoot.from_json(body.get("to"))
    verify_signed_root(newest, cert)
    presented = SignedRoot.from_json(body.get("from"))
    if presented != anchored:
        verify_signed_root(presented, cert)
        raise ForkError(
            f"the ledger presents another signed root for the anchored {anchored.txid}: two roots signed by "
            "its key for one transaction",
            kind="fork",
            trusted=anchored,
            presented=presented,
            proof=proof,
        )
    try:
        verify_extension(anchored, newest, proof, cert)
    except VerificationError as exc:
        raise ForkError(
            f"the ledger's newest root {newest.txid} does not extend the anchored {anchored.txid}: {exc}",
            kind=exc.check or "consistency",
            trusted=anchored,
            presented=newest,
            proof=proof,
        ) from None
    return newest, proof


def _error_text(answer: Answer) -> str:
    try:
        err = answer.json().get("error")
        return f"{err.get('code')}: {str(err.get('message'))[:200]}"
    except (VerificationError, AttributeError):
        return answer.body[:200].decode(errors="replace")


def _other_identities(anchoring: Client, collection: str) -> list[str]:
    body = anchoring._run(_op_json(Call("GET", "/app/collections")))
    found = body.get("collections") if isinstance(body, dict) else None
    if not isinstance(found, list):
        raise VerificationError("the anchoring ledger's list of collections is malformed")
    names = [c.get("collectionId") for c in found if isinstance(c, dict)]
    return sorted(n for n in names if isinstance(n, str) and n.startswith(COLLECTION_PREFIX) and n != collection)


def verify_anchors(watched: Client, anchoring: Client, *, pauses: Sequence[float] = RETRY_PAUSES) -> Report:
    """Check every anchor of ``watched`` in ``anchoring``; see the module's docstring."""
    collection = anchor_collection(watched.service_cert)
    report = Report(collection)
    proven: dict[SignedRoot, SignedRoot] = {}  # anchored root -> the newest root that extends it
    for entry in anchoring.entries(collection=collection):
        finding = _check(entry, watched, anchoring, collection, proven, pauses)
        {"holds": report.held, "rejected": report.rejected, "failed": report.failed}[finding.status].append(finding)
        newest = proven.get(finding.root) if finding.root is not None else None
        if newest is not None and (report.newest is None or newest.tree_size > report.newest.tree_size):
            report.newest = newest
    report.other_identities = _other_identities(anchoring, collection)
    return report


def _check(
    entry: Entry,
    watched: Client,
    anchoring: Client,
    collection: str,
    proven: dict[SignedRoot, SignedRoot],
    pauses: Sequence[float],
) -> Finding:
    try:
        receipt = anchoring.receipt(entry.txid)
        check_entry_receipt(entry, receipt, collection)
    except VerificationError as exc:
        return Finding(
            entry.txid,
            "failed",
            "anchor-receipt",
            f"the anchoring ledger's receipt of {entry.txid} does not verify: {exc}",
            evidence={"anchor": {"transactionId": str(entry.txid), "contents": entry.contents}},
        )
    try:
        anchor = Anchor.parse(entry.contents)
        anchor.verify(watched.service_cert)
    except VerificationError as exc:
        return Finding(entry.txid, "rejected", exc.check, str(exc))
    if anchor.root in proven:
        return Finding(entry.txid, "holds", root=anchor.root)
    try:
        newest, _ = watched._run(op_extends(anchor.root, watched.service_cert, pauses))
    except ForkError as exc:
        evidence = {
            **exc.evidence(),
            "anchor": {
                "transactionId": str(entry.txid),
                "document": anchor.to_json(),
                "receipt": receipt.to_json(),
            },
        }
        return Finding(entry.txid, "failed", exc.kind, str(exc), anchor.root, evidence)
    except VerificationError as exc:  # the watched ledger's answer itself does not verify
        evidence = {"anchor": {"transactionId": str(entry.txid), "document": anchor.to_json()}}
        return Finding(entry.txid, "failed", exc.check or "consistency", str(exc), anchor.root, evidence)
    proven[anchor.root] = newest
    return Finding(entry.txid, "holds", root=anchor.root)
