"""The ledger engine behind a local socket.

``notarium serve`` runs in two processes: the engine process owns the :class:`Ledger` (sequencing,
sealing, signing, writing) and serves it with :class:`~notarium.ledger.engine_service.EngineService`;
the HTTP front process (TLS, HTTP, authentication) calls it through :class:`RemoteLedger` (here).
Python runs one thread at a time per process, so the split lets the two halves of an append use
both cores (docs/design/server.md).

Wire format, both ways: frames of a 4-byte big-endian length and a pickle. The socket is an unnamed
socketpair inherited by the front only, so both ends are this program; pickle is safe there and
nowhere else (never point this at a socket anyone else can reach).

- front → engine: a batch ``[(call_id, method, args, kwargs), ...]`` of the calls the front made
  in one event-loop iteration (at most BATCH_MAX). Call id 0 wants no answer (appends).
- engine → front: ``("r", [(call_id, ok, value_or_error), ...])`` answering a batch's calls in
  order, ``("s", EngineStatus)`` after each commit, or ``("x", message)`` when an append failed.

**The front sequences.** The engine runs with ``auto_sign=False``: it writes a signature
transaction only when told. So the front knows every seqno in advance: it hands out TxIds itself,
answers a POST without waiting for the engine, and sends each append (and each "sign here") with
the seqno it promised, which the engine checks. Appends keep the pipelining of HTTP/1.1 (a round
trip per append would serialise each connection's requests). The front applies the engine's
signature interval and count, and its limit on unsigned transactions. If the engine ever refuses
a sequenced call, the front stops taking writes: promised TxIds that were never written can only
end Invalid (a restart starts a new view), as for any crash before a commit.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import socket
import struct
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from notarium.errors import LedgerError, NotariumError, NotPrimaryError, ServiceError
from notarium.ledger.config import EngineConfig
from notarium.ledger.entries import LedgerEntry, check_write_set
from notarium.ledger.layout import ServiceConfig
from notarium.ledger.proofs import Receipt
from notarium.recovery.shares import RecoverySharesRecord, check_recovery_members
from notarium.types import TxId, TxStatus
from notarium.verify.consistency import SignedRoot
from notarium.verify.entry import Tables

log = logging.getLogger("notarium.ledger.remote")

FRAME_HEADER = struct.Struct(">I")
MAX_FRAME = 1 << 30
BATCH_MAX = 16  # calls per frame: the engine starts on a batch while the front is still reading

# the ledger's methods the front may call: reads and the two kinds of append
CALLS = frozenset(
    {
        "append",
        "append_entry",
        "renew_certificates",
        "sign",
        "status",
        "lookup_entry",
        "latest_entry",
        "entries",
        "collections",
        "receipt",
        "cose_receipt",
        "signed_root",
        "consistency",
        "state",
        "state_get",
        "rekey",
        "reissue_recovery_shares",
        "recovery_shares",
    }
)


@dataclass(frozen=True, slots=True)
class Role:
    """A replicated node's role (docs/design/ha.md), as the front needs it: whether it sequences
    (and from where), else where to forward writes."""

    primary: bool
    view: int
    next_seqno: int
    primary_address: str | None  # https://host:port of the primary (None: none known right now)
    following: bool = True  # False: following stopped on a verification failure
    store_reachable: bool = True  # False: the replicated log (PostgreSQL) cannot be reached right now


@dataclass(frozen=True, slots=True)
class EngineStatus:
    committed: TxId
    healthy: bool
    state_version: int = 0  # a follower's replicated state tables changed when this grows


@dataclass(frozen=True, slots=True)
class EngineFacts:
    """What the front needs once, at start: who the node is and its TLS credentials."""

    service: ServiceConfig
    node_cert_pem: bytes
    node_key_pem: bytes
    service_cert_pem: bytes
    status: EngineStatus
    view: int
    next_seqno: int
    engine: EngineConfig
    settings: Any  # the front's own settings (a ServerConfig), handed over by the engine process
    ledger_dir: Path  # DIR/ledger: the front serves completed (immutable) chunk files from it directly
    role: Role | None = None  # a replicated node's role (None: a single node, always the primary)
    # PEM endorsements of the previous service identities, newest first (what a joining node needs)
    previous_endorsements: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class EngineMetrics:
    committed: int
    last_sequenced: int
    ledger_bytes: int


def load_frame(data: bytes | memoryview) -> Any:
    # both ends of the socketpair are this program (see the module docstring): never untrusted bytes
    return pickle.loads(data)  # noqa: S301


def frame(obj: object) -> bytes:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return FRAME_HEADER.pack(len(data)) + data


def portable_error(exc: BaseException) -> NotariumError:
    """An error that survives pickling: notarium's own as they are, anything else as a ServiceError."""
    if isinstance(exc, NotariumError):
        try:
            load_frame(pickle.dumps(exc))
        except Exception:  # an unpicklable error still needs an answer
            return LedgerError(str(exc))
        return exc
    return ServiceError("the ledger engine failed to answer; see its log")


