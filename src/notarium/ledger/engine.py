"""The ledger engine: sequence, encrypt, sign, persist, and prove transactions.

Life of a transaction (docs/design/durability.md):

1. ``append`` assigns the next seqno in the current view, serialises the entry in CCF's format
   (private domain encrypted under the ledger secret), adds its leaf to the Merkle tree and
   queues it. The caller gets its TxId at once: status *Pending*.
2. A signature transaction follows every ``signature_tx_count`` transactions (emitted by the
   appender that reaches the count) and, at the latest, ``signature_interval`` after the first
   unsigned one (emitted by the flusher thread). The flusher appends the queued entries and
   signatures to the chunk file and ``fsync``s (group commit).
3. Only then does it index the batch and publish the signature's seqno as committed: every
   transaction up to it is *Committed* and has receipts.

A crash loses at most the transactions after the last durable signature; they become *Invalid*.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _encode_json_string
from typing import TYPE_CHECKING, Any, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID

from notarium.errors import LedgerError, NotPrimaryError, ServiceError, VerificationError
from notarium.ledger.durable import lock_exclusive, replace
from notarium.ledger.fastcrypto import HmacKey, RandomPool
from notarium.ledger.identity import NODE_CERT_DAYS, NodeIdentity, cert_pem, node_certificate, service_certificate
from notarium.ledger.index import (
    KIND_ENTRY,
    KIND_OTHER,
    KIND_SIGNATURE,
    CollectionRow,
    Index,
    IndexState,
    Row,
    StateWrite,
    TagRow,
    TxLocation,
)
from notarium.ledger.indexkeys import IndexKeys
from notarium.ledger.layout import Layout, ServiceConfig
from notarium.ledger.storage.files import ChunkFiles
from notarium.ledger.tree import TILE_HEIGHT, TreeStore
from notarium.recovery.chain import ChainRecord, LedgerSecrets
from notarium.recovery.shares import RecoverySharesRecord, issue_shares
from notarium.types import TxId, TxStatus
from notarium.verify import tables
from notarium.verify.consistency import SignedRoot, consistency_proof, verify_extension, verify_signed_root
from notarium.verify.cose import encode_sign1, sign_detached
from notarium.verify.entry import (
    CHUNK_HEADER_SIZE,
    ENTRY_HEADER_SIZE,
    FIXED_SIZE,
    GCM_IV_SIZE,
    GCM_TAG_SIZE,
    EntryView,
    Tables,
    assemble_entry,
    decode_tables,
    encode_public_header,
    encode_single_write,
    encode_tables,
    gcm_iv,
    parse_entry,
    read_positions,
)
from notarium.verify.keys import check_endorsement, ec_public_key, key_id, load_pem_cert
from notarium.verify.leaf import ZERO_CLAIMS, claim_inner_from_macs, single_claim_digest
from notarium.verify.merkle import Frontier, serialise_tree
from notarium.verify.receipt import (
    LeafComponents,
    build_cose_receipt,
    build_json_receipt,
    verify_cose_receipt,
    verify_json_receipt,
)
from notarium.verify.secrets import commit_evidence_from_commit_secret, commit_secret
from notarium.verify.signature import (
    SIGNATURE_TABLES,
    PrimarySignature,
    cose_root_protected_header,
    decode_cose_signature_value,
    sign_root,
    verify_signature_transaction,
)

if TYPE_CHECKING:
    from notarium.recovery.sealing import Sealer

log = logging.getLogger("notarium.ledger")

DEFAULT_COLLECTION = "subledger:0"
_MAX_SEQNO = 2**63 - 1
# public internal tables whose latest values the index keeps too (besides tables.STATE_PREFIXES)
_INDEXED_INTERNAL = frozenset({tables.RECOVERY_SHARES, tables.HISTORICAL_LEDGER_SECRET})


LogRow = tuple[int, int, bool, bytes]
"""One transaction of a replicated log: seqno, view, is a signature, the entry's bytes."""


class ReplicaLog(Protocol):
    """Where a replicated ledger commits (notarium.ledger.storage.postgres.PostgresLog): the
    primary appends each signed batch, fenced by its lease, before it counts as Committed."""

    def append(self, view: int, holder: str, rows: Sequence[LogRow]) -> None: ...


class SecretCourier(Protocol):
    """Carries a new ledger secret to the other nodes of a replicated service through the log
    (notarium.cluster.join.NodeCourier): sealed to each trusted node's key in the rekey itself."""

    def seal_for_nodes(self, ledger: Ledger, secret: bytes, start: int) -> dict[bytes, bytes]: ...
    def open_for_node(self, ledger: Ledger, sealed: bytes, start: int) -> bytes: ...


class _SecretKey:
    """What the engine derives from one ledger secret."""

    __slots__ = ("aead", "ce_mac", "commit_secret", "index")

    def __init__(self, secret: bytes) -> None:
        self.aead = AESGCM(secret)
        self.commit_secret = commit_secret(secret)
        self.ce_mac = HmacKey(self.commit_secret)
        self.index = IndexKeys(secret)  # tokens and sealed names of the lookup index


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Engine tunables. Times in milliseconds, sizes in bytes."""

    signature_interval_ms: float = 10.0
    signature_tx_count: int = 5000
    chunk_size: int = 5_000_000
    fsync: bool = True
    max_unsigned: int = 100_000  # appends wait while this many transactions await a signature
    # False: signature transactions only when sign() is called, so that a sequencer outside the
    # engine (the HTTP front process) knows every seqno in advance; it must then keep to the two
    # limits above itself
    auto_sign: bool = True

    def __post_init__(self) -> None:
        if self.signature_interval_ms <= 0 or self.signature_tx_count < 1 or self.chunk_size < 1:
            raise ValueError("signature interval, signature count and chunk size must be positive")


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    txid: TxId
    collection_id: str
    contents: str
    tags: str | None
    claims_secret: bytes

    def application_claims(self) -> list[dict[str, Any]]:
        """The ACL ``LedgerEntry`` application claim that the receipt's claims digest commits to."""
        return [
            {
                "kind": "LedgerEntry",
                "ledgerEntry": {
                    "collectionId": self.collection_id,
                    "contents": self.contents,
                    "protocol": "LedgerEntryV1",
                    "secretKey": base64.b64encode(self.claims_secret).decode(),
                },
            }
        ]


@dataclass(frozen=True, slots=True)
class Receipt:
    txid: TxId
    receipt: dict[str, Any]
    application_claims: list[dict[str, Any]] | None


class _IndexBatch:
    """What the index learns from a run of transactions (tokens, not collection ids or tags:
    :mod:`notarium.ledger.indexkeys`)."""

    __slots__ = ("collections", "rows", "tags", "tokens", "writes")

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.tags: list[TagRow] = []
        self.writes: list[StateWrite] = []
        self.collections: dict[bytes, CollectionRow] = {}  # collection tokens new to the index
        self.tokens: dict[tuple[int, str], bytes] = {}  # (ledger secret, collection id) → token

    def add(self, row: Row, writes: list[tuple[str, bytes, bytes | None]]) -> None:
        seqno = row[0]
        self.rows.append(row)
        self.writes.extend((table, key, value, seqno) for table, key, value in writes)

    def extend(self, other: _IndexBatch) -> None:
        self.rows += other.rows
        self.tags += other.tags
        self.writes += other.writes
        for token, row in other.collections.items():
            self.collections.setdefault(token, row)


_Extras = tuple[list[str], list[tuple[str, bytes, bytes | None]]]
"""What a transaction adds to the index besides its row: tags, state writes."""


def check_write_set(public: Tables, private: Tables | None) -> None:
    """``ValueError`` unless public tables are named ``public:…`` and private ones are not."""
    for name in public:
        if not name.startswith("public:"):
            raise ValueError(f"public table names start with 'public:': {name!r}")
    for name in private or {}:
        if name.startswith("public:"):
            raise ValueError(f"private table names must not start with 'public:': {name!r}")


def _split_tags(tags: str | None) -> list[str]:
    return [t for t in (tags or "").split(",") if t]


def _state_writes(public: Mapping[str, Mapping[bytes, bytes | None]]) -> list[tuple[str, bytes, bytes | None]]:
    """Writes to the public state tables the index keeps (governance, notarium's own; not entries)."""
    return [
        (name, key, value)
        for name, writes in public.items()
        if (name.startswith(tables.STATE_PREFIXES) or name in _INDEXED_INTERNAL) and name != tables.ENTRIES_PUBLIC
        for key, value in writes.items()
    ]


