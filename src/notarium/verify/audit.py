"""The ledger auditor: re-verifies a whole ledger from its chunk files, stricter than CCF's tools.

Two pure stages, so that chunks can be scanned in parallel:

* :func:`notarium.verify.chunk.scan_chunk` checks one chunk file on its own (that module's docstring).
* :class:`LedgerAuditor` (here) links the scans in order: chunks contiguous from seqno 1, the service
  identity equal to the pinned certificate, signing nodes recorded, Trusted, with certificates
  endorsed by the service, every signed root (and serialised tree) equal to the root rebuilt
  from all entries before it, every committed chunk ending on a signature, at least one
  signature overall. Transactions after the last signature are reported as unverified.

With the ledger secret, it also checks the commit evidence and GCM tag of the entries that no
later signature covers (the last signature transaction and the unsigned tail), and
:func:`find_changed_entry` names the entry that a signed root failed because of (its GCM tag
authenticates every byte of it but the framing, the public domain as associated data).

ccf-ledger-format.md §12.4 lists what the ``ccf`` package leaves unchecked; this auditor checks
all of it except attestation and governance rules.
"""

from __future__ import annotations

import bisect
import json
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from notarium.errors import LedgerAuditError, VerificationError
from notarium.types import TxId
from notarium.verify import tables
from notarium.verify.chunk import (
    TYPE4,
    ChunkScan,
    GovernanceFacts,
    SignatureFacts,
    audit_failure,
    scan_chunk,
    verify_cose_root,
)
from notarium.verify.entry import CHUNK_HEADER_SIZE, FIXED_SIZE, parse_entry, read_positions
from notarium.verify.keys import check_endorsement, ec_public_key, key_id, load_pem_cert
from notarium.verify.leaf import commit_evidence_digest
from notarium.verify.merkle import ZERO_HASH, Frontier
from notarium.verify.secrets import commit_evidence
from notarium.verify.signature import verify_root_signature


@dataclass
class AuditReport:
    """What an audit established."""

    transactions: int = 0
    signatures: int = 0
    chunks: int = 0
    last_signed: TxId | None = None
    unsigned_tail: int = 0
    torn_tail_bytes: int = 0
    service_cert_pinned: bool = False
    secrets_checked: bool = False
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"verified {self.transactions - self.unsigned_tail} transactions in {self.chunks} chunk files "
            f"under {self.signatures} signatures; last signed transaction {self.last_signed}",
        ]
        if self.unsigned_tail:
            lines.append(f"UNVERIFIED: {self.unsigned_tail} transactions after the last signature")
        lines.extend(f"warning: {w}" for w in self.warnings)
        return "\n".join(lines)


@dataclass
class _Node:
    status: str | None = None
    cert_pem: str | None = None
    key: ec.EllipticCurvePublicKey | None = None
    epoch: int = 0  # the service identity (0, 1, … in ledger order) that endorsed its certificate