class _Link(asyncio.Protocol):
    def __init__(self, owner: RemoteLedger) -> None:
        self._owner = owner
        self._buf = bytearray()

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        start = 0
        while len(buf) - start >= FRAME_HEADER.size:
            (size,) = FRAME_HEADER.unpack_from(buf, start)
            end = start + FRAME_HEADER.size + size
            if len(buf) < end:
                break
            self._owner._received(load_frame(memoryview(buf)[start + FRAME_HEADER.size : end]))
            start = end
        if start:
            del buf[:start]

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._lost()


class RemoteLedger:
    """The front's handle on the engine: it sequences appends and awaits reads.

    ``committed`` and ``healthy`` are kept current by the engine's commit notices, without a call.
    Calls made in one event-loop iteration travel together; answers come back in order.
    """

    facts: EngineFacts  # set by connect()

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: asyncio.Transport | None = None
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._batch: list[tuple[int, str, tuple[Any, ...], dict[str, Any]]] = []
        self._next_id = 0
        self._listeners: list[Callable[[int], None]] = []
        self._state_listeners: list[Callable[[], None]] = []
        self.closed = asyncio.Event()
        self._engine = EngineStatus(TxId(0, 0), False)
        # the sequencer
        self._view = 0
        self._next = 0
        self._unsigned = 0
        self._sign_timer: asyncio.TimerHandle | None = None
        self._room: list[asyncio.Future[None]] = []
        self._last_signature = 0
        self.broken: str | None = None
        self.role: Role | None = None  # a replicated node's role; None: a single node

    @classmethod
    async def connect(cls, sock: socket.socket) -> RemoteLedger:
        self = cls()
        self._loop = asyncio.get_running_loop()
        transport, _ = await self._loop.connect_accepted_socket(lambda: _Link(self), sock)
        self._transport = transport
        facts = cast(EngineFacts, await self._call("facts"))
        if facts.engine.auto_sign:
            raise ServiceError("the engine signs on its own; the front cannot sequence for it")
        self.facts = facts
        self._engine = facts.status
        self._view, self._next = facts.view, facts.next_seqno
        if facts.role is not None:
            self._take_role(facts.role)
        return self

    # --- wire ----------------------------------------------------------------------------------

    def _enqueue(self, call_id: int, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self._loop is None or self._transport is None or self.closed.is_set():
            raise ServiceError("the ledger engine is not running")
        if not self._batch:
            self._loop.call_soon(self._send)
        self._batch.append((call_id, method, args, kwargs))
        if len(self._batch) >= BATCH_MAX:
            self._send()

    def _call(self, method: str, *args: Any) -> asyncio.Future[Any]:
        """A call whose answer is awaited."""
        if self._loop is None:
            raise ServiceError("the ledger engine is not running")
        fut = self._loop.create_future()
        self._next_id += 1
        self._enqueue(self._next_id, method, args, {})
        self._waiting[self._next_id] = fut
        return fut

    def _send(self) -> None:
        batch, self._batch = self._batch, []
        if batch and self._transport is not None and not self._transport.is_closing():
            self._transport.write(frame(batch))

    def _received(self, message: tuple[str, Any]) -> None:
        kind, payload = message
        if kind == "s":
            changed = payload.state_version != self._engine.state_version
            self._engine = payload
            for listener in list(self._listeners):
                listener(payload.committed.seqno)
            if changed:
                for state_listener in list(self._state_listeners):
                    state_listener()
            room, self._room = self._room, []
            for waiter in room:
                if not waiter.done():
                    waiter.set_result(None)
            return
        if kind == "p":
            self._take_role(payload)
            return
        if kind == "x":
            if self.broken is None:
                log.error("the engine refused a sequenced write; this front takes no more writes: %s", payload)
            self.broken = str(payload)
            return
        for call_id, ok, value in payload:
            fut = self._waiting.pop(call_id, None)
            if fut is None or fut.done():
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    def _take_role(self, role: Role) -> None:
        was_primary = self.role is not None and self.role.primary
        self.role = role
        if role.primary and not was_primary:  # promoted: sequence from where the engine stands
            self._view, self._next = role.view, role.next_seqno
            self._unsigned, self._last_signature, self.broken = 0, role.next_seqno - 1, None
            log.warning("this node is the primary of view %d: sequencing from seqno %d", role.view, role.next_seqno)

    @property
    def primary(self) -> bool:
        """Whether this node sequences writes (a single node always does)."""
        return self.role is None or self.role.primary

    def _lost(self) -> None:
        self.closed.set()
        self._engine = EngineStatus(self._engine.committed, False)
        if self._sign_timer is not None:
            self._sign_timer.cancel()
        waiting, self._waiting = self._waiting, {}
        for fut in [*waiting.values(), *self._room]:
            if not fut.done():
                fut.set_exception(ServiceError("the ledger engine stopped"))
        self._room = []

    async def aclose(self) -> None:
        """Close the link and wait until it is closed."""
        if self._transport is not None:
            self._transport.close()
            await self.closed.wait()

    # --- state kept by notices -----------------------------------------------------------------

    @property
    def committed(self) -> TxId:
        return self._engine.committed

    @property
    def healthy(self) -> bool:
        return self._engine.healthy and not self.closed.is_set() and self.broken is None

    def add_commit_listener(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(seqno)`` on the event loop each time the engine reports a commit."""
        self._listeners.append(listener)

    def remove_commit_listener(self, listener: Callable[[int], None]) -> None:
        self._listeners.remove(listener)

    def add_state_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` on the event loop when a follower's replicated state tables change
        (users, roles, issuers… written through another node)."""
        self._state_listeners.append(listener)

    # --- sequencing ----------------------------------------------------------------------------

    async def _sequenced(self, method: str, *args: Any, **kwargs: Any) -> TxId:
        """Hand out the next TxId for ``method(*args, **kwargs)`` and send it; the engine checks the
        seqno."""
        if not self.primary:
            raise NotPrimaryError("this node is not the primary: writes go to the primary")
        limits = self.facts.engine
        while self._next - self._engine.committed.seqno > limits.max_unsigned and not self.closed.is_set():
            room = cast(asyncio.Future[None], cast(asyncio.AbstractEventLoop, self._loop).create_future())
            self._room.append(room)
            await room
        if self.broken is not None:
            raise LedgerError(f"this server takes no more writes: {self.broken}")
        txid = TxId(self._view, self._next)
        kwargs["seqno"] = txid.seqno
        self._enqueue(0, method, args, kwargs)
        self._next += 1
        self._unsigned += 1
        if self._unsigned >= limits.signature_tx_count:
            self._sign()
        elif self._sign_timer is None:
            loop = cast(asyncio.AbstractEventLoop, self._loop)
            self._sign_timer = loop.call_later(limits.signature_interval_ms / 1000, self._sign)
        return txid

    def _sign(self, *, empty: bool = False) -> None:
        """Place a signature transaction after everything sequenced so far (``empty``: even if that
        is nothing new)."""
        if self._sign_timer is not None:
            self._sign_timer.cancel()
            self._sign_timer = None
        if (not self._unsigned and not empty) or self.closed.is_set() or self.broken is not None:
            return
        self._enqueue(0, "sign", (), {"seqno": self._next})
        self._last_signature = self._next
        self._next += 1
        self._unsigned = 0

    def _prove_newest(self, txid: TxId) -> None:
        """The engine has no receipt for the newest signature until a later signature exists:
        place one, unless one is already on its way."""
        newest = self._engine.committed.seqno
        if not self.primary:
            return  # only the primary signs; a follower's receipt waits for the next signature
        if txid.seqno == newest and not self._unsigned and self._last_signature <= newest:
            self._sign(empty=True)

    async def append(self, public: Tables, private: Tables | None = None) -> TxId:
        check_write_set(public, private)  # before a seqno is promised: the engine must not refuse it
        return await self._sequenced("append", public, private)

    def append_entry(self, contents: str, collection_id: str, tags: str | None) -> Awaitable[TxId]:
        return self._sequenced("append_entry", contents, collection_id, tags)  # the hot path: one coroutine

    async def reissue_recovery_shares(self, members: Mapping[str, str], threshold: int) -> TxId:
        """:meth:`Ledger.reissue_recovery_shares` (checked here first: the engine must not refuse it)."""
        check_recovery_members(members, threshold)
        return await self._sequenced("reissue_recovery_shares", dict(members), threshold)

    async def renew_certificates(self, *, service_days: int | None, node_days: int | None) -> TxId:
        """:meth:`Ledger.renew_certificates` (checked here first: the engine must not refuse it);
        then :attr:`facts` carry the renewed certificates."""
        for value in (service_days, node_days):
            if value is not None and (type(value) is not int or not 1 <= value <= 3650):
                raise ValueError("certificate validity must be from 1 to 3650 days")
        if service_days is None and node_days is None:
            raise ValueError("renew the service certificate, the node certificate, or both")
        txid = await self._sequenced("renew_certificates", service_days=service_days, node_days=node_days)
        self.facts = cast(EngineFacts, await self._call("facts"))
        return txid

    async def rekey(self) -> TxId:
        """:meth:`Ledger.rekey`: a new ledger secret for every later transaction."""
        if await self.recovery_shares() is None:
            raise LedgerError("no recovery shares were ever issued: issue them before rekeying")
        return await self._sequenced("rekey")

    async def recovery_shares(self) -> RecoverySharesRecord | None:
        return cast(RecoverySharesRecord | None, await self._call("recovery_shares"))

    # --- reads ---------------------------------------------------------------------------------

    async def status(self, txid: TxId) -> TxStatus:
        return cast(TxStatus, await self._call("status", txid))

    async def lookup_entry(self, txid: TxId) -> tuple[TxStatus, LedgerEntry | None]:
        return cast(tuple[TxStatus, LedgerEntry | None], await self._call("lookup_entry", txid))

    async def latest_entry(self, collection_id: str) -> LedgerEntry | None:
        return cast(LedgerEntry | None, await self._call("latest_entry", collection_id))

    async def entries(
        self, collection_id: str, lower: int, upper: int, *, limit: int, tag: str | None, max_bytes: int | None = None
    ) -> list[LedgerEntry]:
        return cast(list[LedgerEntry], await self._call("entries", collection_id, lower, upper, limit, tag, max_bytes))

    async def collections(self) -> list[str]:
        return cast(list[str], await self._call("collections"))

    async def receipt(self, txid: TxId) -> Receipt | None:
        receipt = cast(Receipt | None, await self._call("receipt", txid))
        if receipt is None:
            self._prove_newest(txid)
        return receipt

    async def cose_receipt(self, txid: TxId) -> bytes | None:
        receipt = cast(bytes | None, await self._call("cose_receipt", txid))
        if receipt is None:
            self._prove_newest(txid)
        return receipt

    async def signed_root(self, txid: TxId | None = None) -> SignedRoot:
        """The signed root at a committed signature transaction (``None``: the newest)."""
        return cast(SignedRoot, await self._call("signed_root", txid))

    async def consistency(self, first: TxId, second: TxId | None = None) -> tuple[SignedRoot, SignedRoot, list[bytes]]:
        """The signed roots at ``first`` and ``second`` (``None``: the newest) and the consistency proof."""
        return cast(tuple[SignedRoot, SignedRoot, list[bytes]], await self._call("consistency", first, second))

    async def state(self, table: str) -> dict[bytes, bytes]:
        return cast(dict[bytes, bytes], await self._call("state", table))

    async def state_get(self, table: str, key: bytes) -> bytes | None:
        return cast(bytes | None, await self._call("state_get", table, key))

    async def metrics(self) -> EngineMetrics:
        return cast(EngineMetrics, await self._call("metrics"))

    async def admit_node(
        self, public_key_pem: str, hosts: list[str], node_cert_pem: str | None = None
    ) -> tuple[str, str]:
        """:meth:`EngineService.admit_node`: (node certificate PEM, base64 sealed secrets)."""
        return cast(tuple[str, str], await self._call("admit_node", public_key_pem, list(hosts), node_cert_pem))

    async def notice(self, what: str, *args: Any) -> Any:
        """Tell the engine process something about the front (e.g. ``"listening", port``)."""
        return await self._call("notice", what, *args)
