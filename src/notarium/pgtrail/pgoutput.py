"""A parser of PostgreSQL's ``pgoutput`` logical replication messages, protocol version 1.

Pure: bytes in, dataclasses out (PostgreSQL documentation, "Logical Replication Message
Formats"). The bytes come from the database, which the trail does not trust to be well-formed:
every malformed message raises :class:`PgOutputError`, never a bare ``IndexError``.

Tuple values stay in PostgreSQL's text output format (``str``), ``None`` for SQL NULL, and
:data:`UNCHANGED` for a TOASTed value an UPDATE did not touch (PostgreSQL does not resend it).
"""

from __future__ import annotations

import datetime
import functools
import struct
from dataclasses import dataclass
from typing import Final, NamedTuple

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


def pg_time_text(micros: int) -> str:
    """``pg_time(micros).isoformat(timespec="microseconds")``, at a fraction of its cost (the
    capture agent writes one per transaction, and they come many to a second)."""
    seconds, fraction = divmod(micros, 1_000_000)
    return f"{_second_text(seconds)}.{fraction:06d}+00:00"


@functools.lru_cache(maxsize=16)
def _second_text(seconds: int) -> str:
    return pg_time(seconds * 1_000_000).isoformat(timespec="seconds").removesuffix("+00:00")


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


class RowChange(NamedTuple):
    """An Insert, Update or Delete message (most messages: a named tuple is the cheapest to make)."""

    op: str  # "I", "U" or "D"
    relid: int
    old: tuple[Value, ...] | None  # the old key ('K') or row ('O'): an Update's when sent, a Delete's
    old_kind: str  # 'K', 'O' or '' (none: an Insert, or an Update that did not change the key)
    new: tuple[Value, ...] | None  # an Insert's or Update's new row


PgMessage = Begin | Commit | Relation | RowChange | Truncate | Message | Other

_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")
_I16_AT = _I16.unpack_from
_I32_AT = _I32.unpack_from
_BEGIN = struct.Struct("!QqI")  # final LSN, commit time, xid
_COMMIT = struct.Struct("!bQQq")  # flags, commit LSN, end LSN, commit time
_U64 = struct.Struct("!Q")
_KIND_N, _KIND_U, _KIND_T, _KIND_B = ord("n"), ord("u"), ord("t"), ord("b")
_KIND_INSERT, _KIND_UPDATE, _KIND_DELETE = ord("I"), ord("U"), ord("D")
_ROW_KINDS: Final = frozenset({_KIND_INSERT, _KIND_UPDATE, _KIND_DELETE})
_TUPLE_TAGS: Final = {ord(t): t for t in "KON"}  # the old key, the old row, the new row
_U32_AT = _U32.unpack_from

# The parser works on offsets into one ``bytes`` object (a method call per field was most of the
# capture agent's parsing time). A read past the end surfaces as ``struct.error`` or
# ``IndexError``; :func:`parse` turns both into :class:`PgOutputError`, as every other refusal.


