"""The trail's ledger entries: what ``pg capture`` writes and ``pg verify``/``pg restore`` replay.

Every entry of a trail's collection is one compact JSON document with ``"format":
"notarium-pg/1"`` and a ``kind`` (docs/design/pg-trail.md has the whole format):

- ``init``: the database (system identifier, timeline, name), slot, publication and each captured
  table's shape (columns with types, key columns, identity ``key`` or ``full``). It starts an
  *epoch*; ``pg init --rebaseline`` starts the next one.
- ``baseline`` (rows of one table, as of the slot's exported snapshot) ... ``baseline-end`` (the
  snapshot's LSN, row counts per table, number of baseline entries): verified as one.
- ``txs``: committed database transactions in commit order, covering the LSN range
  ``[from, to)``; ``count`` is the epoch's running number of transactions. An empty ``txs`` only
  moves the covered range on (the database wrote WAL that touched no captured table).
- ``part``: part i of n of a transaction too large for one entry (the parts' ``text`` joined is
  a ``txs`` entry holding that transaction; ``sha256`` is its digest).
- ``gap``: the slot had moved past LSNs that never reached the ledger. ``stop``: capture stopped
  for a reason recorded for all to see (a captured table changed shape).

Row values are PostgreSQL's text output, ``null``, or ``{"unchanged": true}`` for a TOASTed value
an UPDATE did not resend. Decoding is strict: everything read back from a ledger is checked, and
any deviation raises :class:`TrailFormatError`.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

import orjson

from notarium.errors import VerificationError
from notarium.pgtrail.pgoutput import UNCHANGED, Value, lsn_text, parse_lsn

FORMAT: Final = "notarium-pg/1"
UNCHANGED_JSON: Final = {"unchanged": True}
_TEXT_OR_NULL: Final = frozenset({str, type(None)})


class TrailFormatError(VerificationError):
    """An entry of the trail's collection is not a valid trail entry."""

    def __init__(self, message: str) -> None:
        super().__init__(message, check="trail-format")


# --- shapes -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ColumnShape:
    name: str
    type: str  # format_type(): e.g. "integer", "character varying(20)"
    oid: int


@dataclass(frozen=True, slots=True)
class TableShape:
    name: str  # "schema.table", as PostgreSQL spells both parts
    columns: tuple[ColumnShape, ...]
    key: tuple[str, ...]  # key columns; for identity "full", every column
    identity: str  # "key" (primary key / replica identity index) or "full"
    key_positions: tuple[int, ...] = field(init=False, repr=False, compare=False)  # of the key columns

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        object.__setattr__(self, "key_positions", tuple(names.index(k) for k in self.key))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "columns": [{"name": c.name, "type": c.type, "oid": c.oid} for c in self.columns],
            "key": list(self.key),
            "identity": self.identity,
        }

    @classmethod
    def from_json(cls, obj: Any) -> TableShape:
        d = _obj(obj, "table", {"name", "columns", "key", "identity"})
        columns = tuple(
            ColumnShape(_str(c["name"], "column name"), _str(c["type"], "column type"), _int(c["oid"], "column oid"))
            for c in (_obj(x, "column", {"name", "type", "oid"}) for x in _list(d["columns"], "columns"))
        )
        if not columns:
            raise TrailFormatError("a table without columns")
        names = [c.name for c in columns]
        if len(set(names)) != len(names):
            raise TrailFormatError("a table names a column twice")
        key = tuple(_str(k, "key column") for k in _list(d["key"], "key"))
        if not key or any(k not in names for k in key) or len(set(key)) != len(key):
            raise TrailFormatError(f"table {d['name']!r}: its key columns are not among its columns")
        identity = d["identity"]
        if identity not in ("key", "full"):
            raise TrailFormatError("table identity is neither 'key' nor 'full'")
        return cls(_str(d["name"], "table name"), columns, key, identity)


# --- entries ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Init:
    epoch: int
    system_identifier: str
    timeline: int
    database: str
    slot: str
    publication: str
    lsn: int  # where the database was when the epoch began
    time: str
    tables: tuple[TableShape, ...]
    reason: str  # "init" or "rebaseline: ..."

    def table(self, name: str) -> TableShape | None:
        for t in self.tables:
            if t.name == name:
                return t
        return None


