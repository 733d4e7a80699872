"""The checks of downloaded chunk files (:mod:`notarium.client.export`): each chunk on its own with
the pinned service key (in worker processes for large chunks), and linked to the one before it
(seqnos follow on, the Merkle frontier carries over, every signature's root is the root of all
leaves before it). A failure is a :class:`ChunkVerificationError` naming the chunk and the check."""

from __future__ import annotations

import hashlib
import struct
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from notarium.errors import LedgerAuditError, VerificationError
from notarium.verify import tables
from notarium.verify.chunk import ChunkScan, SignatureFacts, scan_chunk
from notarium.verify.entry import decode_tables, parse_entry, read_positions
from notarium.verify.keys import check_endorsement, load_pem_cert
from notarium.verify.merkle import ZERO_HASH, Frontier, range_nodes


@dataclass(frozen=True, slots=True)
class RemoteChunk:
    """One completed chunk, as the ledger lists it (untrusted until its bytes verify)."""

    name: str
    first_seqno: int
    last_seqno: int
    size: int
    sha256: str


class ChunkVerificationError(VerificationError):
    """A downloaded chunk failed a check; ``chunk`` is its file name. It was not put in place."""

    def __init__(self, chunk: str, message: str, *, check: str) -> None:
        super().__init__(f"{chunk}: {message}", check=check)
        self.chunk = chunk
        self.detail = message

    def __reduce__(self) -> tuple[Any, tuple[str, str, str]]:
        # it crosses from the worker processes that verify chunks
        return (_chunk_error, (self.chunk, self.detail, self.check))


def _chunk_error(chunk: str, message: str, check: str) -> ChunkVerificationError:
    return ChunkVerificationError(chunk, message, check=check)


# --- verification ----------------------------------------------------------------------------------------


class ChunkChecker:
    """The checks of one chunk that need only the pinned service certificate and the chunk before it.

    It keeps the Merkle frontier (the peaks of the tree of every leaf so far) from chunk to chunk:
    every signature's root must be the root of the leaves before it. After a chunk that was already
    exported (not scanned in this run), the frontier is rebuilt from that chunk's last signature:
    its serialised tree, whose root the service signed, plus the signature's own leaf.
    """

    def __init__(self, pinned: x509.Certificate, key_der: bytes) -> None:
        self._pinned = pinned
        self._key_der = key_der
        self._endorsed: set[str] = set()  # node certificates (PEM) already checked against the pinned one
        self._frontier: Frontier | None = None  # of the leaves before the next chunk
        self._last_view = 0
        self._skipped: Path | None = None  # an already exported chunk right before the next one

    def skipped(self, final: Path) -> None:
        self._frontier, self._skipped = None, final

    def link(self, chunk: RemoteChunk, digest: str, size: int, scan: ChunkScan) -> None:
        """The checks of a chunk scanned already (perhaps in a worker), in order after the previous one."""
        if size != chunk.size:
            raise ChunkVerificationError(
                chunk.name, f"{size} bytes arrived, the ledger listed {chunk.size}", check="chunk-size"
            )
        if digest != chunk.sha256:
            raise ChunkVerificationError(
                chunk.name, "the bytes received do not have the SHA-256 the ledger listed", check="chunk-digest"
            )
        frontier = self._frontier_before(chunk)
        if frontier.size != chunk.first_seqno:  # cannot happen: the listing is contiguous from seqno 1
            raise ValueError(f"the tree before {chunk.name} holds {frontier.size} leaves")
        if scan.start != chunk.first_seqno or scan.end != chunk.last_seqno:  # the name is the listing's
            raise ChunkVerificationError(chunk.name, "holds other seqnos than its name says", check="chunk-count")
        if scan.first_view < self._last_view:
            raise ChunkVerificationError(
                chunk.name,
                f"its first view {scan.first_view} is before the view {self._last_view} the previous chunk ends in",
                check="entry-view",
            )
        signatures = [e for e in scan.events if isinstance(e, SignatureFacts)]
        if not signatures:
            raise ChunkVerificationError(chunk.name, "holds no signature transaction", check="chunk-signature")
        for s in signatures:
            self._check_signature(chunk.name, s)
            frontier.extend(s.leaves_before)
            if frontier.size != s.txid.seqno or frontier.root() != s.root:
                raise ChunkVerificationError(
                    chunk.name,
                    f"the root signed at {s.txid} is not the root of the ledger's entries before it "
                    "(an entry was changed, removed or inserted)",
                    check="signature-root",
                )
        frontier.extend(scan.leaves)
        self._frontier, self._last_view, self._skipped = frontier, scan.last_view, None

    def _scan(self, name: str, data: bytes) -> ChunkScan:
        try:
            return scan_chunk(name, data, service_key_der=self._key_der)
        except LedgerAuditError as exc:
            where = f" at TxId {exc.txid}" if exc.txid else ""
            raise ChunkVerificationError(name, f"{exc}{where}", check=exc.check or "chunk") from exc

    def _frontier_before(self, chunk: RemoteChunk) -> Frontier:
        if self._frontier is not None:
            return self._frontier
        if chunk.first_seqno == 1:
            frontier = Frontier()
            frontier.append(ZERO_HASH)  # leaf 0 stands for no transaction
            return frontier
        previous = self._skipped
        if previous is None:  # cannot happen: the listing is contiguous from seqno 1
            raise ValueError(f"no chunk before {chunk.name}")
        data = previous.read_bytes()
        scan = self._scan(previous.name, data)
        last = scan.events[-1] if scan.events else None
        if not isinstance(last, SignatureFacts) or last.position != scan.count - 1:
            raise ChunkVerificationError(previous.name, "does not end on a signature", check="chunk-signature")
        self._check_signature(previous.name, last)
        frontier = _signed_tree(previous.name, data)
        if frontier.size != last.txid.seqno or frontier.root() != last.root:
            raise ChunkVerificationError(
                previous.name,
                f"the serialised tree of signature {last.txid} is not the signed root",
                check="signature-tree",
            )
        frontier.extend(scan.leaves)  # the signature's own leaf
        self._last_view = scan.last_view
        return frontier

    def _check_signature(self, name: str, s: SignatureFacts) -> None:
        if s.cose is not None:
            raise ChunkVerificationError(
                name,
                f"the COSE root signature of {s.txid} does not verify with the pinned service key",
                check="signature-cose",
            )
        if s.cert_pem is None or s.sig is not None:
            raise ChunkVerificationError(
                name,
                f"the node signature of {s.txid} does not verify with the node certificate it carries",
                check="signature-node",
            )
        if s.cert_pem not in self._endorsed:
            try:
                check_endorsement(load_pem_cert(s.cert_pem, "node certificate"), self._pinned, "node certificate")
            except VerificationError as exc:
                raise ChunkVerificationError(name, f"signature {s.txid}: {exc}", check="signature-node") from exc
            self._endorsed.add(s.cert_pem)
        if s.tree_size != s.txid.seqno or s.tree_root != s.root:
            raise ChunkVerificationError(
                name, f"the serialised tree of signature {s.txid} is not the signed root", check="signature-tree"
            )


