"""A parser of PostgreSQL's ``pgoutput`` logical replication messages, protocol version 1.

Pure: bytes in, dataclasses out (PostgreSQL documentation, "Logical Replication Message
Formats"). The bytes come from the database, which the trail does not trust to be well-formed:
every malformed message raises :class:`PgOutputError`, never a bare ``IndexError``.

Tuple values stay in PostgreSQL's text output format (``str``), ``None`` for SQL NULL, and
:data:`UNCHANGED` for a TOASTed value an UPDATE did not touch (PostgreSQL does not resend it).
"""

from __future__ import annotations

import datetime
import struct
from dataclasses import dataclass
from typing import Final

PG_EPOCH: Final = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)


class PgOutputError(ValueError):
    """A message that is not valid pgoutput (protocol version 1)."""


class _Unchanged:
    """The marker of an unchanged TOASTed value (``u`` in a tuple)."""

    _instance: _Unchanged | None = None

    def __new__(cls) -> _Unchanged:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Final = _Unchanged()
Value = str | None | _Unchanged


def lsn_text(lsn: int) -> str:
    """PostgreSQL's text form of an LSN (``16/B374D848``)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    """Parse ``X/Y``; raise ``ValueError`` on anything else."""
    hi, sep, lo = text.partition("/")
    if not sep or not hi or not lo or len(hi) > 8 or len(lo) > 8:
        raise ValueError(f"not an LSN: {text[:40]!r}")
    try:
        return (int(hi, 16) << 32) | int(lo, 16)
    except ValueError:
        raise ValueError(f"not an LSN: {text[:40]!r}") from None


def pg_time(micros: int) -> datetime.datetime:
    """A pgoutput timestamp (microseconds since 2000-01-01 UTC)."""
    return PG_EPOCH + datetime.timedelta(microseconds=micros)


@dataclass(frozen=True, slots=True)
class Begin:
    final_lsn: int
    commit_time: int  # microseconds since 2000-01-01 UTC
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    commit_lsn: int
    end_lsn: int
    commit_time: int


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type_oid: int
    type_modifier: int
    key: bool


@dataclass(frozen=True, slots=True)
class Relation:
    relid: int
    namespace: str
    name: str
    replica_identity: str  # d default, n nothing, f full, i index
    columns: tuple[Column, ...]

    @property
    def qualified(self) -> str:
        return f"{self.namespace}.{self.name}"


@dataclass(frozen=True, slots=True)
class Insert:
    relid: int
    new: tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class Update:
    relid: int
    old: tuple[Value, ...] | None  # the old key ('K') or old row ('O'), when PostgreSQL sends it
    old_kind: str  # 'K', 'O' or '' (not sent: the key did not change)
    new: tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class Delete:
    relid: int
    old: tuple[Value, ...]
    old_kind: str  # 'K' or 'O'


@dataclass(frozen=True, slots=True)
class Truncate:
    relids: tuple[int, ...]
    cascade: bool
    restart_identity: bool


@dataclass(frozen=True, slots=True)
class Message:
    transactional: bool
    lsn: int
    prefix: str
    content: bytes


@dataclass(frozen=True, slots=True)
class Other:
    """A message the trail needs no content of (Origin, Type)."""

    kind: str


PgMessage = Begin | Commit | Relation | Insert | Update | Delete | Truncate | Message | Other

_I8 = struct.Struct("!b")
_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")
_I64 = struct.Struct("!q")


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.buf):
            raise PgOutputError("message is truncated")
        out = self.buf[self.pos : end]
        self.pos = end
        return out

    def unpack(self, s: struct.Struct) -> int:
        end = self.pos + s.size
        if end > len(self.buf):
            raise PgOutputError("message is truncated")
        (value,) = s.unpack_from(self.buf, self.pos)
        self.pos = end
        return int(value)

    def byte(self) -> str:
        return chr(self.take(1)[0])

    def string(self) -> str:
        end = self.buf.find(b"\x00", self.pos)
        if end < 0:
            raise PgOutputError("a string is not terminated")
        raw = self.buf[self.pos : end]
        self.pos = end + 1
        return _utf8(raw)

    def done(self) -> None:
        if self.pos != len(self.buf):
            raise PgOutputError(f"{len(self.buf) - self.pos} unexpected bytes after the message")


def _utf8(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PgOutputError("text is not UTF-8 (the trail needs a UTF8 database)") from None


def _tuple(r: _Reader) -> tuple[Value, ...]:
    n = r.unpack(_I16)
    if n < 0:
        raise PgOutputError("negative column count")
    values: list[Value] = []
    for _ in range(n):
        kind = r.byte()
        if kind == "n":
            values.append(None)
        elif kind == "u":
            values.append(UNCHANGED)
        elif kind == "t":
            values.append(_utf8(r.take(r.unpack(_I32))))
        elif kind == "b":
            raise PgOutputError("a binary tuple value (the trail asks for text)")
        else:
            raise PgOutputError(f"unknown tuple value kind {kind!r}")
    return tuple(values)


def _tagged_tuple(r: _Reader, allowed: str) -> tuple[str, tuple[Value, ...]]:
    tag = r.byte()
    if tag not in allowed:
        raise PgOutputError(f"expected one of {allowed!r}, got {tag!r}")
    return tag, _tuple(r)


def parse(payload: bytes) -> PgMessage:
    """Parse one pgoutput message (protocol version 1)."""
    if not payload:
        raise PgOutputError("empty message")
    r = _Reader(bytes(payload))
    kind = r.byte()
    msg: PgMessage
    if kind == "B":
        msg = Begin(r.unpack(_U64), r.unpack(_I64), r.unpack(_U32))
    elif kind == "C":
        r.unpack(_I8)  # flags, unused
        msg = Commit(r.unpack(_U64), r.unpack(_U64), r.unpack(_I64))
    elif kind == "R":
        relid, namespace, name = r.unpack(_U32), r.string(), r.string()
        identity = r.byte()
        if identity not in "dnfi":
            raise PgOutputError(f"unknown replica identity {identity!r}")
        n = r.unpack(_I16)
        if n < 0:
            raise PgOutputError("negative column count")
        columns = []
        for _ in range(n):
            flags = r.unpack(_I8)
            columns.append(Column(r.string(), r.unpack(_U32), r.unpack(_I32), bool(flags & 1)))
        msg = Relation(relid, namespace or "pg_catalog", name, identity, tuple(columns))
    elif kind == "I":
        relid = r.unpack(_U32)
        _, new = _tagged_tuple(r, "N")
        msg = Insert(relid, new)
    elif kind == "U":
        relid = r.unpack(_U32)
        tag, values = _tagged_tuple(r, "KON")
        if tag == "N":
            msg = Update(relid, None, "", values)
        else:
            _, new = _tagged_tuple(r, "N")
            msg = Update(relid, values, tag, new)
    elif kind == "D":
        relid = r.unpack(_U32)
        tag, old = _tagged_tuple(r, "KO")
        msg = Delete(relid, old, tag)
    elif kind == "T":
        n = r.unpack(_I32)
        if n < 0:
            raise PgOutputError("negative relation count")
        options = r.unpack(_I8)
        msg = Truncate(tuple(r.unpack(_U32) for _ in range(n)), bool(options & 1), bool(options & 2))
    elif kind == "M":
        flags = r.unpack(_I8)
        lsn, prefix = r.unpack(_U64), r.string()
        msg = Message(bool(flags & 1), lsn, prefix, r.take(r.unpack(_I32)))
    elif kind == "O":
        r.unpack(_U64)
        r.string()
        msg = Other("O")
    elif kind == "Y":
        r.unpack(_U32)
        r.string()
        r.string()
        msg = Other("Y")
    else:
        raise PgOutputError(f"unknown message type {kind!r}")
    r.done()
    return msg