@dataclass(frozen=True, slots=True)
class Baseline:
    epoch: int
    lsn: int  # the snapshot's consistent point
    table: str
    seq: int  # position among the baseline's entries, from 0
    rows: tuple[tuple[Value, ...], ...]


@dataclass(frozen=True, slots=True)
class BaselineEnd:
    epoch: int
    lsn: int
    counts: Mapping[str, int]
    entries: int


# Change and Tx are named tuples, not dataclasses: the capture agent makes one per row change and
# per transaction, and a frozen dataclass costs three times as much to make.


class Change(NamedTuple):
    op: str  # I U D T
    table: str  # for T: the tables truncated, comma-joined in `tables`
    new: tuple[Value, ...] | None = None
    old: tuple[Value, ...] | None = None
    tables: tuple[str, ...] = ()


class Tx(NamedTuple):
    xid: int
    lsn: int  # the commit record's LSN
    end: int  # the end of the commit record
    time: str  # commit time, ISO 8601 UTC
    changes: tuple[Change, ...]


@dataclass(frozen=True, slots=True)
class Txs:
    epoch: int
    start: int  # "from": the covered range [start, end)
    end: int
    count: int  # the epoch's running number of transactions, after these
    txs: tuple[Tx, ...]


@dataclass(frozen=True, slots=True)
class Part:
    epoch: int
    start: int  # "from": as the joined txs entry's
    lsn: int  # commit LSN of the transaction
    end: int
    count: int  # as the joined txs entry's
    part: int  # 1..of
    of: int
    sha256: str
    text: str


@dataclass(frozen=True, slots=True)
class Gap:
    epoch: int
    start: int
    end: int
    count: int  # the epoch's running number of transactions (unchanged: the gap's are unknown)
    reason: str


@dataclass(frozen=True, slots=True)
class Stop:
    epoch: int
    lsn: int
    table: str
    reason: str


TrailEntry = Init | Baseline | BaselineEnd | Txs | Part | Gap | Stop


# --- encoding -----------------------------------------------------------------------------------


# What :func:`to_json` builds is for :func:`dumps` only, which writes tuples as JSON arrays: rows
# are not copied into lists.


def _values(row: Sequence[Value]) -> Sequence[Any]:
    if UNCHANGED not in row:  # most rows: one pass in C
        return row
    return [UNCHANGED_JSON if v is UNCHANGED else v for v in row]


def _change_json(c: Change) -> tuple[Any, ...]:
    if c.op == "I":
        return ("I", c.table, _values(c.new or ()))
    if c.op == "U":
        return ("U", c.table, _values(c.new or ()), None if c.old is None else _values(c.old))
    if c.op == "D":
        return ("D", c.table, _values(c.old or ()))
    return ("T", c.tables)


def tx_json(tx: Tx) -> dict[str, Any]:
    return {
        "xid": tx.xid,
        "lsn": lsn_text(tx.lsn),
        "end": lsn_text(tx.end),
        "time": tx.time,
        "changes": [_change_json(c) for c in tx.changes],
    }


