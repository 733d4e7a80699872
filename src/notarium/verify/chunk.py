"""Verifying one ledger file (chunk) on its own, the first stage of an audit (:mod:`.audit` links
the chunks into one ledger).

:func:`scan_chunk` checks: the file name and layout, the positions table, every entry's format,
consecutive seqnos (public header and IV), views that never decrease, and for each signature
transaction the cryptography that needs no outside state: the node signature with the
certificate it carries, the COSE root signature with the pinned service key, and the serialised
tree. It hashes every entry into its Merkle leaf and summarises the leaves with
:func:`~notarium.verify.merkle.range_nodes`, so that chunks can be scanned in parallel and linked
in order. What it cannot check alone (roots against all earlier entries, signing nodes trusted
by the ledger's governance) it hands on as facts.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

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
    read_positions,
)
from notarium.verify.keys import ec_public_key, key_id, load_pem_cert
from notarium.verify.merkle import ZERO_HASH, deserialise_tree, range_nodes
from notarium.verify.signature import (
    SIGNATURE_TABLES,
    PrimarySignature,
    check_cose_root_header,
    decode_cose_signature_value,
    verify_root_signature,
)

# one unpack for the fixed part of a type-4 entry: header, tag, IV (seqno, view), public size,
# then the public header: type, seqno, claims digest, commit evidence digest, max_conflict_version
TYPE4 = struct.Struct("<Q16sQIQBQ32s32sQ")
TYPE4_PUBLIC_HEADER = 81
_GOVERNANCE = frozenset(
    {
        tables.SERVICE_INFO,
        tables.NODES_INFO,
        tables.NODES_ENDORSED_CERTS,
        tables.PREVIOUS_SERVICE_IDENTITY,
        tables.PREVIOUS_IDENTITY_ENDORSEMENT,
    }
)


def audit_failure(message: str, check: str, seqno: int | None = None, view: int | None = None) -> LedgerAuditError:
    txid = None if seqno is None else (f"{view}.{seqno}" if view is not None else f"?.{seqno}")
    return LedgerAuditError(message, txid=txid, check=check)


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
            verify_cose_root(cose_bytes, service_key, txid, sig.root)
            cose_left = None
        except VerificationError:
            cose_left = cose_bytes
    try:
        tree_size, tree_root = deserialise_tree(public[tables.TREE][tables.SINGLETON_KEY] or b"")
    except ValueError as exc:
        raise VerificationError(f"serialised tree: {exc}", check="signature-tree") from exc
    return sig, node_verified, tree_size, tree_root, cose_left


def verify_cose_root(data: bytes, service_key: ec.EllipticCurvePublicKey, txid: TxId, root: bytes) -> None:
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
        raise audit_failure(f"{name!r} is not a ledger chunk file name", "chunk-name")
    if chunk.end is not None and chunk.end < chunk.start:
        raise audit_failure(f"{name} ends before it starts", "chunk-name")
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
        raise audit_failure(f"{name}: {exc}", "chunk-positions", chunk.start) from exc
    if chunk.end is not None and positions is None:
        raise audit_failure(f"{name} is complete by name but has no positions table", "chunk-positions", chunk.start)

    sha = hashlib.sha256
    unpack = TYPE4.unpack_from
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
        if entries_end - off < TYPE4.size:
            if positions is None and _declares_beyond(buf, off, entries_end):
                torn = entries_end - off
                break
            raise audit_failure(f"{name}: truncated entry at offset {off}", "entry-format", seqno)
        header, _tag, iv_seqno, iv_view, pub_size, etype, e_seqno, claims, ced, mcv = unpack(buf, off)
        end = off + 8 + (header >> 16)
        if header & 0xFF != ENTRY_VERSION:
            raise audit_failure(f"{name}: unknown entry format version at offset {off}", "entry-format", seqno)
        if end > entries_end:
            if positions is None:
                torn = entries_end - off
                break
            raise audit_failure(f"{name}: entry at offset {off} runs past the end of its chunk", "entry-format", seqno)
        view = iv_view & 0x7FFFFFFF
        if e_seqno != seqno or iv_seqno != seqno:
            raise audit_failure(
                f"entry at position {seqno} declares seqno {e_seqno} (IV {iv_seqno}): "
                "deleted, duplicated or reordered entry",
                "entry-seqno",
                seqno,
                view,
            )
        if view < last_view:
            raise audit_failure(f"view went back from {last_view} to {view}", "entry-view", seqno, view)
        if etype != TYPE_WRITE_SET_WITH_COMMIT_EVIDENCE_AND_CLAIMS:
            raise audit_failure(f"entry type {etype} is not the type notarium writes (4)", "entry-type", seqno, view)
        pub_end = off + FIXED_SIZE + pub_size
        if iv_view & 0x80000000 or mcv != 0 or (header >> 8) & 0xFF:
            # notarium never sets entry flags (chunks end at signatures by size), nor snapshot bits
            raise audit_failure("entry header has flags or reserved fields set", "entry-format", seqno, view)
        if pub_size < TYPE4_PUBLIC_HEADER or pub_end > end:
            raise audit_failure("public domain size is out of range", "entry-format", seqno, view)
        if first_view < 0:
            first_view = view
        last_view = view
        tables_start = off + FIXED_SIZE + TYPE4_PUBLIC_HEADER
        if tables_start < pub_end:
            try:
                public = decode_tables(buf, tables_start, pub_end)
            except VerificationError as exc:
                raise audit_failure(str(exc), "entry-format", seqno, view) from exc
            txid = TxId(view, seqno)
            if not SIGNATURE_TABLES.isdisjoint(public):
                if end != pub_end or claims != ZERO_HASH:
                    raise audit_failure(
                        "a signature transaction has no private domain and no claims", "signature-format", seqno, view
                    )
                try:
                    sig, node_ok, tree_size, tree_root, cose_left = _check_signature_tables(public, txid, service_key)
                except VerificationError as exc:
                    raise audit_failure(str(exc), exc.check or "signature", seqno, view) from exc
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
        raise audit_failure(f"{name}: positions table does not match the entries", "chunk-positions", chunk.start)
    count = len(offsets)
    if chunk.end is not None:
        if chunk.start + count - 1 != chunk.end:
            raise audit_failure(
                f"{name} holds entries up to {chunk.start + count - 1}, not {chunk.end} (truncated or extended chunk)",
                "chunk-count",
                chunk.start + count,
            )
        if last_sig_pos != count - 1:
            raise audit_failure(
                f"{name} does not end on a signature transaction", "chunk-signature", chunk.end, last_view
            )
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
