"""The ledger auditor: re-verifies a whole ledger from its chunk files, stricter than CCF's tools.

Pure: it is handed chunk names and bytes in order and keeps O(log n) state plus the entries
since the last signature. It checks (ccf-ledger-format.md §12.4 lists what ``ccf`` does not):

* chunk files are contiguous from seqno 1, counts and positions tables match, every committed
  chunk ends on a signature transaction, nothing trails the last entry;
* every entry parses, is of type 4, and its seqno (public header and IV) equals its position;
  views never decrease;
* every signature transaction: its seqno/view fields match its position, the signing node is
  recorded, Trusted, and its certificate is endorsed by the **pinned** service certificate; the
  node signature verifies over the rebuilt root; the COSE root signature verifies with the
  pinned service key, with the right kid, vds and ``ccf.v1.txid``; the serialised tree rebuilds
  the same root over the same number of leaves;
* ``service.info`` names the pinned service certificate;
* at least one signature exists; transactions after the last one are reported as unverified.

With the ledger secret, it also checks the commit evidence and GCM tag of the entries that no
later signature covers (the last signature transaction and the unsigned tail).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from notarium.errors import LedgerAuditError, VerificationError
from notarium.types import TxId
from notarium.verify import tables
from notarium.verify.entry import (
    CHUNK_HEADER_SIZE,
    FIXED_SIZE,
    FLAG_FORCE_CHUNK_AFTER,
    FLAG_FORCE_CHUNK_BEFORE,
    TYPE_WRITE_SET_WITH_COMMIT_EVIDENCE_AND_CLAIMS,
    ChunkName,
    EntryView,
    decode_tables,
    parse_entry,
    read_positions,
)
from notarium.verify.keys import check_endorsement, ec_public_key, key_id, load_pem_cert
from notarium.verify.leaf import commit_evidence_digest
from notarium.verify.merkle import ZERO_HASH, Frontier
from notarium.verify.secrets import commit_evidence
from notarium.verify.signature import (
    SIGNATURE_TABLES,
    PrimarySignature,
    verify_signature_transaction,
)

_ALLOWED_FLAGS = FLAG_FORCE_CHUNK_AFTER | FLAG_FORCE_CHUNK_BEFORE


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


class LedgerAuditor:
    """Feed chunks in order with :meth:`add_chunk`, then call :meth:`finish`."""

    def __init__(self, service_cert: x509.Certificate | None, *, ledger_secret: bytes | None = None) -> None:
        self._pinned = service_cert
        self._service_key = ec_public_key(service_cert, "service certificate") if service_cert else None
        self._secret = ledger_secret
        self._frontier = Frontier()
        self._frontier.append(ZERO_HASH)  # leaf 0
        self._next = 1
        self._view = 0
        self._nodes: dict[str, _Node] = {}
        self._service_info_seen = False
        self._open_chunk = False
        self._uncovered: list[tuple[bytes, EntryView]] = []
        self.report = AuditReport(service_cert_pinned=service_cert is not None)

    # --- helpers ---

    def _fail(self, message: str, check: str, seqno: int | None = None, view: int | None = None) -> LedgerAuditError:
        txid = None
        if seqno is not None:
            txid = f"{view}.{seqno}" if view is not None else f"?.{seqno}"
        return LedgerAuditError(message, txid=txid, check=check)

    # --- chunks ---

    def add_chunk(self, name: str, data: bytes) -> None:
        chunk = ChunkName.parse(name)
        if chunk is None:
            raise self._fail(f"{name!r} is not a ledger chunk file name", "chunk-name")
        if self._open_chunk:
            raise self._fail(f"{name} follows an unfinished chunk", "chunk-order")
        if chunk.start != self._next:
            raise self._fail(
                f"{name} starts at seqno {chunk.start}, expected {self._next} (missing, duplicated or reordered chunk)",
                "chunk-order",
                self._next,
            )
        if chunk.end is not None and chunk.end < chunk.start:
            raise self._fail(f"{name} ends before it starts", "chunk-name")
        buf = memoryview(data)
        try:
            entries_end, positions = read_positions(buf)
        except VerificationError as exc:
            raise self._fail(f"{name}: {exc}", "chunk-positions", chunk.start) from exc
        if chunk.end is not None and positions is None:
            raise self._fail(
                f"{name} is complete by name but has no positions table",
                "chunk-positions",
                chunk.start,
            )
        offsets: list[int] = []
        off = CHUNK_HEADER_SIZE
        last: EntryView | None = None
        last_was_signature = False
        while off < entries_end:
            try:
                e = parse_entry(buf, off, entries_end)
            except VerificationError as exc:
                if positions is None and self._is_torn_tail(buf, off, entries_end):
                    self.report.torn_tail_bytes = entries_end - off
                    self.report.warnings.append(
                        f"{name}: {entries_end - off} bytes of an incomplete entry at the end of the live chunk "
                        "(a write in progress, or a crash not yet recovered) were not verified"
                    )
                    break
                raise self._fail(f"{name}: {exc}", "entry-format", self._next) from exc
            offsets.append(off)
            last_was_signature = self._add_entry(buf, e)
            last = e
            off = e.end
        if positions is not None and positions != offsets:
            raise self._fail(
                f"{name}: positions table does not match the entries",
                "chunk-positions",
                chunk.start,
            )
        if chunk.end is not None:
            if last is None or last.seqno != chunk.end:
                raise self._fail(
                    f"{name} holds entries up to {self._next - 1}, not {chunk.end} (truncated or extended chunk)",
                    "chunk-count",
                    self._next,
                )
            if not last_was_signature:
                raise self._fail(
                    f"{name} does not end on a signature transaction",
                    "chunk-signature",
                    last.seqno,
                    last.view,
                )
        else:
            self._open_chunk = True
        self.report.chunks += 1

    @staticmethod
    def _is_torn_tail(buf: memoryview, off: int, end: int) -> bool:
        """An entry whose declared size runs past the end of a live chunk: a write in progress."""
        if end - off < 8:
            return True
        header = int.from_bytes(buf[off : off + 8], "little")
        return header & 0xFF == 1 and off + 8 + (header >> 16) > end

    # --- entries ---

    def _add_entry(self, buf: memoryview, e: EntryView) -> bool:
        seqno = self._next
        if e.seqno != seqno or e.iv_seqno != seqno:
            raise self._fail(
                f"entry at position {seqno} declares seqno {e.seqno} (IV {e.iv_seqno}): "
                "deleted, duplicated or reordered entry",
                "entry-seqno",
                seqno,
                e.view,
            )
        if e.view < self._view:
            raise self._fail(f"view went back from {self._view} to {e.view}", "entry-view", seqno, e.view)
        if e.entry_type != TYPE_WRITE_SET_WITH_COMMIT_EVIDENCE_AND_CLAIMS or e.commit_evidence_digest is None:
            raise self._fail(
                f"entry type {e.entry_type} is not the type notarium writes (4)",
                "entry-type",
                seqno,
                e.view,
            )
        if e.snapshot or e.max_conflict_version != 0 or e.flags & ~_ALLOWED_FLAGS:
            raise self._fail("entry header has reserved fields set", "entry-format", seqno, e.view)
        raw = buf[e.start : e.end]
        wsd = hashlib.sha256(raw).digest()
        is_signature = False
        if e.tables_start < e.public_end:
            try:
                public = decode_tables(buf, e.tables_start, e.public_end)
            except VerificationError as exc:
                raise self._fail(str(exc), "entry-format", seqno, e.view) from exc
            is_signature = self._apply_public(public, e)
        self._view = e.view
        if is_signature:
            self._uncovered = []
        if self._secret is not None:
            self._uncovered.append((bytes(raw), e))
        self._frontier.append(hashlib.sha256(wsd + e.commit_evidence_digest + e.claims_digest).digest())
        self._next += 1
        self.report.transactions += 1
        self.report.unsigned_tail = 0 if is_signature else self.report.unsigned_tail + 1
        return is_signature

    def _apply_public(self, public: dict[str, dict[bytes, bytes | None]], e: EntryView) -> bool:
        if tables.SERVICE_INFO in public:
            self._apply_service_info(public[tables.SERVICE_INFO], e)
        if tables.NODES_ENDORSED_CERTS in public or tables.NODES_INFO in public:
            self._apply_nodes(public, e)
        if not SIGNATURE_TABLES.isdisjoint(public):
            self._check_signature(public, e)
            return True
        return False

    def _apply_nodes(self, public: dict[str, dict[bytes, bytes | None]], e: EntryView) -> None:
        for key, value in public.get(tables.NODES_INFO, {}).items():
            node_id = key.decode(errors="replace")
            if value is None:
                self._nodes.pop(node_id, None)
                continue
            try:
                info = json.loads(value)
                status = info["status"]
            except (ValueError, KeyError, TypeError) as exc:
                raise self._fail(f"nodes.info for {node_id[:16]} is malformed", "node-info", e.seqno, e.view) from exc
            self._nodes.setdefault(node_id, _Node()).status = status
        for key, value in public.get(tables.NODES_ENDORSED_CERTS, {}).items():
            node_id = key.decode(errors="replace")
            if value is None:
                self._nodes.pop(node_id, None)
                continue
            if self._pinned is None:
                raise self._fail(
                    "a node certificate appears before the service certificate",
                    "node-endorsement",
                    e.seqno,
                    e.view,
                )
            try:
                cert = load_pem_cert(value, "node certificate")
                check_endorsement(cert, self._pinned, "node certificate")
                key_ = ec_public_key(cert, "node certificate")
            except VerificationError as exc:
                raise self._fail(f"node {node_id[:16]}: {exc}", "node-endorsement", e.seqno, e.view) from exc
            if key_id(key_) != node_id:
                raise self._fail(
                    f"node id {node_id[:16]} is not the hash of its key",
                    "node-endorsement",
                    e.seqno,
                    e.view,
                )
            node = self._nodes.setdefault(node_id, _Node())
            node.cert_pem, node.key = value.decode(), key_

    def _apply_service_info(self, writes: dict[bytes, bytes | None], e: EntryView) -> None:
        value = writes.get(tables.SINGLETON_KEY)
        if value is None:
            raise self._fail(
                "service.info removed or written under a wrong key",
                "service-identity",
                e.seqno,
                e.view,
            )
        try:
            cert = load_pem_cert(json.loads(value)["cert"], "service certificate")
        except (ValueError, KeyError, TypeError, VerificationError) as exc:
            raise self._fail("service.info is malformed", "service-identity", e.seqno, e.view) from exc
        if self._pinned is None:
            self._pinned = cert
            self._service_key = ec_public_key(cert, "service certificate")
            self.report.warnings.append(
                "no service certificate was pinned: trusted the one the ledger names "
                "(pass --service-cert to verify against the identity you expect)"
            )
        elif cert != self._pinned:
            raise self._fail(
                "service.info names a different service certificate than the pinned one "
                "(ledger signed by another service)",
                "service-identity",
                e.seqno,
                e.view,
            )
        self._service_info_seen = True

    def _check_signature(self, public: dict[str, dict[bytes, bytes | None]], e: EntryView) -> None:
        seqno, view = e.seqno, e.view
        if e.has_private or e.claims_digest != bytes(32):
            raise self._fail(
                "a signature transaction has no private domain and no claims",
                "signature-format",
                seqno,
                view,
            )
        if not self._service_info_seen or self._service_key is None:
            raise self._fail("signature before the service identity was recorded", "signature-cose", seqno, view)

        def node_key(sig: PrimarySignature) -> ec.EllipticCurvePublicKey:
            node = self._nodes.get(sig.node)
            if node is None or node.key is None:
                raise VerificationError(f"signed by unknown node {sig.node[:16]}", check="signature-node")
            if node.status != "Trusted":
                raise VerificationError(
                    f"signed by node {sig.node[:16]} in state {node.status}", check="signature-node"
                )
            if sig.cert is not None and sig.cert != node.cert_pem:
                raise VerificationError(
                    "signature carries a certificate other than the node's endorsed one",
                    check="signature-node",
                )
            return node.key

        try:
            verify_signature_transaction(
                public,
                txid=TxId(view, seqno),
                root=self._frontier.root(),
                service_key=self._service_key,
                node_key=node_key,
            )
        except VerificationError as exc:
            raise self._fail(str(exc), exc.check or "signature", seqno, view) from exc
        self.report.signatures += 1
        self.report.last_signed = TxId(view, seqno)

    # --- end ---

    def _check_uncovered(self) -> None:
        if self._secret is None:
            return
        for raw, e in self._uncovered:
            ce = commit_evidence(self._secret, TxId(e.view, e.seqno))
            if commit_evidence_digest(ce) != e.commit_evidence_digest:
                raise self._fail(
                    "commit evidence digest does not derive from the ledger secret",
                    "entry-secret",
                    e.seqno,
                    e.view,
                )
            rel = e.public_end - e.start
            public = raw[FIXED_SIZE:rel]
            ciphertext = raw[rel:]
            iv = raw[24:36]  # after the 8-byte header and the 16-byte tag
            try:
                AESGCM(self._secret).decrypt(iv, ciphertext + e.tag, public)
            except InvalidTag as exc:
                raise self._fail("GCM tag does not authenticate the entry", "entry-secret", e.seqno, e.view) from exc
        self.report.secrets_checked = True

    def finish(self) -> AuditReport:
        """Final checks; returns the report or raises :class:`LedgerAuditError`."""
        if self.report.chunks == 0:
            raise LedgerAuditError("no ledger chunk files found", check="no-ledger")
        if self.report.signatures == 0:
            raise LedgerAuditError(
                "the ledger holds no signature transaction: nothing in it is verified",
                check="no-signature",
            )
        self._check_uncovered()
        return self.report