def to_json(entry: TrailEntry) -> dict[str, Any]:
    head: dict[str, Any] = {"format": FORMAT, "epoch": entry.epoch}
    if isinstance(entry, Init):
        return {
            **head,
            "kind": "init",
            "systemIdentifier": entry.system_identifier,
            "timeline": entry.timeline,
            "database": entry.database,
            "slot": entry.slot,
            "publication": entry.publication,
            "lsn": lsn_text(entry.lsn),
            "time": entry.time,
            "tables": [t.to_json() for t in entry.tables],
            "reason": entry.reason,
        }
    if isinstance(entry, Baseline):
        return {
            **head,
            "kind": "baseline",
            "lsn": lsn_text(entry.lsn),
            "table": entry.table,
            "seq": entry.seq,
            "rows": [_values(r) for r in entry.rows],
        }
    if isinstance(entry, BaselineEnd):
        return {
            **head,
            "kind": "baseline-end",
            "lsn": lsn_text(entry.lsn),
            "counts": dict(entry.counts),
            "entries": entry.entries,
        }
    if isinstance(entry, Txs):
        return {
            **head,
            "kind": "txs",
            "from": lsn_text(entry.start),
            "to": lsn_text(entry.end),
            "count": entry.count,
            "txs": [tx_json(t) for t in entry.txs],
        }
    if isinstance(entry, Part):
        return {
            **head,
            "kind": "part",
            "from": lsn_text(entry.start),
            "lsn": lsn_text(entry.lsn),
            "end": lsn_text(entry.end),
            "count": entry.count,
            "part": entry.part,
            "of": entry.of,
            "sha256": entry.sha256,
            "text": entry.text,
        }
    if isinstance(entry, Gap):
        return {
            **head,
            "kind": "gap",
            "from": lsn_text(entry.start),
            "to": lsn_text(entry.end),
            "count": entry.count,
            "reason": entry.reason,
        }
    return {**head, "kind": "stop", "lsn": lsn_text(entry.lsn), "table": entry.table, "reason": entry.reason}


def encode(entry: TrailEntry) -> str:
    """The entry's contents: compact JSON."""
    return dumps(to_json(entry))


def dumps(obj: Any) -> str:
    """Compact JSON, UTF-8 as it is (no ``\\u`` escapes but for control characters): the one
    encoding of the trail's entries, rows and keys."""
    return orjson.dumps(obj).decode()


def change_line(c: Change) -> str:
    """One change as it stands in a ``txs`` entry (a JSON array)."""
    return dumps(_change_json(c))


def _escaped_size(text: str) -> int:
    """Bytes ``text`` takes inside a JSON string (escaping is per character, so sizes add up)."""
    return len(orjson.dumps(text)) - 2


def split_stream(
    epoch: int, start: int, count: int, head: Tx, lines: Callable[[], Iterable[str]], limit: int
) -> Iterator[Part]:
    """The ``txs`` entry holding one transaction (``head`` gives its xid, LSNs and time; ``lines()``
    its changes, each from :func:`change_line`, and must give the same lines each time it is
    called), as parts of at most ``limit`` bytes each. Two passes over ``lines()``: the first
    fixes the digest and where each part ends, the second makes the parts; memory holds about one
    part, whatever the transaction's size."""
    shell = encode(Txs(epoch, start, head.end, count, (Tx(head.xid, head.lsn, head.end, head.time, ()),)))
    closing = "]}]}"
    if not shell.endswith("[]" + closing[1:]):
        raise ValueError("unexpected txs shape")
    opening = shell[: -len(closing)]  # ends with "changes":[

    def fragments() -> Iterator[str]:
        yield opening
        for i, line in enumerate(lines()):
            yield line if i == 0 else "," + line
        yield closing

    probe = Part(epoch, start, head.lsn, head.end, count, 10**9, 10**9, "0" * 64, "")
    room = limit - len(encode(probe).encode())
    if room < 64:
        raise ValueError("the entry size limit is too small for a part")
    digest = hashlib.sha256()
    sizes: list[int] = []  # characters in each part
    chars = used = 0
    for frag in fragments():
        digest.update(frag.encode())
        size = _escaped_size(frag)
        if used + size <= room:
            chars, used = chars + len(frag), used + size
            continue
        if chars:
            sizes.append(chars)
        pos = 0
        while size > room:  # a fragment larger than a part: cut it where the escaped size fits
            take = room
            while take > 1 and _escaped_size(frag[pos : pos + take]) > room:
                take //= 2
            sizes.append(take)
            size -= _escaped_size(frag[pos : pos + take])
            pos += take
        chars, used = len(frag) - pos, size
    if chars:
        sizes.append(chars)
    sha = digest.hexdigest()
    buffer = ""
    part = 0
    for frag in fragments():
        buffer += frag
        while part < len(sizes) and len(buffer) >= sizes[part]:
            text, buffer = buffer[: sizes[part]], buffer[sizes[part] :]
            part += 1
            yield Part(epoch, start, head.lsn, head.end, count, part, len(sizes), sha, text)
    if buffer or part != len(sizes):
        raise ValueError("the second pass over the transaction's changes differs from the first")