class LedgerAuditor:
    """Feed chunks in order with :meth:`add_chunk` (or scans with :meth:`add_scan`), then :meth:`finish`."""

    def __init__(
        self,
        service_cert: x509.Certificate | None,
        *,
        ledger_secret: bytes | Iterable[tuple[int, bytes]] | None = None,
    ) -> None:
        """``ledger_secret``: one secret (in force from seqno 1) or ``(start seqno, secret)`` pairs
        in order (a rekeyed ledger: :class:`notarium.recovery.chain.LedgerSecrets`)."""
        self._pinned = service_cert
        self._service_key = ec_public_key(service_cert, "service certificate") if service_cert else None
        self._secret: list[tuple[int, bytes]] | None = None
        if isinstance(ledger_secret, bytes):
            self._secret = [(1, ledger_secret)]
        elif ledger_secret is not None:
            self._secret = list(ledger_secret)
        self._frontier = Frontier()
        self._frontier.append(ZERO_HASH)  # leaf 0
        self._view = 0
        self._nodes: dict[str, _Node] = {}
        self._service_info_seen = False
        # the service identity in force: certificate, key, epoch number, seqno that created it;
        # an identity other than the pinned one is accepted only if the ledger later records an
        # endorsement chain from it to the pinned one (checked at each change and at the end)
        self._in_force: x509.Certificate | None = None
        self._in_force_key: ec.EllipticCurvePublicKey | None = None
        self._epoch = 0
        self._created = 0
        self._unconfirmed: TxId | None = None
        self._open_chunk = False
        self._uncovered: list[tuple[TxId, bytes]] = []
        self.report = AuditReport(service_cert_pinned=service_cert is not None)

    @property
    def service_key_der(self) -> bytes | None:
        """The pinned service key, for :func:`scan_chunk` (``None`` until one is known)."""
        if self._service_key is None:
            return None
        return self._service_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def wants_tail(self) -> bool:
        return self._secret is not None

    def add_chunk(self, name: str, data: bytes) -> None:
        self.add_scan(scan_chunk(name, data, service_key_der=self.service_key_der, want_tail=self.wants_tail))

    def add_scan(self, scan: ChunkScan) -> None:
        expected = self._frontier.size
        if self._open_chunk:
            raise audit_failure(f"{scan.name} follows an unfinished chunk", "chunk-order")
        if scan.start != expected:
            raise audit_failure(
                f"{scan.name} starts at seqno {scan.start}, expected {expected} "
                "(missing, duplicated or reordered chunk)",
                "chunk-order",
                expected,
            )
        if scan.count and scan.first_view < self._view:
            raise audit_failure(f"view went back from {self._view} to {scan.first_view}", "entry-view", scan.start)
        for event in scan.events:
            if isinstance(event, GovernanceFacts):
                self._apply_governance(event)
            else:
                self._link_signature(event)
        self._frontier.extend(scan.leaves)
        if scan.count:
            self._view = scan.last_view
        signed = [e for e in scan.events if isinstance(e, SignatureFacts)]
        if signed:
            self.report.unsigned_tail = scan.count - 1 - signed[-1].position
            self._uncovered = list(scan.tail)
        else:
            self.report.unsigned_tail += scan.count
            self._uncovered.extend(scan.tail)
        self.report.transactions += scan.count
        self.report.chunks += 1
        if scan.torn_tail_bytes:
            self.report.torn_tail_bytes = scan.torn_tail_bytes
            self.report.warnings.append(
                f"{scan.name}: {scan.torn_tail_bytes} bytes of an incomplete entry at the end of the live chunk "
                "(a write in progress, or a crash not yet recovered) were not verified"
            )
        if scan.end is None:
            self._open_chunk = True

    # --- governance ---

    def _apply_governance(self, g: GovernanceFacts) -> None:
        if tables.SERVICE_INFO in g.tables:
            self._apply_service_info(g.tables[tables.SERVICE_INFO], g.txid, g.tables)
        elif not {tables.PREVIOUS_SERVICE_IDENTITY, tables.PREVIOUS_IDENTITY_ENDORSEMENT}.isdisjoint(g.tables):
            raise audit_failure(
                "a previous service identity is recorded without a service identity change",
                "service-identity-endorsement",
                *_sv(g.txid),
            )
        for key, value in g.tables.get(tables.NODES_INFO, {}).items():
            node_id = key.decode(errors="replace")
            if value is None:
                self._nodes.pop(node_id, None)
                continue
            try:
                info = json.loads(value)
                status = info["status"]
            except (ValueError, KeyError, TypeError) as exc:
                raise audit_failure(f"nodes.info for {node_id[:16]} is malformed", "node-info", *_sv(g.txid)) from exc
            self._nodes.setdefault(node_id, _Node()).status = status
        for key, value in g.tables.get(tables.NODES_ENDORSED_CERTS, {}).items():
            node_id = key.decode(errors="replace")
            if value is None:
                self._nodes.pop(node_id, None)
                continue
            if self._in_force is None:
                raise audit_failure(
                    "a node certificate appears before the service certificate", "node-endorsement", *_sv(g.txid)
                )
            try:
                cert = load_pem_cert(value, "node certificate")
                check_endorsement(cert, self._in_force, "node certificate")
                node_key = ec_public_key(cert, "node certificate")
            except VerificationError as exc:
                raise audit_failure(f"node {node_id[:16]}: {exc}", "node-endorsement", *_sv(g.txid)) from exc
            if key_id(node_key) != node_id:
                raise audit_failure(
                    f"node id {node_id[:16]} is not the hash of its key", "node-endorsement", *_sv(g.txid)
                )
            try:
                pem = value.decode("ascii")
            except UnicodeDecodeError as exc:
                raise audit_failure(
                    f"node {node_id[:16]}: certificate is not ASCII PEM", "node-endorsement", *_sv(g.txid)
                ) from exc
            node = self._nodes.setdefault(node_id, _Node())
            node.cert_pem, node.key, node.epoch = pem, node_key, self._epoch

    def _apply_service_info(
        self, writes: Mapping[bytes, bytes | None], txid: TxId, written: Mapping[str, Mapping[bytes, bytes | None]]
    ) -> None:
        value = writes.get(tables.SINGLETON_KEY)
        if value is None or set(writes) != {tables.SINGLETON_KEY}:
            raise audit_failure("service.info removed or written under a wrong key", "service-identity", *_sv(txid))
        try:
            info: Any = json.loads(value)
            cert = load_pem_cert(info["cert"], "service certificate")
        except (ValueError, KeyError, TypeError, VerificationError) as exc:
            raise audit_failure("service.info is malformed", "service-identity", *_sv(txid)) from exc
        if self._in_force is None:
            if self._pinned is None:
                self._pinned = cert
                self._service_key = ec_public_key(cert, "service certificate")
                self.report.warnings.append(
                    "no service certificate was pinned: trusted the one the ledger names "
                    "(pass --service-cert to verify against the identity you expect)"
                )
            self._set_identity(cert, txid)
        elif cert != self._in_force and _same_key(cert, self._in_force):
            # a renewed certificate of the same service key (new validity): not a new identity
            self._set_identity(cert, txid)
        elif cert != self._in_force:
            self._check_identity_change(info, cert, txid, written)
            self._epoch += 1
            self._set_identity(cert, txid)
        elif {tables.PREVIOUS_SERVICE_IDENTITY, tables.PREVIOUS_IDENTITY_ENDORSEMENT} & set(written):
            raise audit_failure(
                "a previous service identity is recorded without a service identity change",
                "service-identity-endorsement",
                *_sv(txid),
            )
        self._service_info_seen = True

    def _set_identity(self, cert: x509.Certificate, txid: TxId) -> None:
        try:
            self._in_force_key = ec_public_key(cert, "service certificate")
        except VerificationError as exc:
            raise audit_failure(str(exc), "service-identity", *_sv(txid)) from exc
        self._in_force, self._created = cert, txid.seqno
        if self._pinned is None or _same_key(cert, self._pinned) or not self.report.service_cert_pinned:
            self._unconfirmed = None
        elif self._unconfirmed is None:
            self._unconfirmed = txid

    def _check_identity_change(
        self, info: Any, cert: x509.Certificate, txid: TxId, written: Mapping[str, Mapping[bytes, bytes | None]]
    ) -> None:
        """A new service identity must certify the one it replaces, in the same transaction."""
        previous = self._in_force
        if previous is None:  # never: called only once an identity is in force
            raise audit_failure("no service identity to change", "service-identity", *_sv(txid))
        endorsement_pem = written.get(tables.PREVIOUS_IDENTITY_ENDORSEMENT, {}).get(tables.SINGLETON_KEY)
        previous_pem = written.get(tables.PREVIOUS_SERVICE_IDENTITY, {}).get(tables.SINGLETON_KEY)
        if endorsement_pem is None or previous_pem is None:
            raise audit_failure(
                "the service identity changes without a recorded endorsement of the previous one",
                "service-identity-endorsement",
                *_sv(txid),
            )
        try:
            endorsement = load_pem_cert(endorsement_pem, "previous identity endorsement")
            check_endorsement(endorsement, cert, "previous identity endorsement")
            recorded_previous = load_pem_cert(previous_pem, "previous service identity")
        except VerificationError as exc:
            raise audit_failure(str(exc), "service-identity-endorsement", *_sv(txid)) from exc
        if recorded_previous != previous or endorsement.public_key() != previous.public_key():
            raise audit_failure(
                "the recorded endorsement does not certify the service identity in force",
                "service-identity-endorsement",
                *_sv(txid),
            )
        if info.get("previous_service_identity_version") != self._created:
            raise audit_failure(
                f"previous_service_identity_version is {info.get('previous_service_identity_version')!r}, "
                f"the previous identity was recorded at seqno {self._created}",
                "service-identity-endorsement",
                *_sv(txid),
            )

    # --- signatures ---

    def _link_signature(self, s: SignatureFacts) -> None:
        seqno, view = s.txid.seqno, s.txid.view
        self._frontier.extend(s.leaves_before)
        if self._frontier.size != seqno:
            raise audit_failure("signature is not at its position", "signature-txid", seqno, view)
        root = self._frontier.root()
        if s.root != root:
            raise audit_failure(
                "signed root does not match the root rebuilt from the ledger", "signature-root", seqno, view
            )
        if s.tree_size != seqno or s.tree_root != root:
            raise audit_failure("serialised tree does not rebuild the signed root", "signature-tree", seqno, view)
        node = self._nodes.get(s.node)
        if node is None or node.key is None:
            raise audit_failure(f"signed by unknown node {s.node[:16]}", "signature-node", seqno, view)
        if node.status != "Trusted":
            raise audit_failure(f"signed by node {s.node[:16]} in state {node.status}", "signature-node", seqno, view)
        if node.epoch != self._epoch:
            raise audit_failure(
                f"signed by node {s.node[:16]} of a previous service identity", "signature-node", seqno, view
            )
        if s.cert_pem is not None and s.cert_pem != node.cert_pem:
            raise audit_failure(
                "signature carries a certificate other than the node's endorsed one", "signature-node", seqno, view
            )
        if s.sig is not None:
            try:
                verify_root_signature(node.key, root, s.sig)
            except VerificationError as exc:
                raise audit_failure(str(exc), "signature-node", seqno, view) from exc
        try:
            if not self._service_info_seen or self._in_force_key is None:
                raise VerificationError("signature before the service identity was recorded", check="signature-cose")
            if s.cose is not None:
                verify_cose_root(s.cose, self._in_force_key, s.txid, root)
            elif self._in_force_key != self._service_key:
                raise VerificationError(
                    "COSE root signature by the pinned service key while another identity is in force",
                    check="signature-cose",
                )
        except VerificationError as exc:
            raise audit_failure(str(exc), exc.check or "signature", seqno, view) from exc
        self.report.signatures += 1
        self.report.last_signed = s.txid

    # --- end ---

    def _check_uncovered(self) -> None:
        if self._secret is None:
            return
        for txid, raw in self._uncovered:
            problem = entry_secret_problem(raw, txid, self._secret)
            if problem is not None:
                raise audit_failure(problem, "entry-secret", *_sv(txid))
        self.report.secrets_checked = True

    def finish(self) -> AuditReport:
        """Final checks; returns the report or raises :class:`LedgerAuditError`."""
        if self.report.chunks == 0:
            raise LedgerAuditError("no ledger chunk files found", check="no-ledger")
        if self._unconfirmed is not None:
            raise audit_failure(
                "service.info names a different service certificate than the pinned one "
                "(ledger signed by another service, or by an identity the pinned one never endorsed)",
                "service-identity",
                *_sv(self._unconfirmed),
            )
        if self.report.signatures == 0:
            raise LedgerAuditError(
                "the ledger holds no signature transaction: nothing in it is verified", check="no-signature"
            )
        self._check_uncovered()
        return self.report


