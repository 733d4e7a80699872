"""The ledger engine: sequence, encrypt, sign, persist, and prove transactions.

Life of a transaction (docs/design/durability.md):

1. ``append`` assigns the next seqno in the current view, serialises the entry in CCF's format
   (private domain encrypted under the ledger secret), adds its leaf to the Merkle tree and
   queues it. The caller gets its TxId at once: status *Pending* (:mod:`.sequencing`).
2. A signature transaction follows every ``signature_tx_count`` transactions (emitted by the
   appender that reaches the count) and, at the latest, ``signature_interval`` after the first
   unsigned one (emitted by the flusher thread). The flusher appends the queued entries and
   signatures to the chunk file and ``fsync``s (group commit; :mod:`.flushing`).
3. Only then does it index the batch and publish the signature's seqno as committed: every
   transaction up to it is *Committed* and has receipts (:mod:`.reading`, :mod:`.proofs`).

A crash loses at most the transactions after the last durable signature; they become *Invalid*
(:mod:`.reopening`). This module assembles the engine from those parts (:mod:`.core` describes
them and the state they share) and owns its life: opening a service directory and closing it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from notarium.durable import lock_exclusive
from notarium.ledger.administration import Administration
from notarium.ledger.config import EngineConfig, ReplicaLog, SecretCourier
from notarium.ledger.fastcrypto import RandomPool
from notarium.ledger.following import Following
from notarium.ledger.identity import NodeIdentity, cert_pem
from notarium.ledger.identity_chain import IdentityChain, load_identity_chain
from notarium.ledger.index import Index
from notarium.ledger.layout import Layout, ServiceConfig
from notarium.ledger.proofs import Proofs
from notarium.ledger.reopening import Reopening
from notarium.ledger.storage.files import ChunkFiles
from notarium.recovery.chain import LedgerSecrets
from notarium.verify import tables
from notarium.verify.entry import Tables
from notarium.verify.keys import key_id

if TYPE_CHECKING:
    from notarium.recovery.sealing import Sealer

_DEFAULT_CONFIG = EngineConfig()


class Ledger(Administration, Proofs, Following, Reopening):
    """One node's ledger over a service directory. Thread-safe."""

    def __init__(
        self,
        layout: Layout,
        service: ServiceConfig,
        identity: NodeIdentity,
        ledger_secret: bytes | LedgerSecrets,
        config: EngineConfig = _DEFAULT_CONFIG,
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
        self._known_view = 0
        self.state_version = 0
        self._set_secrets(
            ledger_secret if isinstance(ledger_secret, LedgerSecrets) else LedgerSecrets.single(ledger_secret)
        )
        self._recovery = None
        self._node_id = key_id(identity.node_key.public_key())
        self._node_cert_pem = cert_pem(identity.node_cert).decode()
        self._chain = IdentityChain(
            load_identity_chain(layout, identity.service_cert), identity.service_key.public_key()
        )
        self._lockfd = self._lock(layout)
        self._lock_obj = threading.Lock()
        self._work = threading.Condition(self._lock_obj)
        self._done = threading.Condition(self._lock_obj)
        self._tree_lock = threading.Lock()
        self._closing = False
        self._closed = False
        self._failure = None
        self._listeners = []
        try:
            self._chunks = ChunkFiles(layout.ledger_dir, fsync=config.fsync)
            self._index = Index(layout.index_file)
            self._recover(genesis)
        except BaseException:
            os.close(self._lockfd)
            raise
        self._flusher = threading.Thread(target=self._flush_loop, name="notarium-flusher", daemon=True)
        self._flusher.start()

    @staticmethod
    def lock_directory(layout: Layout) -> int:
        """Take the service directory's lock (a file descriptor; close it to release)."""
        return Ledger._lock(layout)

    @staticmethod
    def _lock(layout: Layout) -> int:
        return lock_exclusive(layout.lock_file, f"{layout.root} is in use by another notarium process")

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