def split_tx(epoch: int, start: int, count: int, tx: Tx, limit: int) -> list[Part]:
    """A transaction held in memory as parts of at most ``limit`` bytes each."""
    return list(split_stream(epoch, start, count, tx, lambda: (change_line(c) for c in tx.changes), limit))


def join_parts(parts: Sequence[Part]) -> Txs:
    """Parts 1..n of one transaction, verified as one."""
    if not parts:
        raise TrailFormatError("no parts to join")
    first = parts[0]
    if [p.part for p in parts] != list(range(1, first.of + 1)):
        raise TrailFormatError(f"transaction at LSN {lsn_text(first.lsn)}: its parts are not 1..{first.of}")
    head = (first.of, first.sha256, first.lsn, first.end, first.epoch, first.start, first.count)
    if any((p.of, p.sha256, p.lsn, p.end, p.epoch, p.start, p.count) != head for p in parts):
        raise TrailFormatError(f"transaction at LSN {lsn_text(first.lsn)}: its parts disagree")
    text = "".join(p.text for p in parts)
    if hashlib.sha256(text.encode()).hexdigest() != first.sha256:
        raise TrailFormatError(f"transaction at LSN {lsn_text(first.lsn)}: its parts do not match their digest")
    whole = decode(text)
    if not isinstance(whole, Txs) or len(whole.txs) != 1 or whole.txs[0].lsn != first.lsn:
        raise TrailFormatError(f"transaction at LSN {lsn_text(first.lsn)}: its parts do not hold that transaction")
    if (whole.txs[0].end, whole.epoch, whole.start, whole.count) != (first.end, first.epoch, first.start, first.count):
        raise TrailFormatError(f"transaction at LSN {lsn_text(first.lsn)}: its parts disagree with their header")
    return whole


# --- decoding (strict) --------------------------------------------------------------------------