def entry_secret_problem(raw: bytes, txid: TxId, secrets: Sequence[tuple[int, bytes]]) -> str | None:
    """What is wrong with one entry (``raw``: exactly its bytes) under the ledger secret in force at
    its seqno (``secrets``: ``(start seqno, secret)`` in order), or ``None``: its commit evidence
    must derive from the secret, and its GCM tag must authenticate it (the public domain as
    associated data, so on a public ledger too)."""
    starts = [start for start, _secret in secrets]
    secret = secrets[max(bisect.bisect_right(starts, txid.seqno) - 1, 0)][1]
    _header, tag, _iv_seqno, _iv_view, pub_size, _t, _s, _claims, ced, _m = TYPE4.unpack_from(raw, 0)
    if commit_evidence_digest(commit_evidence(secret, txid)) != ced:
        return "commit evidence does not derive from the ledger secret"
    pub_end = FIXED_SIZE + pub_size
    try:
        AESGCM(secret).decrypt(raw[24:36], raw[pub_end:] + tag, raw[FIXED_SIZE:pub_end])
    except InvalidTag:
        return "GCM tag does not authenticate the entry"
    return None


def find_changed_entry(
    data: bytes, first: int, last: int, secrets: Sequence[tuple[int, bytes]]
) -> tuple[TxId, str] | None:
    """The first entry of a chunk file (``data``) with ``first ≤ seqno ≤ last`` that the ledger
    secrets do not authenticate, and what is wrong with it; ``None`` if there is none (or the
    chunk cannot be read that far). Names the transaction that was changed when a signature's
    root does not match: every byte of an entry but its framing is authenticated by its GCM tag."""
    try:
        entries_end, _positions = read_positions(data)
        off = CHUNK_HEADER_SIZE
        while off < entries_end:
            e = parse_entry(data, off, entries_end)
            if e.seqno > last:
                return None
            if e.seqno >= first:
                txid = TxId(e.view, e.seqno)
                problem = entry_secret_problem(bytes(data[off : e.end]), txid, secrets)
                if problem is not None:
                    return txid, problem
            off = e.end
    except (VerificationError, struct.error):
        return None
    return None


def _same_key(a: x509.Certificate, b: x509.Certificate) -> bool:
    """Two certificates of one key (a renewal changes the validity, never the key)."""
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return a.public_key().public_bytes(der, spki) == b.public_key().public_bytes(der, spki)


def _sv(txid: TxId) -> tuple[int, int]:
    return txid.seqno, txid.view