def _utf8(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PgOutputError("text is not UTF-8 (the trail needs a UTF8 database)") from None


def _string(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.find(b"\x00", pos)
    if end < 0:
        raise PgOutputError("a string is not terminated")
    return _utf8(buf[pos:end]), end + 1


def _tuple(buf: bytes, pos: int) -> tuple[tuple[Value, ...], int]:
    (n,) = _I16_AT(buf, pos)
    pos += 2
    if n < 0:
        raise PgOutputError("negative column count")
    size = len(buf)
    values: list[Value] = []
    append, text, int32 = values.append, _KIND_T, _I32_AT  # locals: the loop runs for every value
    for _ in range(n):
        kind = buf[pos]
        pos += 1
        if kind == text:
            (length,) = int32(buf, pos)
            start = pos + 4
            pos = start + length
            if length < 0 or pos > size:
                raise PgOutputError("message is truncated")
            try:
                append(buf[start:pos].decode("utf-8"))
            except UnicodeDecodeError:
                raise PgOutputError("text is not UTF-8 (the trail needs a UTF8 database)") from None
        elif kind == _KIND_N:
            append(None)
        elif kind == _KIND_U:
            append(UNCHANGED)
        elif kind == _KIND_B:
            raise PgOutputError("a binary tuple value (the trail asks for text)")
        else:
            raise PgOutputError(f"unknown tuple value kind {chr(kind)!r}")
    return tuple(values), pos


def _tagged_tuple(buf: bytes, pos: int, allowed: str) -> tuple[str, tuple[Value, ...], int]:
    tag = _TUPLE_TAGS.get(buf[pos], "")
    if not tag or tag not in allowed:
        raise PgOutputError(f"expected a tuple tagged {' or '.join(allowed)}, got {chr(buf[pos])!r}")
    values, pos = _tuple(buf, pos + 1)
    return tag, values, pos


def parse(payload: bytes) -> PgMessage:
    """Parse one pgoutput message (protocol version 1)."""
    if not payload:
        raise PgOutputError("empty message")
    buf = bytes(payload)
    try:
        msg, pos = _row_change(buf) if buf[0] in _ROW_KINDS else _parse(buf)
    except (struct.error, IndexError):
        raise PgOutputError("message is truncated") from None
    if pos != len(buf):
        raise PgOutputError(f"{len(buf) - pos} unexpected bytes after the message")
    return msg


def _row_change(buf: bytes) -> tuple[RowChange, int]:
    kind = buf[0]
    (relid,) = _U32_AT(buf, 1)
    if kind == _KIND_INSERT:
        _, new, pos = _tagged_tuple(buf, 5, "N")
        return RowChange("I", relid, None, "", new), pos
    if kind == _KIND_UPDATE:
        tag, values, pos = _tagged_tuple(buf, 5, "KON")
        if tag == "N":
            return RowChange("U", relid, None, "", values), pos
        _, new, pos = _tagged_tuple(buf, pos, "N")
        return RowChange("U", relid, values, tag, new), pos
    tag, old, pos = _tagged_tuple(buf, 5, "KO")
    return RowChange("D", relid, old, tag, None), pos


def _parse(buf: bytes) -> tuple[PgMessage, int]:
    kind = chr(buf[0])
    if kind == "B":
        final_lsn, commit_time, xid = _BEGIN.unpack_from(buf, 1)
        return Begin(final_lsn, commit_time, xid), 1 + _BEGIN.size
    if kind == "C":
        _flags, commit_lsn, end_lsn, commit_time = _COMMIT.unpack_from(buf, 1)
        return Commit(commit_lsn, end_lsn, commit_time), 1 + _COMMIT.size
    if kind == "R":
        (relid,) = _U32.unpack_from(buf, 1)
        namespace, pos = _string(buf, 5)
        name, pos = _string(buf, pos)
        identity = chr(buf[pos])
        if identity not in "dnfi":
            raise PgOutputError(f"unknown replica identity {identity!r}")
        (n,) = _I16_AT(buf, pos + 1)
        pos += 3
        if n < 0:
            raise PgOutputError("negative column count")
        columns = []
        for _ in range(n):
            flags = buf[pos]
            column, pos = _string(buf, pos + 1)
            type_oid, type_modifier = struct.unpack_from("!Ii", buf, pos)
            pos += 8
            columns.append(Column(column, type_oid, type_modifier, bool(flags & 1)))
        return Relation(relid, namespace or "pg_catalog", name, identity, tuple(columns)), pos
    if kind == "T":
        (n,) = _I32_AT(buf, 1)
        if n < 0:
            raise PgOutputError("negative relation count")
        if 6 + 4 * n > len(buf):
            raise PgOutputError("message is truncated")
        options = buf[5]
        relids = struct.unpack_from(f"!{n}I", buf, 6)
        return Truncate(relids, bool(options & 1), bool(options & 2)), 6 + 4 * n
    if kind == "M":
        flags = buf[1]
        (lsn,) = _U64.unpack_from(buf, 2)
        prefix, pos = _string(buf, 10)
        (length,) = _I32_AT(buf, pos)
        start = pos + 4
        end = start + length
        if length < 0 or end > len(buf):
            raise PgOutputError("message is truncated")
        return Message(bool(flags & 1), lsn, prefix, buf[start:end]), end
    if kind == "O":
        _, pos = _string(buf, 9)
        return Other("O"), pos
    if kind == "Y":
        _, pos = _string(buf, 5)
        _, pos = _string(buf, pos)
        return Other("Y"), pos
    raise PgOutputError(f"unknown message type {kind!r}")