def _obj(value: Any, what: str, keys: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TrailFormatError(f"{what} is not a JSON object")
    if set(value) != keys:
        raise TrailFormatError(f"{what} has fields {sorted(value)}, expected {sorted(keys)}")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise TrailFormatError(f"{what} is not a list")
    return value


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise TrailFormatError(f"{what} is not a string")
    return value


def _int(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TrailFormatError(f"{what} is not a non-negative integer")
    return value


def _lsn(value: Any, what: str) -> int:
    try:
        return parse_lsn(_str(value, what))
    except ValueError:
        raise TrailFormatError(f"{what} is not an LSN") from None


def _value(v: Any) -> Value:
    if v is None or isinstance(v, str):
        return v
    if v == UNCHANGED_JSON:
        return UNCHANGED
    raise TrailFormatError("a row value is neither text, null nor unchanged")


def _row(value: Any, what: str) -> tuple[Value, ...]:
    values = _list(value, what)
    if _TEXT_OR_NULL.issuperset(map(type, values)):  # most rows: one pass in C
        return tuple(values)
    return tuple(_value(v) for v in values)


def _change(value: Any) -> Change:
    c = _list(value, "a change")
    op = c[0] if c else None
    if op == "I" and len(c) == 3:
        return Change("I", _str(c[1], "table"), new=_row(c[2], "new row"))
    if op == "U" and len(c) == 4:
        old = None if c[3] is None else _row(c[3], "old row")
        return Change("U", _str(c[1], "table"), new=_row(c[2], "new row"), old=old)
    if op == "D" and len(c) == 3:
        return Change("D", _str(c[1], "table"), old=_row(c[2], "old row"))
    if op == "T" and len(c) == 2:
        tables = tuple(_str(t, "table") for t in _list(c[1], "truncated tables"))
        return Change("T", ",".join(tables), tables=tables)
    raise TrailFormatError("a change is not one of I, U, D, T")


def _tx(value: Any) -> Tx:
    d = _obj(value, "a transaction", {"xid", "lsn", "end", "time", "changes"})
    return Tx(
        _int(d["xid"], "xid"),
        _lsn(d["lsn"], "commit lsn"),
        _lsn(d["end"], "end lsn"),
        _str(d["time"], "commit time"),
        tuple(_change(c) for c in _list(d["changes"], "changes")),
    )


_KEYS: Final = {
    "init": {"systemIdentifier", "timeline", "database", "slot", "publication", "lsn", "time", "tables", "reason"},
    "baseline": {"lsn", "table", "seq", "rows"},
    "baseline-end": {"lsn", "counts", "entries"},
    "txs": {"from", "to", "count", "txs"},
    "part": {"from", "lsn", "end", "count", "part", "of", "sha256", "text"},
    "gap": {"from", "to", "count", "reason"},
    "stop": {"lsn", "table", "reason"},
}


def decode(contents: str) -> TrailEntry:
    """Parse and check one entry's contents; raise :class:`TrailFormatError` on anything else."""
    try:
        obj = orjson.loads(contents)
    except orjson.JSONDecodeError:
        raise TrailFormatError("an entry of the trail's collection is not JSON") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise TrailFormatError(f"an entry of the trail's collection is not a {FORMAT} entry")
    kind = obj.get("kind")
    if kind not in _KEYS:
        raise TrailFormatError(f"unknown trail entry kind {str(kind)[:40]!r}")
    d = _obj(obj, f"a {kind} entry", _KEYS[kind] | {"format", "kind", "epoch"})
    epoch = _int(d["epoch"], "epoch")
    if kind == "init":
        tables = tuple(TableShape.from_json(t) for t in _list(d["tables"], "tables"))
        if not tables or len({t.name for t in tables}) != len(tables):
            raise TrailFormatError("an init entry's tables are empty or repeated")
        return Init(
            epoch,
            _str(d["systemIdentifier"], "systemIdentifier"),
            _int(d["timeline"], "timeline"),
            _str(d["database"], "database"),
            _str(d["slot"], "slot"),
            _str(d["publication"], "publication"),
            _lsn(d["lsn"], "lsn"),
            _str(d["time"], "time"),
            tables,
            _str(d["reason"], "reason"),
        )
    if kind == "baseline":
        rows = tuple(_row(r, "baseline row") for r in _list(d["rows"], "rows"))
        return Baseline(epoch, _lsn(d["lsn"], "lsn"), _str(d["table"], "table"), _int(d["seq"], "seq"), rows)
    if kind == "baseline-end":
        counts = d["counts"]
        if not isinstance(counts, dict):
            raise TrailFormatError("baseline counts are not an object")
        checked = {_str(k, "table"): _int(v, "row count") for k, v in counts.items()}
        return BaselineEnd(epoch, _lsn(d["lsn"], "lsn"), checked, _int(d["entries"], "entries"))
    if kind == "txs":
        txs = tuple(_tx(t) for t in _list(d["txs"], "txs"))
        start, end = _lsn(d["from"], "from"), _lsn(d["to"], "to")
        if end < start or any(not start <= t.lsn < t.end <= end for t in txs):
            raise TrailFormatError("a txs entry's transactions lie outside its range")
        if any(a.end > b.lsn for a, b in itertools.pairwise(txs)):
            raise TrailFormatError("a txs entry's transactions are not in commit order")
        return Txs(epoch, start, end, _int(d["count"], "count"), txs)
    if kind == "part":
        part, of = _int(d["part"], "part"), _int(d["of"], "of")
        if not 1 <= part <= of:
            raise TrailFormatError("a part number is not within 1..of")
        sha = _str(d["sha256"], "sha256")
        if len(sha) != 64 or any(ch not in "0123456789abcdef" for ch in sha):
            raise TrailFormatError("a part's sha256 is not a hex digest")
        return Part(
            epoch,
            _lsn(d["from"], "from"),
            _lsn(d["lsn"], "lsn"),
            _lsn(d["end"], "end"),
            _int(d["count"], "count"),
            part,
            of,
            sha,
            _str(d["text"], "text"),
        )
    if kind == "gap":
        start, end = _lsn(d["from"], "from"), _lsn(d["to"], "to")
        return Gap(epoch, start, end, _int(d["count"], "count"), _str(d["reason"], "reason"))
    return Stop(epoch, _lsn(d["lsn"], "lsn"), _str(d["table"], "table"), _str(d["reason"], "reason"))
