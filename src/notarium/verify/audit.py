"""The ledger auditor: re-verifies a whole ledger from its chunk files, stricter than CCF's tools.

Two pure stages, so that chunks can be scanned in parallel:

* :func:`scan_chunk` checks one chunk file on its own: file layout and positions table, every
  entry's format, consecutive seqnos (public header and IV), views that never decrease, and for
  each signature transaction the cryptography that needs no outside state (the node signature
  with the certificate it carries, the COSE root signature with the pinned service key, the
  serialised tree). It hashes every entry and summarises the leaves with :func:`~notarium.verify.merkle.range_nodes`.
* :class:`LedgerAuditor` links the scans in order: chunks contiguous from seqno 1, the service
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
import hashlib
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
from notarium.verify import cose, tables
from notarium.verify.entry import (
    CHUNK_HEADER_SIZE,
    ENTRY_VERSION,
    FIXED_SIZE,
    TYPE_WRITE_SET_WITH_COMMIT_EVIDENCE_AND_CLAIMS,
    ChunkName,
    decode_tables,
    parse_entry,
    read_positions,
)
from notarium.verify.keys import check_endorsement, ec_public_key, key_id, load_pem_cert
from notarium.verify.leaf import commit_evidence_digest
from notarium.verify.merkle import ZERO_HASH, Frontier, deserialise_tree, range_nodes
from notarium.verify.secrets import commit_evidence
from notarium.verify.signature import (
    SIGNATURE_TABLES,
    PrimarySignature,
    check_cose_root_header,
    decode_cose_signature_value,
    verify_root_signature,
)

# one unpack for the fixed part of a type-4 entry: header, tag, IV (seqno, view), public size,
# then the public header: type, seqno, claims digest, commit evidence digest, max_conflict_version
_TYPE4 = struct.Struct("<Q16sQIQBQ32s32sQ")
_TYPE4_PUBLIC_HEADER = 81
_GOVERNANCE = frozenset(
    {
        tables.SERVICE_INFO,
        tables.NODES_INFO,
        tables.NODES_ENDORSED_CERTS,
        tables.PREVIOUS_SERVICE_IDENTITY,
        tables.PREVIOUS_IDENTITY_ENDORSEMENT,
    }
)


def _fail(message: str, check: str, seqno: int | None = None, view: int | None = None) -> LedgerAuditError:
    txid = None if seqno is None else (f"{view}.{seqno}" if view is not None else f"?.{seqno}")
    return LedgerAuditError(message, txid=txid, check=check)


# ---------------------------------------------------------------------------- stage 1: scan


@dataclass(frozen=True, slots=True)
class SignatureFacts:
    """What one signature transaction claims, with the self-contained checks already done."""

    position: int  # index of the entry within its chunk
    txid: TxId
    node: str
    cert_pem: str | None  # the node certificate it carries
    sig: bytes | None  # None once verified with that certificate; else verify against the node table
    root: bytes
    tree_size: int
    tree_root: bytes
    cose: bytes | None  # None once verified with the pinned service key; else verify when linking
    leaves_before: list[tuple[int, bytes]]  # the chunk's leaves since its start or its last signature


@dataclass(frozen=True, slots=True)
class GovernanceFacts:
    position: int
    txid: TxId
    tables: dict[str, dict[bytes, bytes | None]]


@dataclass(frozen=True, slots=True)
class ChunkScan:
    name: str
    start: int
    end: int | None  # from the name; None for the chunk being written
    count: int
    first_view: int
    last_view: int
    events: list[SignatureFacts | GovernanceFacts]
    leaves: list[tuple[int, bytes]]  # the chunk's leaves after its last signature
    tail: list[tuple[TxId, bytes]]  # raw entries from the chunk's last signature on (if asked)
    torn_tail_bytes: int


def _check_signature_tables(
    public: dict[str, dict[bytes, bytes | None]], txid: TxId, service_key: ec.EllipticCurvePublicKey | None
) -> tuple[PrimarySignature, bool, int, bytes, bytes | None]:
    if set(public) != SIGNATURE_TABLES or any(set(w) != {tables.SINGLETON_KEY} for w in public.values()):
        raise VerificationError(
            "a signature transaction must write exactly the signature, COSE signature and tree singletons",
            check="signature-format",
        )
    sig = PrimarySignature.from_json(public[tables.SIGNATURES][tables.SINGLETON_KEY] or b"")
    if sig.seqno != txid.seqno or sig.view != txid.view:
        raise VerificationError(f"signature claims to be {sig.view}.{sig.seqno}", check="signature-txid")
    # Checks that pass here are done; any that cannot be done or fail here are left for the
    # linking stage, which reports failures in ledger order (e.g. a foreign service identity at
    # genesis before the signature that it invalidates).
    node_verified = False
    if sig.cert is not None:
        try:
            key = ec_public_key(load_pem_cert(sig.cert, "signature certificate"), "signature certificate")
            if key_id(key) == sig.node:
                verify_root_signature(key, sig.root, sig.sig)
                node_verified = True
        except VerificationError:
            node_verified = False
    cose_bytes = decode_cose_signature_value(public[tables.COSE_SIGNATURES][tables.SINGLETON_KEY] or b"")
    cose_left: bytes | None = cose_bytes
    if service_key is not None:
        try:
            _verify_cose(cose_bytes, service_key, txid, sig.root)
            cose_left = None
        except VerificationError:
            cose_left = cose_bytes
    try:
        tree_size, tree_root = deserialise_tree(public[tables.TREE][tables.SINGLETON_KEY] or b"")
    except ValueError as exc:
        raise VerificationError(f"serialised tree: {exc}", check="signature-tree") from exc
    return sig, node_verified, tree_size, tree_root, cose_left


def _verify_cose(data: bytes, service_key: ec.EllipticCurvePublicKey, txid: TxId, root: bytes) -> None:
    try:
        sign1 = cose.Sign1.decode(data)
        check_cose_root_header(sign1, service_key, txid)
        sign1.verify_detached(service_key, root)
    except VerificationError as exc:
        raise VerificationError(f"COSE root signature: {exc}", check="signature-cose") from exc


def scan_chunk(name: str, data: bytes, *, service_key_der: bytes | None = None, want_tail: bool = False) -> ChunkScan:
    """Check one chunk file on its own (see the module docstring). Pure; raises LedgerAuditError."""
    chunk = ChunkName.parse(name)
    if chunk is None:
        raise _fail(f"{name!r} is not a ledger chunk file name", "chunk-name")
    if chunk.end is not None and chunk.end < chunk.start:
        raise _fail(f"{name} ends before it starts", "chunk-name")
    service_key = None
    if service_key_der is not None:
        loaded = serialization.load_der_public_key(service_key_der)
        if not isinstance(loaded, ec.EllipticCurvePublicKey):
            raise ValueError("the service key must be an elliptic-curve key")
        service_key = loaded
    buf = memoryview(data)
    try:
        entries_end, positions = read_positions(buf)
    except VerificationError as exc:
        raise _fail(f"{name}: {exc}", "chunk-positions", chunk.start) from exc
    if chunk.end is not None and positions is None:
        raise _fail(f"{name} is complete by name but has no positions table", "chunk-positions", chunk.start)

    sha = hashlib.sha256
    unpack = _TYPE4.unpack_from
    offsets: list[int] = []
    events: list[SignatureFacts | GovernanceFacts] = []
    segment: list[bytes] = []  # leaves since the chunk start or the last signature
    segment_begin = chunk.start
    seqno = chunk.start
    first_view = last_view = -1
    last_sig_pos = -1
    torn = 0
    off = CHUNK_HEADER_SIZE
    while off < entries_end:
        if entries_end - off < _TYPE4.size:
            if positions is None and _declares_beyond(buf, off, entries_end):
                torn = entries_end - off
                break
            raise _fail(f"{name}: truncated entry at offset {off}", "entry-format", seqno)
        header, _tag, iv_seqno, iv_view, pub_size, etype, e_seqno, claims, ced, mcv = unpack(buf, off)
        end = off + 8 + (header >> 16)
        if header & 0xFF != ENTRY_VERSION:
            raise _fail(f"{name}: unknown entry format version at offset {off}", "entry-format", seqno)
        if end > entries_end:
            if positions is None:
                torn = entries_end - off
                break
            raise _fail(f"{name}: entry at offset {off} runs past the end of its chunk", "entry-format", seqno)
        view = iv_view & 0x7FFFFFFF
        if e_seqno != seqno or iv_seqno != seqno:
            raise _fail(
                f"entry at position {seqno} declares seqno {e_seqno} (IV {iv_seqno}): "
                "deleted, duplicated or reordered entry",
                "entry-seqno",
                seqno,
                view,
            )
        if view < last_view:
            raise _fail(f"view went back from {last_view} to {view}", "entry-view", seqno, view)
        if etype != TYPE_WRITE_SET_WITH_COMMIT_EVIDENCE_AND_CLAIMS:
            raise _fail(f"entry type {etype} is not the type notarium writes (4)", "entry-type", seqno, view)
        pub_end = off + FIXED_SIZE + pub_size
        if iv_view & 0x80000000 or mcv != 0 or (header >> 8) & 0xFF:
            # notarium never sets entry flags (chunks end at signatures by size), nor snapshot bits
            raise _fail("entry header has flags or reserved fields set", "entry-format", seqno, view)
        if pub_size < _TYPE4_PUBLIC_HEADER or pub_end > end:
            raise _fail("public domain size is out of range", "entry-format", seqno, view)
        if first_view < 0:
            first_view = view
        last_view = view
        tables_start = off + FIXED_SIZE + _TYPE4_PUBLIC_HEADER
        if tables_start < pub_end:
            try:
                public = decode_tables(buf, tables_start, pub_end)
            except VerificationError as exc:
                raise _fail(str(exc), "entry-format", seqno, view) from exc
            txid = TxId(view, seqno)
            if not SIGNATURE_TABLES.isdisjoint(public):
                if end != pub_end or claims != ZERO_HASH:
                    raise _fail(
                        "a signature transaction has no private domain and no claims", "signature-format", seqno, view
                    )
                try:
                    sig, node_ok, tree_size, tree_root, cose_left = _check_signature_tables(public, txid, service_key)
                except VerificationError as exc:
                    raise _fail(str(exc), exc.check or "signature", seqno, view) from exc
                events.append(
                    SignatureFacts(
                        position=len(offsets),
                        txid=txid,
                        node=sig.node,
                        cert_pem=sig.cert,
                        sig=None if node_ok else sig.sig,
                        root=sig.root,
                        tree_size=tree_size,
                        tree_root=tree_root,
                        cose=cose_left,
                        leaves_before=range_nodes(segment_begin, segment),
                    )
                )
                last_sig_pos = len(offsets)
                segment, segment_begin = [], seqno
            elif not _GOVERNANCE.isdisjoint(public):
                events.append(GovernanceFacts(len(offsets), txid, public))
        offsets.append(off)
        segment.append(sha(sha(buf[off:end]).digest() + ced + claims).digest())
        seqno += 1
        off = end
    if positions is not None and positions != offsets:
        raise _fail(f"{name}: positions table does not match the entries", "chunk-positions", chunk.start)
    count = len(offsets)
    if chunk.end is not None:
        if chunk.start + count - 1 != chunk.end:
            raise _fail(
                f"{name} holds entries up to {chunk.start + count - 1}, not {chunk.end} (truncated or extended chunk)",
                "chunk-count",
                chunk.start + count,
            )
        if last_sig_pos != count - 1:
            raise _fail(f"{name} does not end on a signature transaction", "chunk-signature", chunk.end, last_view)
    tail: list[tuple[TxId, bytes]] = []
    if want_tail:
        for i in range(max(last_sig_pos, 0), count):
            lo = offsets[i]
            hi = offsets[i + 1] if i + 1 < count else entries_end - torn
            raw = bytes(buf[lo:hi])
            view = struct.unpack_from("<I", raw, 32)[0] & 0x7FFFFFFF
            tail.append((TxId(view, chunk.start + i), raw))
    return ChunkScan(
        name=name,
        start=chunk.start,
        end=chunk.end,
        count=count,
        first_view=first_view,
        last_view=last_view,
        events=events,
        leaves=range_nodes(segment_begin, segment),
        tail=tail,
        torn_tail_bytes=torn,
    )


def _declares_beyond(buf: memoryview, off: int, end: int) -> bool:
    """An entry whose header declares more bytes than the live chunk holds: a write in progress."""
    if end - off < 8:
        return True
    header = int.from_bytes(buf[off : off + 8], "little")
    return header & 0xFF == ENTRY_VERSION and off + 8 + (header >> 16) > end


# ---------------------------------------------------------------------------- stage 2: link


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
            raise _fail(f"{scan.name} follows an unfinished chunk", "chunk-order")
        if scan.start != expected:
            raise _fail(
                f"{scan.name} starts at seqno {scan.start}, expected {expected} "
                "(missing, duplicated or reordered chunk)",
                "chunk-order",
                expected,
            )
        if scan.count and scan.first_view < self._view:
            raise _fail(f"view went back from {self._view} to {scan.first_view}", "entry-view", scan.start)
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
            raise _fail(
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
                raise _fail(f"nodes.info for {node_id[:16]} is malformed", "node-info", *_sv(g.txid)) from exc
            self._nodes.setdefault(node_id, _Node()).status = status
        for key, value in g.tables.get(tables.NODES_ENDORSED_CERTS, {}).items():
            node_id = key.decode(errors="replace")
            if value is None:
                self._nodes.pop(node_id, None)
                continue
            if self._in_force is None:
                raise _fail(
                    "a node certificate appears before the service certificate", "node-endorsement", *_sv(g.txid)
                )
            try:
                cert = load_pem_cert(value, "node certificate")
                check_endorsement(cert, self._in_force, "node certificate")
                node_key = ec_public_key(cert, "node certificate")
            except VerificationError as exc:
                raise _fail(f"node {node_id[:16]}: {exc}", "node-endorsement", *_sv(g.txid)) from exc
            if key_id(node_key) != node_id:
                raise _fail(f"node id {node_id[:16]} is not the hash of its key", "node-endorsement", *_sv(g.txid))
            try:
                pem = value.decode("ascii")
            except UnicodeDecodeError as exc:
                raise _fail(
                    f"node {node_id[:16]}: certificate is not ASCII PEM", "node-endorsement", *_sv(g.txid)
                ) from exc
            node = self._nodes.setdefault(node_id, _Node())
            node.cert_pem, node.key, node.epoch = pem, node_key, self._epoch

    def _apply_service_info(
        self, writes: Mapping[bytes, bytes | None], txid: TxId, written: Mapping[str, Mapping[bytes, bytes | None]]
    ) -> None:
        value = writes.get(tables.SINGLETON_KEY)
        if value is None or set(writes) != {tables.SINGLETON_KEY}:
            raise _fail("service.info removed or written under a wrong key", "service-identity", *_sv(txid))
        try:
            info: Any = json.loads(value)
            cert = load_pem_cert(info["cert"], "service certificate")
        except (ValueError, KeyError, TypeError, VerificationError) as exc:
            raise _fail("service.info is malformed", "service-identity", *_sv(txid)) from exc
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
            raise _fail(
                "a previous service identity is recorded without a service identity change",
                "service-identity-endorsement",
                *_sv(txid),
            )
        self._service_info_seen = True

    def _set_identity(self, cert: x509.Certificate, txid: TxId) -> None:
        try:
            self._in_force_key = ec_public_key(cert, "service certificate")
        except VerificationError as exc:
            raise _fail(str(exc), "service-identity", *_sv(txid)) from exc
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
            raise _fail("no service identity to change", "service-identity", *_sv(txid))
        endorsement_pem = written.get(tables.PREVIOUS_IDENTITY_ENDORSEMENT, {}).get(tables.SINGLETON_KEY)
        previous_pem = written.get(tables.PREVIOUS_SERVICE_IDENTITY, {}).get(tables.SINGLETON_KEY)
        if endorsement_pem is None or previous_pem is None:
            raise _fail(
                "the service identity changes without a recorded endorsement of the previous one",
                "service-identity-endorsement",
                *_sv(txid),
            )
        try:
            endorsement = load_pem_cert(endorsement_pem, "previous identity endorsement")
            check_endorsement(endorsement, cert, "previous identity endorsement")
            recorded_previous = load_pem_cert(previous_pem, "previous service identity")
        except VerificationError as exc:
            raise _fail(str(exc), "service-identity-endorsement", *_sv(txid)) from exc
        if recorded_previous != previous or endorsement.public_key() != previous.public_key():
            raise _fail(
                "the recorded endorsement does not certify the service identity in force",
                "service-identity-endorsement",
                *_sv(txid),
            )
        if info.get("previous_service_identity_version") != self._created:
            raise _fail(
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
            raise _fail("signature is not at its position", "signature-txid", seqno, view)
        root = self._frontier.root()
        if s.root != root:
            raise _fail("signed root does not match the root rebuilt from the ledger", "signature-root", seqno, view)
        if s.tree_size != seqno or s.tree_root != root:
            raise _fail("serialised tree does not rebuild the signed root", "signature-tree", seqno, view)
        node = self._nodes.get(s.node)
        if node is None or node.key is None:
            raise _fail(f"signed by unknown node {s.node[:16]}", "signature-node", seqno, view)
        if node.status != "Trusted":
            raise _fail(f"signed by node {s.node[:16]} in state {node.status}", "signature-node", seqno, view)
        if node.epoch != self._epoch:
            raise _fail(f"signed by node {s.node[:16]} of a previous service identity", "signature-node", seqno, view)
        if s.cert_pem is not None and s.cert_pem != node.cert_pem:
            raise _fail(
                "signature carries a certificate other than the node's endorsed one", "signature-node", seqno, view
            )
        if s.sig is not None:
            try:
                verify_root_signature(node.key, root, s.sig)
            except VerificationError as exc:
                raise _fail(str(exc), "signature-node", seqno, view) from exc
        try:
            if not self._service_info_seen or self._in_force_key is None:
                raise VerificationError("signature before the service identity was recorded", check="signature-cose")
            if s.cose is not None:
                _verify_cose(s.cose, self._in_force_key, s.txid, root)
            elif self._in_force_key != self._service_key:
                raise VerificationError(
                    "COSE root signature by the pinned service key while another identity is in force",
                    check="signature-cose",
                )
        except VerificationError as exc:
            raise _fail(str(exc), exc.check or "signature", seqno, view) from exc
        self.report.signatures += 1
        self.report.last_signed = s.txid

    # --- end ---

    def _check_uncovered(self) -> None:
        if self._secret is None:
            return
        for txid, raw in self._uncovered:
            problem = entry_secret_problem(raw, txid, self._secret)
            if problem is not None:
                raise _fail(problem, "entry-secret", *_sv(txid))
        self.report.secrets_checked = True

    def finish(self) -> AuditReport:
        """Final checks; returns the report or raises :class:`LedgerAuditError`."""
        if self.report.chunks == 0:
            raise LedgerAuditError("no ledger chunk files found", check="no-ledger")
        if self._unconfirmed is not None:
            raise _fail(
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
    _header, tag, _iv_seqno, _iv_view, pub_size, _t, _s, _claims, ced, _m = _TYPE4.unpack_from(raw, 0)
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