def digest_and_scan(path: str, key_der: bytes) -> tuple[str, int, ChunkScan]:
    """SHA-256, size and scan of a downloaded chunk (a worker's job: no state but the pinned key)."""
    data = Path(path).read_bytes()
    name = Path(path).name.removeprefix(".").removesuffix(".partial")
    try:
        scan = scan_chunk(name, data, service_key_der=key_der)
    except LedgerAuditError as exc:
        where = f" at TxId {exc.txid}" if exc.txid else ""
        raise ChunkVerificationError(name, f"{exc}{where}", check=exc.check or "chunk") from exc
    return hashlib.sha256(data).hexdigest(), len(data), scan


def scanned_result(name: str, future: Future[tuple[str, int, ChunkScan]]) -> tuple[str, int, ChunkScan]:
    try:
        return future.result()
    except ChunkVerificationError:
        raise
    except VerificationError as exc:
        raise ChunkVerificationError(name, str(exc), check=exc.check or "chunk") from exc


def _signed_tree(name: str, data: bytes) -> Frontier:
    """The frontier serialised in the last entry (a signature transaction) of a completed chunk."""
    try:
        _end, positions = read_positions(data)
        if not positions:
            raise VerificationError("no entries")
        entry = parse_entry(data, positions[-1])
        public = decode_tables(data, entry.tables_start, entry.public_end)
        tree = public.get(tables.TREE, {}).get(tables.SINGLETON_KEY)
        if tree is None or len(tree) < 16:
            raise VerificationError("its last entry holds no serialised tree")
        # as notarium.verify.merkle.deserialise_tree, keeping the frontier rather than only its root
        n_leaves, n_flushed = struct.unpack_from(">QQ", tree, 0)
        n_peaks = n_flushed.bit_count()
        if len(tree) != 16 + 32 * (n_leaves + n_peaks):
            raise VerificationError("its serialised tree is malformed")
        hashes = [tree[16 + 32 * i : 48 + 32 * i] for i in range(n_leaves + n_peaks)]
        # the peaks of the flushed part come smallest first, after the unflushed leaves
        frontier = Frontier.from_peaks(n_flushed, list(reversed(hashes[n_leaves:])))
        frontier.extend(range_nodes(n_flushed, hashes[:n_leaves]))
    except (VerificationError, ValueError) as exc:
        raise ChunkVerificationError(
            name, f"cannot read its last signature's tree: {exc}", check="signature-tree"
        ) from exc
    return frontier