class _Pending:
    """Transactions sequenced but not yet written. A closed batch has a seqno reserved for the
    signature transaction that will follow its entries."""

    __slots__ = ("entries", "extras", "first_seqno", "first_time", "rows", "signature_seqno")

    def __init__(self, first_seqno: int) -> None:
        self.first_seqno = first_seqno
        self.signature_seqno = 0  # set when the batch is closed
        self.entries: list[bytes] = []
        self.rows: list[tuple[int, int, int, str | None, bytes]] = []  # seqno, view, kind, collection, leaf
        self.extras: dict[int, tuple[list[str], list[tuple[str, bytes, bytes | None]]]] = {}  # seqno → tags, writes
        self.first_time = 0.0


class Ledger:
    """One node's ledger over a service directory. Thread-safe."""

    def __init__(
        self,
        layout: Layout,
        service: ServiceConfig,
        identity: NodeIdentity,
        ledger_secret: bytes | LedgerSecrets,
        config: EngineConfig = EngineConfig(),
        *,
        rng: Callable[[int], bytes] | None = None,
        clock: Callable[[], float] = time.time,
        genesis: Tables | None = None,
        sealer: Sealer | None = None,
        replica: ReplicaLog | None = None,
        courier: SecretCourier | None = None,
    ) -> None:
        """``ledger_secret``: the secrets in force (one secret: in force from seqno 1). ``sealer``
        keeps them across restarts: a rekey seals the new secret there before using it.

        ``replica``: a replicated ledger (docs/design/ha.md). The ledger opens as a *follower*: it
        takes no writes, and :meth:`follow` verifies transactions read from the replicated log and
        adds them to the local files; :meth:`promote` makes it the primary of a view, whose signed
        batches go to ``replica`` (fenced by the lease) before they count as Committed. ``courier``
        carries new ledger secrets between its nodes (a replicated ledger without one cannot rekey)."""
        self.layout = layout
        self.service = service
        self.identity = identity
        self.config = config
        self._rng = rng or RandomPool()
        self._clock = clock
        self._private = service.ledger_type == "Private"
        self._entries_table = tables.ENTRIES_PRIVATE if self._private else tables.ENTRIES_PUBLIC
        self._sealer = sealer
        self._replica = replica
        self._courier = courier
        self._primary = replica is None  # a replicated ledger sequences only once promoted
        self._known_view = 0  # follower: the newest view the service is known to have begun
        self.state_version = 0  # follower: grows each time replicated state tables change
        self._set_secrets(
            ledger_secret if isinstance(ledger_secret, LedgerSecrets) else LedgerSecrets.single(ledger_secret)
        )
        self._recovery: RecoverySharesRecord | None = None
        self._node_id = key_id(identity.node_key.public_key())
        self._node_cert_pem = cert_pem(identity.node_cert).decode()
        self._service_key_pub = identity.service_key.public_key()
        # [current service cert, endorsement of the previous identity, of the one before, …]
        self._identities = load_identity_chain(layout, identity.service_cert)
        self._lockfd = self._lock(layout)
        self._lock_obj = threading.Lock()
        self._work = threading.Condition(self._lock_obj)
        self._done = threading.Condition(self._lock_obj)
        self._tree_lock = threading.Lock()
        self._closing = False
        self._closed = False
        self._failure: BaseException | None = None
        self._listeners: list[Callable[[int], None]] = []
        try:
            self._chunks = ChunkFiles(layout.ledger_dir, fsync=config.fsync)
            self._index = Index(layout.index_file)
            self._recover(genesis)
        except BaseException:
            os.close(self._lockfd)
            raise
        self._flusher = threading.Thread(target=self._flush_loop, name="notarium-flusher", daemon=True)
        self._flusher.start()

    # ------------------------------------------------------------------ opening

    @staticmethod
    def lock_directory(layout: Layout) -> int:
        """Take the service directory's lock (a file descriptor; close it to release)."""
        return Ledger._lock(layout)

    @staticmethod
    def _lock(layout: Layout) -> int:
        return lock_exclusive(layout.lock_file, f"{layout.root} is in use by another notarium process")

    def _recover(self, genesis: Tables | None) -> None:
        """Bring index and tree in line with the durable, signed prefix of the chunk files."""
        tree, start = self._tree_from_index()
        # collection tokens the index holds a sealed id for (grows only once a batch is indexed)
        self._sealed_tokens = {token for token, _seqno, _sealed in self._index.collections()}
        last_view, last_good = self._replay(tree, start)
        empty_replica = self._replica is not None and not self._chunks.chunks  # filled from the log
        if last_good == 0 and start == 1 and (genesis is None or self._chunks.chunks) and not empty_replica:
            raise ServiceError(f"{self.layout.root} holds no signed transaction; it is not a usable ledger")
        self._tree = tree
        self._committed = last_good
        self._drop_unrecorded_secrets(last_good)
        self._next = tree.frontier.size
        self._flushed = tree.frontier.copy()
        if self._replica is None:
            # A new view at every start, recorded durably before any TxId is handed out in it, so
            # that seqnos dropped in an earlier run stay Invalid and are never reported Committed.
            self._view = max(last_view, _read_view(self.layout)) + 1
            _write_view(self.layout, self._view)
        else:  # a follower: views are the lease's (promote); until then, that of the last signature
            self._view = last_view
        self._committed_view = last_view
        self._pending = _Pending(self._next)
        self._closed_batches: list[_Pending] = []  # awaiting their signature, in seqno order
        self._since_signature: list[bytes] = []  # leaves since the last signature (flusher only)
        recorded = (genesis or {}).get(tables.RECOVERY_SHARES, {}).get(tables.SINGLETON_KEY)
        if recorded is None:
            recorded = self._index.state_get(tables.RECOVERY_SHARES, tables.SINGLETON_KEY)
        if recorded is not None:
            try:
                self._recovery = RecoverySharesRecord.from_json(recorded)
            except ValueError as exc:
                raise ServiceError(f"{exc}; run `notarium audit`") from None
        if genesis is not None:
            self._append_tables(genesis)
            self._signal_flush()

    # ------------------------------------------------------------------ ledger secrets

    def _set_secrets(self, secrets: LedgerSecrets) -> None:
        # one assignment: the flusher thread reads both halves without the engine lock
        self._ring = (secrets, tuple(_SecretKey(secret) for _start, secret in secrets))

    def _key(self, seqno: int) -> _SecretKey:
        """The keys of the ledger secret in force at ``seqno``."""
        secrets, keys = self._ring
        return keys[secrets.index_for(seqno)]

    def _drop_unrecorded_secrets(self, last_good: int) -> None:
        """Forget secrets whose rekey transaction (the one before their start) did not become
        durable: a rekey seals the new secret first, and a crash may then lose the transaction."""
        secrets = self._ring[0]
        kept = [start for start in secrets.starts if start == 1 or start - 1 <= last_good]
        if len(kept) == len(secrets):
            return
        log.warning(
            "dropping %d sealed ledger secret(s) whose rekey transaction was lost in a crash",
            len(secrets) - len(kept),
        )
        secrets = secrets.up_to(kept[-1])
        if self._sealer is not None:
            self._sealer.seal(secrets.seal_bytes())
        self._set_secrets(secrets)

    @property
    def ledger_secret_starts(self) -> list[int]:
        """The seqnos from which each ledger secret is in force (the first is 1)."""
        return self._ring[0].starts

    def recovery_shares(self) -> RecoverySharesRecord | None:
        """The newest recovery shares record appended (committed or not)."""
        with self._lock_obj:
            return self._recovery

    def reissue_recovery_shares(
        self, members: Mapping[str, str | bytes], threshold: int, *, seqno: int | None = None
    ) -> TxId:
        """Issue fresh recovery shares of the newest ledger secret to ``members`` (member id →
        RSA encryption public key PEM), any ``threshold`` of which recover the ledger; appends
        the record (``public:ccf.internal.recovery_shares``). ``ValueError`` on a bad threshold or
        key; ``seqno`` as in :meth:`append`."""
        with self._lock_obj:
            self._check_writable()
            self._check_seqno(seqno)
            record = issue_shares(self._ring[0].latest, members, threshold)
            txid = self._append_tables_locked({tables.RECOVERY_SHARES: {tables.SINGLETON_KEY: record.to_json()}})
            self._recovery = record
        log.info("recovery shares issued to %d member(s), threshold %d, at %s", len(members), threshold, txid)
        return txid

    def rekey(self, *, seqno: int | None = None) -> TxId:
        """Start a new ledger secret for every transaction after the returned one.

        The returned transaction records the previous secret encrypted under the new one
        (``public:ccf.internal.historical_encrypted_ledger_secret``) and recovery shares of the new
        one for the current recovery members. The new secret is sealed locally first."""
        with self._lock_obj:
            self._check_writable()
            self._check_seqno(seqno)
            if self._sealer is None:
                raise LedgerError("this ledger has no sealer to keep a new ledger secret in")
            if self._replica is not None and self._courier is None:  # the other nodes would lack it
                raise LedgerError("this replicated ledger has no way to give the other nodes a new secret")
            if self._recovery is None:
                raise LedgerError("no recovery shares were ever issued: issue them before rekeying")
            secrets = self._ring[0]
            new = (self._next + 1, os.urandom(32))
            chain = ChainRecord.seal(secrets.latest, new, os.urandom(12))
            record = issue_shares(new, self._recovery.recovery_members(), self._recovery.threshold)
            renewed = secrets.with_new(*new)
            self._sealer.seal(renewed.seal_bytes())  # durable before anything is sealed under it
            writes: dict[str, dict[bytes, bytes | None]] = {
                tables.HISTORICAL_LEDGER_SECRET: {tables.SINGLETON_KEY: chain.to_json()},
                tables.RECOVERY_SHARES: {tables.SINGLETON_KEY: record.to_json()},
            }
            if self._courier is not None:  # the other nodes of a replicated service read it from the log
                sealed = self._courier.seal_for_nodes(self, new[1], new[0])
                writes[tables.NODE_LEDGER_SECRETS] = dict(sealed)
            txid = self._append_tables_locked(writes)
            self._set_secrets(renewed)
            self._recovery = record
        log.info("ledger rekeyed at %s: a new ledger secret is in force from seqno %d", txid, txid.seqno + 1)
        return txid

    def _tree_from_index(self) -> tuple[TreeStore, int]:
        state = self._index.state()
        if state.last_seqno:
            try:
                tree = self._check_index(state)
            except (ServiceError, VerificationError, ValueError, KeyError) as exc:
                log.warning("index does not match the ledger (%s); rebuilding it from the chunk files", exc)
            else:
                self._frontier_at_last_signature = Frontier.from_peaks(state.frontier_size, state.frontier_peaks)
                return tree, state.last_seqno + 1
            self._index.reset()
        tree = TreeStore.empty(self._index.leaves)
        self._frontier_at_last_signature = tree.frontier.copy()
        return tree, 1

    def _check_index(self, state: IndexState) -> TreeStore:
        """The index's Merkle state must reproduce the root its last signature signed."""
        s = state.last_seqno
        frontier = Frontier.from_peaks(state.frontier_size, state.frontier_peaks)
        row = self._index.get(s)
        if frontier.size != s or row is None or row.kind != KIND_SIGNATURE:
            raise ValueError("index state does not end on a signature")
        raw = self._chunks.read(row.chunk, row.offset, row.size)
        e = parse_entry(raw, 0)
        if _leaf_of(raw, e) != row.leaf:
            raise ValueError("indexed leaf of the last signature does not match the chunk file")
        public = decode_tables(raw, e.tables_start, e.public_end)
        self._verify_signature(public, TxId(e.view, s), frontier.root())
        frontier.append(row.leaf)
        tree = TreeStore(frontier, self._index.tiles(), self._index.leaves)
        lo = 0
        for height, peak in zip(frontier.heights, frontier.peaks, strict=True):
            if height >= TILE_HEIGHT and tree.levels[height - TILE_HEIGHT][lo >> height] != peak:
                raise ValueError("index tiles do not match the Merkle frontier")
            lo += 1 << height
        return tree

    def _identity_depth(self, node_cert_pem: str | None) -> int:
        """Which service identity endorsed a node certificate: 0 the current one, ``d`` the one
        ``d`` identity changes back (trusted through the recorded endorsement chain)."""
        if node_cert_pem is None:
            raise VerificationError("signature carries no node certificate", check="signature-node")
        cert = load_pem_cert(node_cert_pem, "node certificate")
        for depth, service in enumerate(self._identities):
            try:
                check_endorsement(cert, service, "node certificate")
            except VerificationError:
                continue
            return depth
        raise VerificationError(
            "node certificate is not endorsed by the service identity or any endorsed previous one",
            check="signature-node",
        )

    def _service_endorsements(self, depth: int) -> list[str]:
        """``serviceEndorsements`` of a receipt signed under identity ``depth``: node cert → these → service cert."""
        return [cert_pem(self._identities[d]).decode() for d in range(depth, 0, -1)]

    def _verify_signature(self, public: dict[str, dict[bytes, bytes | None]], txid: TxId, root: bytes) -> None:
        service_key = self._service_key_pub
        raw_sig = public.get(tables.SIGNATURES, {}).get(tables.SINGLETON_KEY)
        if raw_sig is not None:
            try:
                carried = PrimarySignature.from_json(raw_sig).cert
            except (ValueError, VerificationError):
                carried = None  # verify_signature_transaction reports it
            if carried is not None:
                depth = self._identity_depth(carried)
                service_key = ec_public_key(self._identities[depth], "service identity")

        def node_key(sig: PrimarySignature) -> ec.EllipticCurvePublicKey:
            self._identity_depth(sig.cert)
            cert = load_pem_cert(sig.cert or "", "node certificate")
            key = ec_public_key(cert, "node certificate")
            if key_id(key) != sig.node:
                raise VerificationError("node id is not the hash of its key", check="signature-node")
            return key

        verify_signature_transaction(public, txid=txid, root=root, service_key=service_key, node_key=node_key)

    def _replay(self, tree: TreeStore, start: int) -> tuple[int, int]:
        """Replay chunk entries from ``start``: verify, index, and cut an unsigned or torn tail.

        Returns ``(view of the last good signature, its seqno)`` (``(0, 0)`` if none).
        """
        last_view, last_good = 0, start - 1
        if start > 1:
            prev = self._index.get(start - 1)
            last_view = prev.view if prev is not None else 0
        pending_leaves: list[bytes] = []
        pending = _IndexBatch()
        good = _IndexBatch()
        current = self._chunks.current
        cut: tuple[int, list[int]] | None = None  # (valid length, offsets) of the unfinished chunk
        expected = start
        for chunk, data in self._chunks.iter_files(start):
            live = chunk.end is None
            buf = memoryview(data)
            offsets: list[int] = []
            try:
                entries_end, _positions = read_positions(buf)
            except VerificationError as exc:
                raise ServiceError(f"{chunk.path.name}: {exc}; run `notarium audit`") from None
            off = CHUNK_HEADER_SIZE
            while off < entries_end:
                try:
                    e = parse_entry(buf, off, entries_end)
                except VerificationError as exc:
                    if live:
                        log.warning("%s: dropping a torn tail at offset %d (%s)", chunk.path.name, off, exc)
                        break
                    raise ServiceError(f"{chunk.path.name}: {exc}; run `notarium audit`") from None
                if e.seqno < start:  # already verified and indexed
                    offsets.append(off)
                    off = e.end
                    if live and e.seqno == start - 1:
                        cut = (off, list(offsets))
                    continue
                if e.seqno != expected or e.iv_seqno != expected:
                    raise ServiceError(f"{chunk.path.name}: seqno {e.seqno} where {expected} was expected")
                raw = buf[off : e.end]
                leaf = _leaf_of(raw, e)
                kind, collection = KIND_OTHER, None
                tags: list[str] = []
                public = decode_tables(buf, e.tables_start, e.public_end) if e.tables_start < e.public_end else {}
                if not SIGNATURE_TABLES.isdisjoint(public):
                    frontier = tree.frontier.copy()
                    for pl in pending_leaves:
                        frontier.append(pl)
                    try:
                        self._verify_signature(public, TxId(e.view, e.seqno), frontier.root())
                    except VerificationError as exc:
                        if live:
                            log.warning(
                                "%s: signature %d.%d does not verify (%s); dropping the tail",
                                chunk.path.name,
                                e.view,
                                e.seqno,
                                exc,
                            )
                            break
                        raise ServiceError(f"{chunk.path.name}: signature {e.view}.{e.seqno}: {exc}") from None
                    kind = KIND_SIGNATURE
                else:
                    found = self._entry_of(buf, e, public)
                    if found is not None:
                        kind, (collection, tags) = KIND_ENTRY, found
                token = None if collection is None else self._index_entry(pending, e.seqno, collection, tags)
                row: Row = (e.seqno, e.view, chunk.start, off, e.end - off, kind, token, leaf)
                offsets.append(off)
                pending_leaves.append(leaf)
                pending.add(row, _state_writes(public))
                if kind == KIND_SIGNATURE:
                    for pl in pending_leaves[:-1]:
                        tree.append(pl)
                    self._frontier_at_last_signature = tree.frontier.copy()
                    tree.append(leaf)
                    good.extend(pending)
                    pending_leaves, pending = [], _IndexBatch()
                    last_view, last_good = e.view, e.seqno
                    if live:
                        cut = (e.end, list(offsets))
                    if len(good.rows) >= 50_000:
                        self._index_rows(good, tree, last_good)
                        good = _IndexBatch()
                expected += 1
                off = e.end
        if good.rows:
            self._index_rows(good, tree, last_good)
        if current is not None:
            if cut is None:
                log.warning("dropping %s: it holds no signed transaction", current.path.name)
                self._chunks.drop_current()
            else:
                self._chunks.open_current(*cut)
        if pending.rows:
            log.warning(
                "dropped %d transactions after the last durable signature %d.%d (now Invalid)",
                len(pending.rows),
                last_view,
                last_good,
            )
        return last_view, last_good

    def _index_rows(self, batch: _IndexBatch, tree: TreeStore, last_signature: int) -> None:
        f = self._frontier_at_last_signature
        self._commit_index(batch, tree.new_tiles, IndexState(last_signature, f.size, f.peaks))
        tree.new_tiles = []

    def _index_entry(self, batch: _IndexBatch, seqno: int, collection: str, tags: Sequence[str]) -> bytes:
        """Add an entry's tag tokens to ``batch`` (and its collection's sealed id, the first time
        the index sees its token); return its collection token. Under the keys of the ledger
        secret in force at ``seqno``, like the entry itself."""
        secrets, ring = self._ring
        which = secrets.index_for(seqno)
        keys = ring[which].index
        token = batch.tokens.get((which, collection))
        if token is None:  # most entries of a batch share a few collections: one HMAC each
            token = batch.tokens[which, collection] = keys.collection(collection)
        batch.tags += [(keys.tag(collection, tag), seqno) for tag in tags]
        if token not in self._sealed_tokens and token not in batch.collections:
            batch.collections[token] = (token, seqno, keys.seal(collection))
        return token

    def _commit_index(self, batch: _IndexBatch, tiles: list[tuple[int, bytes]], state: IndexState) -> None:
        self._index.commit_batch(batch.rows, tiles, state, batch.tags, batch.writes, list(batch.collections.values()))
        self._sealed_tokens.update(batch.collections)

    def _entry_of(
        self, buf: memoryview, e: EntryView, public: dict[str, dict[bytes, bytes | None]]
    ) -> tuple[str, list[str]] | None:
        """(collection id, tags) if the transaction is an application ledger entry."""
        writes = public.get(tables.ENTRIES_PUBLIC)
        if writes is None and e.has_private:
            writes = self._decrypt(buf[e.start : e.end], e).get(tables.ENTRIES_PRIVATE)
        if not writes or len(writes) != 1:
            return None
        ((key, value),) = writes.items()
        try:
            tags = json.loads(value or b"{}").get("tags")
        except (ValueError, AttributeError):
            tags = None
        return key.decode(), _split_tags(tags if isinstance(tags, str) else None)

    # ------------------------------------------------------------------ writing

    def append(
        self,
        public: Tables,
        private: Tables | None = None,
        *,
        claims_digest: bytes = ZERO_CLAIMS,
        seqno: int | None = None,
    ) -> TxId:
        """Append a raw write set (public tables named ``public:…``). Returns the TxId at once.

        ``seqno``, when given, is the seqno the caller expects this transaction to get (an external
        sequencer's check); a different one raises ``LedgerError`` and appends nothing."""
        check_write_set(public, private)
        extras: _Extras = ([], _state_writes(public))
        return self._append(
            encode_tables(public), encode_tables(private or {}), claims_digest, KIND_OTHER, None, extras, seqno
        )

    def append_entry(
        self,
        contents: str,
        collection_id: str = DEFAULT_COLLECTION,
        tags: str | None = None,
        *,
        seqno: int | None = None,
    ) -> TxId:
        """Append an application ledger entry. Private ledgers encrypt it; its claims follow ACL."""
        secret = self._rng(32)
        mac = HmacKey(secret)
        raw_collection, raw_contents = collection_id.encode(), contents.encode()
        claims = single_claim_digest(claim_inner_from_macs(mac.digest(raw_collection), mac.digest(raw_contents)))
        value = b'{"contents":%s,"secretKey":"%s"%s}' % (
            _json_str(contents),
            base64.b64encode(secret),
            b"" if tags is None else b',"tags":' + _json_str(tags),
        )
        body = encode_single_write(self._entries_table, raw_collection, value)
        extras: _Extras | None = (_split_tags(tags), []) if tags else None
        if self._private:
            return self._append(b"", body, claims, KIND_ENTRY, collection_id, extras, seqno)
        return self._append(body, b"", claims, KIND_ENTRY, collection_id, extras, seqno)

    def _append(
        self,
        public: bytes,
        private: bytes,
        claims: bytes,
        kind: int,
        collection: str | None,
        extras: _Extras | None,
        seqno: int | None,
    ) -> TxId:
        with self._lock_obj:
            self._check_writable()
            while self._next - self._committed > self.config.max_unsigned and not self._closing:
                self._done.wait(1.0)
                self._check_writable()
            self._check_seqno(seqno)
            return self._append_locked(public, private, claims, kind, collection, extras)

    def _check_seqno(self, expected: int | None) -> None:
        if expected is not None and expected != self._next:
            raise LedgerError(f"the sequencer expected seqno {expected}, the ledger is at {self._next}")

    def sign(self, *, seqno: int | None = None) -> TxId:
        """Close the current batch now: its signature transaction takes the next seqno (``seqno``,
        when given, is checked as in :meth:`append`). A batch may be empty: the receipt of the
        newest signature needs a later one."""
        with self._lock_obj:
            self._check_writable()
            self._check_seqno(seqno)
            self._close_batch_locked()
            return TxId(self._view, self._next - 1)

    def _append_tables(self, public: Tables) -> TxId:
        with self._lock_obj:
            return self._append_tables_locked(public)

    def _append_tables_locked(self, public: Tables) -> TxId:
        extras: _Extras = ([], _state_writes(public))
        return self._append_locked(encode_tables(public), b"", ZERO_CLAIMS, KIND_OTHER, None, extras)

    def _append_locked(
        self,
        public: bytes,
        private: bytes,
        claims: bytes,
        kind: int,
        collection: str | None,
        extras: _Extras | None = None,
    ) -> TxId:
        seqno, view = self._next, self._view
        entry, leaf = self._seal(seqno, view, public, private, claims)
        self._next = seqno + 1
        p = self._pending
        if not p.entries:
            p.first_time = time.monotonic()
            self._work.notify()
        p.entries.append(entry)
        p.rows.append((seqno, view, kind, collection, leaf))
        if extras is not None and (extras[0] or extras[1]):
            p.extras[seqno] = extras
        if len(p.rows) >= self.config.signature_tx_count and self.config.auto_sign:
            self._close_batch_locked()
        return TxId(view, seqno)

    def _seal(self, seqno: int, view: int, public: bytes, private: bytes, claims: bytes) -> tuple[bytes, bytes]:
        """Serialise one entry in CCF's format (private domain encrypted); return it and its leaf."""
        key = self._key(seqno)
        ce = b"ce:%d.%d:%s" % (view, seqno, key.ce_mac.digest(b"%d.%d" % (view, seqno)).hex().encode())
        ced = hashlib.sha256(ce).digest()
        public_domain = encode_public_header(seqno, claims, ced) + public
        iv = gcm_iv(seqno, view)
        sealed = key.aead.encrypt(iv, private, public_domain)
        entry = assemble_entry(sealed[-GCM_TAG_SIZE:], iv, public_domain, sealed[:-GCM_TAG_SIZE])
        return entry, hashlib.sha256(hashlib.sha256(entry).digest() + ced + claims).digest()

    def _close_batch_locked(self) -> None:
        """Reserve the next seqno for a signature over everything sequenced so far; the flusher
        fills it in (hashing the leaves and signing outside the engine lock)."""
        batch = self._pending
        batch.signature_seqno = self._next
        self._next += 1
        self._closed_batches.append(batch)
        self._pending = _Pending(self._next)
        self._work.notify()

    def _signal_flush(self) -> None:
        with self._lock_obj:
            self._work.notify()

    def _check_writable(self) -> None:
        if self._failure is not None:
            raise LedgerError(f"the ledger stopped after a storage failure: {self._failure}")
        if self._closing or self._closed:
            raise LedgerError("the ledger is closed")
        if not self._primary:
            raise NotPrimaryError("this node is not the primary: writes go to the primary")

    def _sign_batch(self, batch: _Pending) -> None:
        """Flusher only: add the batch's leaves to the tree, then its signature transaction."""
        seqno, view = batch.signature_seqno, self._view
        txid = TxId(view, seqno)
        with self._tree_lock:
            for row in batch.rows:
                self._tree.append(row[4])
            self._since_signature += [row[4] for row in batch.rows]
            root = self._tree.frontier.root()
            tree_bytes = serialise_tree(self._flushed, self._since_signature)
            flushed = self._tree.frontier.copy()
        node_sig = PrimarySignature(
            sig=sign_root(self.identity.node_key, root),
            node=self._node_id,
            seqno=seqno,
            view=view,
            root=root,
            cert=self._node_cert_pem,
            hashed_nonce=hashlib.sha256(self._rng(32)).hexdigest(),
        )
        protected = cose_root_protected_header(
            self._service_key_pub,
            txid,
            iat=int(self._clock()),
            issuer=self.service.ledger_id,
            subject="ledger.signature",
        )
        cose_sig = encode_sign1(protected, {}, sign_detached(self.identity.service_key, protected, root))
        public = {
            tables.SIGNATURES: {tables.SINGLETON_KEY: node_sig.to_json()},
            tables.COSE_SIGNATURES: {tables.SINGLETON_KEY: json.dumps(base64.b64encode(cose_sig).decode()).encode()},
            tables.TREE: {tables.SINGLETON_KEY: tree_bytes},
        }
        entry, leaf = self._seal(seqno, view, encode_tables(public), b"", ZERO_CLAIMS)
        with self._tree_lock:
            self._flushed = flushed
            self._tree.append(leaf)
            self._since_signature = [leaf]
        batch.entries.append(entry)
        batch.rows.append((seqno, view, KIND_SIGNATURE, None, leaf))

    # ------------------------------------------------------------------ flushing

    def _flush_loop(self) -> None:
        interval = self.config.signature_interval_ms / 1000
        auto = self.config.auto_sign
        while True:
            with self._lock_obj:
                while not self._closed_batches and not self._closing and (not auto or not self._pending.entries):
                    self._work.wait()
                if not self._closed_batches and not self._pending.entries:
                    return
                deadline = self._pending.first_time + interval
                while auto and not self._closing and not self._closed_batches and (now := time.monotonic()) < deadline:
                    self._work.wait(deadline - now)
                if self._pending.entries and (self._closing or (auto and time.monotonic() >= deadline)):
                    self._close_batch_locked()
                batches, self._closed_batches = self._closed_batches, []
            if not batches:
                continue
            try:
                for batch in batches:
                    self._sign_batch(batch)
                with self._tree_lock:
                    new_tiles, self._tree.new_tiles = self._tree.new_tiles, []
                    flushed = self._flushed
                signed_at = batches[-1].signature_seqno
                self._write_batches(batches, new_tiles, flushed, signed_at)
            except BaseException as exc:
                log.exception("storage failure; the ledger stops accepting writes")
                with self._lock_obj:
                    self._failure = exc
                    self._done.notify_all()
                return
            with self._lock_obj:
                self._committed = signed_at
                self._committed_view = self._view
                self._done.notify_all()
            for listener in list(self._listeners):
                listener(signed_at)

    def _write_batches(
        self,
        batches: list[_Pending],
        new_tiles: list[tuple[int, bytes]],
        flushed: Frontier,
        signed_at: int,
        *,
        replicate: bool = True,
    ) -> None:
        """Persist signed batches: to the replicated log first if there is one (that is what makes
        them Committed; not for batches read from it), then to the local files (fsync), completing a
        chunk at each signature past chunk_size; then index them."""
        if self._replica is not None and replicate:
            rows = [
                (row[0], row[1], row[2] == KIND_SIGNATURE, entry)
                for batch in batches
                for row, entry in zip(batch.rows, batch.entries, strict=True)
            ]
            self._replica.append(self._view, self._node_id, rows)
        index = _IndexBatch()
        no_extras: _Extras = ([], [])
        for batch in batches:
            locations = self._chunks.append(batch.first_seqno, batch.entries)
            for (seqno, view, kind, collection, leaf), entry, (chunk, off) in zip(
                batch.rows, batch.entries, locations, strict=True
            ):
                token = None
                if collection is not None:
                    token = self._index_entry(index, seqno, collection, batch.extras.get(seqno, no_extras)[0])
                index.rows.append((seqno, view, chunk, off, len(entry), kind, token, leaf))
            for seqno, (_tags, writes) in batch.extras.items():
                index.writes += [(table, key, value, seqno) for table, key, value in writes]
            if self._chunks.current_size >= self.config.chunk_size:
                self._chunks.complete_current(batch.signature_seqno)  # fsyncs the chunk
        self._chunks.sync()
        self._commit_index(index, new_tiles, IndexState(signed_at, flushed.size, flushed.peaks))

    # ------------------------------------------------------------------ replication (docs/design/ha.md)

    @property
    def is_primary(self) -> bool:
        return self._primary

    @property
    def node_id(self) -> str:
        return self._node_id

    @property
    def previous_identity_endorsements(self) -> list[x509.Certificate]:
        """The endorsements of the previous service identities (after disaster recoveries), newest
        first: each issued by the identity after it (``DIR/previous_service_identities``)."""
        return list(self._identities[1:])

    def local_rows(self, start: int, end: int) -> list[LogRow]:
        """Committed transactions ``start..end`` as log rows, read from the local files."""
        rows: list[LogRow] = []
        for seqno in range(start, min(end, self.committed.seqno) + 1):
            loc = self._index.get(seqno)
            if loc is None:
                raise ServiceError(f"committed seqno {seqno} is missing from the index; run `notarium reindex`")
            data = self._chunks.read(loc.chunk, loc.offset, loc.size)
            rows.append((seqno, loc.view, loc.kind == KIND_SIGNATURE, data))
        return rows

    @property
    def replicated(self) -> bool:
        return self._replica is not None

    def note_view(self, view: int) -> None:
        """Follower: the service has begun ``view`` (its lease says so). TxIds of that view past the
        committed ones are then Pending here, as on the primary, until they commit or a verified
        signature of a later view shows they never will."""
        with self._lock_obj:
            self._known_view = max(self._known_view, view)

    def follow(self, rows: Sequence[LogRow]) -> int:
        """Follower: verify transactions read from the replicated log (from the one after the
        committed one, in order) and add each signed run of them to the local files and index.
        Transactions after the last signature in ``rows`` are left for a later call. Returns the
        committed seqno.

        Nothing in ``rows`` is trusted: a gap, a malformed entry, a view going back, or a
        signature that does not verify against the Merkle tree raises ``VerificationError`` and
        adds nothing of the run it is in."""
        with self._lock_obj:
            if self._primary:
                raise LedgerError("the primary does not follow the log")
            if self._closing or self._closed or self._failure is not None:
                raise LedgerError("the ledger is closed")
            expected, view = self._committed + 1, self._committed_view
        batches: list[_Pending] = []
        batch = _Pending(expected)
        frontier = self._tree.frontier.copy()  # the follower's tree changes only here
        since: list[bytes] = []
        last_flushed = self._flushed
        for seqno, row_view, is_signature, data in rows:
            if seqno != expected:
                raise VerificationError(
                    f"the replicated log has seqno {seqno} where {expected} was expected (a transaction is missing)",
                    check="log-sequence",
                )
            buf = memoryview(data)
            e = parse_entry(buf, 0, len(buf))
            if e.end != len(buf) or e.seqno != seqno or e.iv_seqno != seqno or e.view != row_view:
                raise VerificationError(f"transaction {seqno} of the replicated log is malformed", check="log-entry")
            if e.view < view:
                raise VerificationError(f"transaction {seqno} goes back to view {e.view}", check="log-view")
            view = e.view
            leaf = _leaf_of(buf, e)
            public = decode_tables(buf, e.tables_start, e.public_end) if e.tables_start < e.public_end else {}
            kind, collection = KIND_OTHER, None
            tags: list[str] = []
            if tables.HISTORICAL_LEDGER_SECRET in public:  # a rekey: what follows is sealed under the new secret
                self._learn_secret(public, seqno)
            if not SIGNATURE_TABLES.isdisjoint(public):
                self._verify_signature(public, TxId(e.view, seqno), frontier.root())
                if any(r[1] != e.view for r in batch.rows):
                    raise VerificationError(f"signature {e.view}.{seqno} signs another view's transactions")
                kind = KIND_SIGNATURE
            else:
                try:
                    found = self._entry_of(buf, e, public)
                except ServiceError as exc:  # the private domain fails its AES-GCM tag: changed
                    raise VerificationError(str(exc), check="log-entry") from None
                if found is not None:
                    kind, (collection, tags) = KIND_ENTRY, found
            if is_signature != (kind == KIND_SIGNATURE):
                raise VerificationError(f"transaction {seqno} is mislabelled in the replicated log", check="log-entry")
            batch.entries.append(bytes(data))
            batch.rows.append((seqno, e.view, kind, collection, leaf))
            writes = _state_writes(public)
            if tags or writes:
                batch.extras[seqno] = (tags, writes)
            if kind == KIND_SIGNATURE:
                last_flushed = frontier.copy()
                since = [leaf]
                batch.signature_seqno = seqno
                batches.append(batch)
                batch = _Pending(seqno + 1)
            frontier.append(leaf)
            expected += 1
        if not batches:
            return self.committed.seqno
        signed_at = batches[-1].signature_seqno
        try:
            with self._tree_lock:
                for b in batches:
                    for r in b.rows:
                        self._tree.append(r[4])
                new_tiles, self._tree.new_tiles = self._tree.new_tiles, []
                self._flushed, self._since_signature = last_flushed, since
            self._write_batches(batches, new_tiles, last_flushed, signed_at, replicate=False)
        except BaseException as exc:  # the tree is ahead of the files now: stop here
            log.exception("storage failure while following the log; this node stops")
            with self._lock_obj:
                self._failure = exc
                self._done.notify_all()
            raise
        for b in batches:
            for _seqno, (_tags, writes) in b.extras.items():
                if writes:
                    self._note_state(writes)
                    self.state_version += 1
        with self._lock_obj:
            self._committed = signed_at
            self._committed_view = self._view = batches[-1].rows[-1][1]
            self._next = signed_at + 1
            self._pending = _Pending(self._next)
            self._done.notify_all()
        for listener in list(self._listeners):
            listener(signed_at)
        return signed_at

    def _learn_secret(self, public: dict[str, dict[bytes, bytes | None]], seqno: int) -> None:
        """Follower: the ledger secret a rekey at ``seqno`` starts, from the blob sealed to this
        node in it; it must chain to the secret in force (its chain record opens under it). Sealed
        locally before anything is read under it."""
        start = seqno + 1
        secrets = self._ring[0]
        if start in secrets.starts:
            return
        blob = public.get(tables.NODE_LEDGER_SECRETS, {}).get(self._node_id.encode())
        if blob is None or self._courier is None:
            raise VerificationError(
                f"the rekey at seqno {seqno} carries no ledger secret for this node (it was not trusted then?): "
                "join the service again",
                check="log-secret",
            )
        secret = self._courier.open_for_node(self, blob, start)
        try:
            chain = ChainRecord.from_json(public[tables.HISTORICAL_LEDGER_SECRET].get(tables.SINGLETON_KEY) or b"")
            previous = chain.open(secret)
        except ValueError as exc:
            raise VerificationError(f"the rekey at seqno {seqno}: {exc}", check="log-secret") from None
        if (chain.start_seqno, previous) != secrets.latest or chain.successor_start_seqno != start:
            raise VerificationError(
                f"the rekey at seqno {seqno} does not chain to the secret in force", check="log-secret"
            )
        renewed = secrets.with_new(start, secret)
        if self._sealer is not None:
            self._sealer.seal(renewed.seal_bytes())
        self._set_secrets(renewed)
        log.info("the ledger secret in force from seqno %d arrived through the log", start)

    def _note_state(self, writes: list[tuple[str, bytes, bytes | None]]) -> None:
        """Follower: keep the in-memory copies of replicated state current."""
        for table, key, value in writes:
            if table == tables.RECOVERY_SHARES and key == tables.SINGLETON_KEY and value is not None:
                try:
                    self._recovery = RecoverySharesRecord.from_json(value)
                except ValueError:
                    log.warning("an unreadable recovery shares record was replicated; run `notarium audit`")

    def promote(self, view: int) -> None:
        """Follower → primary of ``view`` (its lease's), sequencing after the committed prefix. The
        caller has made the replicated log end there (its unsigned tail dropped, fenced) and then
        places the view's first signature (:meth:`sign`)."""
        with self._lock_obj:
            if self._replica is None:
                raise LedgerError("only a replicated ledger is promoted")
            if self._primary:
                raise LedgerError("this node is already the primary")
            if view <= self._committed_view:
                raise LedgerError(f"view {view} does not follow the committed view {self._committed_view}")
            self._view = self._known_view = view
            self._next = self._committed + 1
            self._pending = _Pending(self._next)
            self._primary = True
        log.info("primary of view %d from seqno %d", view, self._committed + 1)

    def close(self) -> None:
        """Sign and persist everything appended, complete the current chunk, release the directory."""
        with self._lock_obj:
            if self._closed:
                return
            self._closing = True
            self._work.notify_all()
        self._flusher.join()
        with self._lock_obj:
            self._closed = True
            self._done.notify_all()
        try:
            if self._failure is None and self._chunks.current is not None:
                self._chunks.complete_current(self._committed)
        finally:
            self._chunks.close()
            self._index.close()
            os.close(self._lockfd)

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ status

    @property
    def committed(self) -> TxId:
        """The last committed transaction (always a signature transaction)."""
        with self._lock_obj:
            return TxId(self._committed_view, self._committed)

    @property
    def view(self) -> int:
        return self._view

    @property
    def last_sequenced(self) -> int:
        """The seqno most recently handed out (committed or not)."""
        with self._lock_obj:
            return self._next - 1

    @property
    def healthy(self) -> bool:
        return self._failure is None and not self._closing and not self._closed

    def ledger_bytes(self) -> int:
        return self._chunks.total_bytes()

    def add_commit_listener(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(seqno)`` on the flusher thread each time the ledger has committed up to ``seqno``."""
        self._listeners.append(listener)

    def remove_commit_listener(self, listener: Callable[[int], None]) -> None:
        self._listeners.remove(listener)

    def state(self, table: str) -> dict[bytes, bytes]:
        """The committed contents of a public state table (``public:ccf.gov.*``, ``public:notarium.*``)."""
        return self._index.state_items(table)

    def state_get(self, table: str, key: bytes) -> bytes | None:
        return self._index.state_get(table, key)

    def wait_committed(self, txid: TxId, timeout: float | None = None) -> TxStatus:
        """Block until ``txid`` is no longer Pending (or ``timeout`` seconds); return its status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.status(txid)
            with self._lock_obj:
                if status == TxStatus.PENDING and txid.seqno <= self._committed:
                    continue  # committed since we looked
                if status != TxStatus.PENDING or self._failure is not None or self._closed:
                    return status
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return status
                self._done.wait(remaining)

    def status(self, txid: TxId) -> TxStatus:
        return self._classify(txid)[0]

    def _classify(self, txid: TxId) -> tuple[TxStatus, TxLocation | None]:
        """The status of ``txid`` and, if Committed, its index row (one index lookup at most).

        A follower answers Invalid past its committed prefix only when a verified signature of a
        later view exists (that view began at or before it, so ``txid`` can never commit), and
        Pending for the views begun since: never Invalid where another node says Committed."""
        v, s = txid.view, txid.seqno
        with self._lock_obj:
            committed, view, next_seqno = self._committed, self._view, self._next
            primary, known_view = self._primary, self._known_view
        if s == 0:
            return TxStatus.UNKNOWN, None
        if s <= committed:
            row = self._index.get(s)
            if row is None:
                raise ServiceError(f"committed seqno {s} is missing from the index; run `notarium reindex`")
            return (TxStatus.COMMITTED, row) if row.view == v else (TxStatus.INVALID, None)
        if v < view:  # a follower's view is that of its last verified signature
            return TxStatus.INVALID, None
        if primary:
            return (TxStatus.PENDING, None) if v == view and s < next_seqno else (TxStatus.UNKNOWN, None)
        return (TxStatus.PENDING, None) if v <= max(view, known_view) else (TxStatus.UNKNOWN, None)

    # ------------------------------------------------------------------ reading

    def _decrypt(self, raw: bytes | memoryview, e: EntryView) -> dict[str, dict[bytes, bytes | None]]:
        """Decrypt the private domain of one entry (``raw`` holds exactly that entry)."""
        public_domain = bytes(raw[FIXED_SIZE : e.public_end - e.start])
        ciphertext = bytes(raw[e.public_end - e.start :])
        iv = bytes(raw[ENTRY_HEADER_SIZE + GCM_TAG_SIZE : ENTRY_HEADER_SIZE + GCM_TAG_SIZE + GCM_IV_SIZE])
        try:
            plain = self._key(e.seqno).aead.decrypt(iv, ciphertext + e.tag, public_domain)
        except InvalidTag:
            raise ServiceError(f"entry {e.view}.{e.seqno} does not decrypt under the ledger secret") from None
        return decode_tables(plain, 0, len(plain))

    def _read_committed(self, txid: TxId) -> tuple[bytes, EntryView, int] | None:
        status, row = self._classify(txid)
        if status != TxStatus.COMMITTED or row is None:
            return None
        raw = self._chunks.read(row.chunk, row.offset, row.size)
        e = parse_entry(raw, 0)
        if e.seqno != txid.seqno or e.view != txid.view:
            raise ServiceError(f"index points {txid} at entry {e.view}.{e.seqno}; run `notarium reindex`")
        return raw, e, row.kind

    def lookup_entry(self, txid: TxId) -> tuple[TxStatus, LedgerEntry | None]:
        """The status of ``txid`` and, if it is a committed application entry, the entry."""
        status, row = self._classify(txid)
        if status != TxStatus.COMMITTED or row is None or row.kind != KIND_ENTRY:
            return status, None
        raw = self._chunks.read(row.chunk, row.offset, row.size)
        e = parse_entry(raw, 0)
        if e.seqno != txid.seqno or e.view != txid.view:
            raise ServiceError(f"index points {txid} at entry {e.view}.{e.seqno}; run `notarium reindex`")
        return status, self._entry_from(txid, raw, e)

    def get_entry(self, txid: TxId) -> LedgerEntry | None:
        """The committed application entry at ``txid`` (``None`` if not committed or not an entry)."""
        return self.lookup_entry(txid)[1]

    def _entry_from(self, txid: TxId, raw: bytes, e: EntryView) -> LedgerEntry:
        if self._private:
            writes = self._decrypt(raw, e).get(tables.ENTRIES_PRIVATE, {})
        else:
            writes = decode_tables(raw, e.tables_start, e.public_end).get(tables.ENTRIES_PUBLIC, {})
        if len(writes) != 1:
            raise ServiceError(f"entry {txid} is not a single ledger entry")
        ((key, value),) = writes.items()
        record = json.loads(value or b"{}")
        return LedgerEntry(
            txid=txid,
            collection_id=key.decode(),
            contents=record["contents"],
            tags=record.get("tags"),
            claims_secret=base64.b64decode(record["secretKey"]),
        )

    def _secret_ranges(self, first: int, last: int) -> list[tuple[IndexKeys, int, int]]:
        """The index keys of each ledger secret in force within ``first..last``, with the part of
        that range it covers, oldest first."""
        secrets, keys = self._ring
        starts = secrets.starts
        ends = [start - 1 for start in starts[1:]] + [last]
        return [
            (key.index, max(first, start), min(last, end))
            for key, start, end in zip(keys, starts, ends, strict=True)
            if max(first, start) <= min(last, end)
        ]

    def _indexed_entry(self, row: TxLocation, collection_id: str, tag: str | None = None) -> LedgerEntry | None:
        """The entry an index lookup found, checked to be in ``collection_id`` (with ``tag``): the
        index is not trusted."""
        entry = self.get_entry(TxId(row.view, row.seqno))
        if entry is not None and (
            entry.collection_id != collection_id or (tag is not None and tag not in _split_tags(entry.tags))
        ):
            raise ServiceError(
                f"the index lists entry {entry.txid} under another collection or tag; run `notarium reindex`"
            )
        return entry

    def latest_entry(self, collection_id: str = DEFAULT_COLLECTION) -> LedgerEntry | None:
        for keys, lo, hi in reversed(self._secret_ranges(1, _MAX_SEQNO)):
            row = self._index.latest_entry(keys.collection(collection_id), lo, hi)
            if row is not None:
                return self._indexed_entry(row, collection_id)
        return None

    def entries(
        self,
        collection_id: str = DEFAULT_COLLECTION,
        first: int = 1,
        last: int | None = None,
        limit: int = 1000,
        tag: str | None = None,
    ) -> list[LedgerEntry]:
        """Committed entries of a collection (optionally with ``tag``) with ``first ≤ seqno ≤ last``."""
        last = self._committed if last is None else min(last, self._committed)
        out: list[LedgerEntry] = []
        for keys, lo, hi in self._secret_ranges(first, last):
            if len(out) >= limit:
                break
            token = keys.collection(collection_id)
            tag_token = None if tag is None else keys.tag(collection_id, tag)
            for row in self._index.entries(token, lo, hi, limit - len(out), tag_token):
                entry = self._indexed_entry(row, collection_id, tag)
                if entry is not None:
                    out.append(entry)
        return out

    def collections(self) -> list[str]:
        """The ids of the collections that hold a committed entry, opened from the index's sealed copies."""
        secrets, keys = self._ring
        names = set()
        for token, seqno, sealed in self._index.collections():
            try:
                names.add(keys[secrets.index_for(seqno)].index.open(token, sealed))
            except ValueError as exc:
                raise ServiceError(f"{exc}; run `notarium reindex`") from None
        return sorted(names)

    # ------------------------------------------------------------------ receipts

    def _proof_parts(
        self, txid: TxId
    ) -> tuple[LeafComponents, list[tuple[bool, bytes]], PrimarySignature, bytes] | None:
        found = self._read_committed(txid)
        if found is None:
            return None
        raw, e, _kind = found
        sig_row = self._index.next_signature(txid.seqno)
        if sig_row is None:
            # the newest signature transaction: its receipt needs the next signature, so ask for one
            # (an external sequencer places that one itself: see EngineConfig.auto_sign)
            with self._lock_obj:
                if txid.seqno != self._committed:
                    raise ServiceError(f"no signature after committed transaction {txid}; run `notarium reindex`")
                if self.config.auto_sign and not self._closing and not self._closed_batches:
                    self._close_batch_locked()
            return None
        sig_raw = self._chunks.read(sig_row.chunk, sig_row.offset, sig_row.size)
        se = parse_entry(sig_raw, 0)
        sig_tables = decode_tables(sig_raw, se.tables_start, se.public_end)
        sig = PrimarySignature.from_json(sig_tables[tables.SIGNATURES][tables.SINGLETON_KEY] or b"")
        cose_sig = decode_cose_signature_value(sig_tables[tables.COSE_SIGNATURES][tables.SINGLETON_KEY] or b"")
        leaf = LeafComponents(
            write_set_digest=hashlib.sha256(raw).digest(),
            commit_evidence=commit_evidence_from_commit_secret(self._key(txid.seqno).commit_secret, txid),
            claims_digest=e.claims_digest,
        )
        with self._tree_lock:
            path = self._tree.path(txid.seqno, sig.seqno)
        return leaf, path, sig, cose_sig

    def receipt(self, txid: TxId) -> Receipt | None:
        """The ACL JSON receipt of a committed transaction, verified before it is returned.

        ``None`` if the transaction is not committed, or if it is the newest signature
        transaction: that one is proven by the next signature, which this call then requests
        (it follows within one flush).
        """
        parts = self._proof_parts(txid)
        if parts is None:
            return None
        leaf, path, sig, _cose = parts
        node_cert = sig.cert or self._node_cert_pem
        try:
            endorsements = self._service_endorsements(self._identity_depth(node_cert))
        except VerificationError as exc:
            raise ServiceError(f"receipt for {txid}: {exc}; run `notarium audit`") from None
        body = build_json_receipt(leaf, path, sig.sig, node_cert, sig.node, endorsements)
        claims = None
        entry = self.get_entry(txid)
        if entry is not None:
            claims = entry.application_claims()
        try:
            verify_json_receipt(body, self.identity.service_cert, application_claims=claims)
        except VerificationError as exc:
            raise ServiceError(f"receipt for {txid} does not verify ({exc}); run `notarium audit`") from None
        return Receipt(txid, body, claims)

    def cose_receipt(self, txid: TxId) -> bytes | None:
        """The RFC 9942 COSE receipt (CCF profile) of a committed transaction, verified.

        A transaction signed under a previous service identity gets a receipt signed by that
        identity's key (verified here against it, as endorsed by the current identity): COSE
        receipts carry no endorsements (docs/design/recovery.md)."""
        parts = self._proof_parts(txid)
        if parts is None:
            return None
        leaf, path, sig, cose_sig = parts
        receipt = build_cose_receipt(cose_sig, leaf, path)
        try:
            service = self._identities[self._identity_depth(sig.cert or self._node_cert_pem)]
            verify_cose_receipt(receipt, ec_public_key(service, "service identity"), claims_digest=leaf.claims_digest)
        except VerificationError as exc:
            raise ServiceError(f"COSE receipt for {txid} does not verify ({exc}); run `notarium audit`") from None
        return receipt

    # ------------------------------------------------------------------ signed roots

    def signed_root(self, txid: TxId | None = None) -> SignedRoot:
        """The root signed by the committed signature transaction ``txid`` (``None``: the newest),
        with the service's COSE signature over it; verified before it is returned.

        Raises :class:`LedgerError` if ``txid`` is not a committed signature transaction.
        """
        if txid is None:
            txid = self.committed
            if txid.seqno == 0:
                raise LedgerError("the ledger holds no committed signature transaction yet")
        found = self._read_committed(txid)
        if found is None:
            raise LedgerError(f"transaction {txid} is not a committed transaction")
        raw, e, kind = found
        if kind != KIND_SIGNATURE:
            raise LedgerError(
                f"transaction {txid} is not a signature transaction: signed roots exist only at signature transactions"
            )
        sig_tables = decode_tables(raw, e.tables_start, e.public_end)
        sig = PrimarySignature.from_json(sig_tables[tables.SIGNATURES][tables.SINGLETON_KEY] or b"")
        cose_sig = decode_cose_signature_value(sig_tables[tables.COSE_SIGNATURES][tables.SINGLETON_KEY] or b"")
        signed = SignedRoot(txid, sig.root, cose_sig)
        try:
            verify_signed_root(signed, self._identities[self._identity_depth(sig.cert or self._node_cert_pem)])
        except VerificationError as exc:
            raise ServiceError(f"signed root at {txid} does not verify ({exc}); run `notarium audit`") from None
        return signed

    def consistency(self, first: TxId, second: TxId | None = None) -> tuple[SignedRoot, SignedRoot, list[bytes]]:
        """The signed roots at the committed signature transactions ``first`` and ``second`` (``None``:
        the newest) and the consistency proof that the ledger signed at ``second`` extends the one
        signed at ``first`` (:mod:`notarium.verify.consistency`); verified before it is returned.

        Raises :class:`LedgerError` if either is not a committed signature transaction, or if
        ``first`` comes after ``second``.
        """
        old = self.signed_root(first)
        new = self.signed_root(second)
        if old.tree_size > new.tree_size:
            raise LedgerError(
                f"transaction {old.txid} comes after {new.txid}: a proof goes from an earlier root to a later one"
            )
        with self._tree_lock:
            proof = consistency_proof(old.tree_size, new.tree_size, self._tree.perfect_root)
        try:
            verify_extension(old, new, proof, self.identity.service_cert)
        except VerificationError as exc:
            raise ServiceError(
                f"consistency proof from {old.txid} to {new.txid} does not verify ({exc}); run `notarium audit`"
            ) from None
        return old, new, proof

    @property
    def service_cert(self) -> x509.Certificate:
        return self.identity.service_cert

    def renew_certificates(
        self, *, service_days: int | None = None, node_days: int | None = None, seqno: int | None = None
    ) -> TxId:
        """Renew the service certificate (same key, new validity: not a new identity) and/or this
        node's certificate (same key, issued again by the service key), record them in the ledger
        (``service.info``, ``nodes.endorsed_certificates``) and put them in the service directory.
        Receipts, signatures and pinned copies of the previous certificates keep verifying: the
        keys do not change. A renewed service certificate always comes with a renewed node one."""
        _renewal_days(service_days, "service_days")
        _renewal_days(node_days, "node_days")
        if service_days is None and node_days is None:
            raise ValueError("renew the service certificate, the node certificate, or both")
        now = datetime.datetime.now(datetime.UTC)
        ident = self.identity
        service_cert = ident.service_cert
        public: dict[str, dict[bytes, bytes | None]] = {}
        if service_days is not None:
            name = service_cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
            service_cert = service_certificate(ident.service_key, now=now, days=service_days, name=str(name))
            raw = self._index.state_get(tables.SERVICE_INFO, tables.SINGLETON_KEY)
            info = json.loads(raw) if raw is not None else {}
            public[tables.SERVICE_INFO] = {
                tables.SINGLETON_KEY: _json_bytes({**info, "cert": cert_pem(service_cert).decode()})
            }
        node_cert = node_certificate(
            ident.node_key.public_key(),
            ident.service_key,
            service_cert,
            hosts=list(self.service.hosts),
            now=now,
            days=node_days or NODE_CERT_DAYS,
        )
        public[tables.NODES_ENDORSED_CERTS] = {self._node_id.encode(): cert_pem(node_cert)}
        txid = self.append(public, seqno=seqno)
        if service_days is not None:
            replace(self.layout.service_cert, cert_pem(service_cert))
        replace(self.layout.node_cert, cert_pem(node_cert))
        self.identity = dataclasses.replace(ident, service_cert=service_cert, node_cert=node_cert)
        self._node_cert_pem = cert_pem(node_cert).decode()
        self._identities = [service_cert, *self._identities[1:]]
        log.info("certificates renewed at %s (service: %s, node: %s)", txid, service_days, node_days or NODE_CERT_DAYS)
        return txid

    def record_identity_change(self, previous: x509.Certificate, endorsement: x509.Certificate) -> TxId:
        """Record that this ledger's service identity replaces ``previous`` (which ``endorsement``,
        issued by the current service key, certifies): ``service.info`` names the current
        certificate with ``recovery_count`` + 1 and ``previous_service_identity_version`` = the
        seqno that created the previous identity; the previous certificate and the endorsement are
        recorded; this node becomes Trusted with its endorsed certificate, the nodes of the previous
        identity Retired. Called by :func:`notarium.ledger.service.recover_service_identity`."""
        if self._identities[1:2] != [endorsement]:
            raise LedgerError("the endorsement is not the newest one of this service directory")
        check_endorsement(endorsement, self.identity.service_cert, "previous identity endorsement")
        raw = self._index.state_get(tables.SERVICE_INFO, tables.SINGLETON_KEY)
        if raw is None:
            raise LedgerError("the ledger records no service identity to continue")
        info = json.loads(raw)
        if info.get("cert") != cert_pem(previous).decode():
            raise LedgerError("the ledger's service identity is not the endorsed previous one")
        created = str(info.get("current_service_create_txid") or "0.1")
        retire = {
            key: json.dumps({**json.loads(value), "status": "Retired"}, separators=(",", ":"), sort_keys=True).encode()
            for key, value in self._index.state_items(tables.NODES_INFO).items()
            if key != self._node_id.encode() and json.loads(value).get("status") == "Trusted"
        }
        node_info = {
            "status": "Trusted",
            "quote_info": {"format": "Insecure_Virtual", "quote": "", "endorsements": ""},
            "node_data": {"hosts": list(self.service.hosts)},
            "ledger_secret_seqno": self._ring[0].starts[-1],
            "retired_committed": False,
        }
        with self._lock_obj:
            self._check_writable()
            txid = TxId(self._view, self._next)
            new_info = {
                **info,
                "cert": cert_pem(self.identity.service_cert).decode(),
                "current_service_create_txid": str(txid),
                "previous_service_identity_version": int(created.rpartition(".")[2]),
                "recovery_count": int(info.get("recovery_count") or 0) + 1,
                "status": "Open",
            }
            written = self._append_tables_locked(
                {
                    tables.SERVICE_INFO: {tables.SINGLETON_KEY: _json_bytes(new_info)},
                    tables.PREVIOUS_SERVICE_IDENTITY: {tables.SINGLETON_KEY: cert_pem(previous)},
                    tables.PREVIOUS_IDENTITY_ENDORSEMENT: {tables.SINGLETON_KEY: cert_pem(endorsement)},
                    tables.NODES_INFO: {**retire, self._node_id.encode(): _json_bytes(node_info)},
                    tables.NODES_ENDORSED_CERTS: {self._node_id.encode(): self._node_cert_pem.encode()},
                }
            )
            self._close_batch_locked()
        log.info("service identity change recorded at %s (recovery %d)", written, new_info["recovery_count"])
        return written

    def ledger_secrets(self) -> LedgerSecrets:
        """The ledger secrets in force (read-only; for admitting a node, notarium.cluster.join)."""
        return self._ring[0]


def _renewal_days(value: int | None, what: str) -> None:
    if value is not None and (type(value) is not int or not 1 <= value <= 3650):
        raise ValueError(f"{what} must be an integer number of days from 1 to 3650")


def _json_bytes(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def load_identity_chain(layout: Layout, service_cert: x509.Certificate) -> list[x509.Certificate]:
    """``[service_cert, endorsement of the previous identity, of the one before, …]``, each
    endorsement checked to be issued by the identity before it in the list."""
    chain = [service_cert]
    directory = layout.previous_identities
    if not directory.is_dir():
        return chain
    for path in sorted(directory.glob("*.endorsement.pem"), reverse=True):
        try:
            endorsement = x509.load_pem_x509_certificate(path.read_bytes())
            check_endorsement(endorsement, chain[-1], "previous identity endorsement")
        except (OSError, ValueError, VerificationError) as exc:
            raise ServiceError(f"{path} does not continue the service identity chain: {exc}") from None
        chain.append(endorsement)
    return chain


def _json_str(text: str) -> bytes:
    return _encode_json_string(text).encode()


def _leaf_of(raw: bytes | memoryview, e: EntryView) -> bytes:
    ced = e.commit_evidence_digest or bytes(32)
    return hashlib.sha256(hashlib.sha256(raw).digest() + ced + e.claims_digest).digest()


def _read_view(layout: Layout) -> int:
    try:
        return int(layout.view_file.read_text())
    except FileNotFoundError:
        return 0
    except (OSError, ValueError) as exc:
        raise ServiceError(f"cannot read {layout.view_file}: {exc}") from None


def _write_view(layout: Layout, view: int) -> None:
    """Durably record the view in use."""
    replace(layout.view_file, str(view).encode())
