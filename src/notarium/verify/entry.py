"""CCF ledger entries and chunk files, byte for byte (ccf-ledger-format.md §1.2, §2, §3.2).

The layouts are written down once, here (the structs below); this module reads them:
:func:`parse_entry`, :func:`decode_tables`, :func:`read_positions`. The engine's writer,
:mod:`notarium.ledger.encoding`, packs the same structs. Parsing takes untrusted bytes and raises
:class:`VerificationError` on anything malformed.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from notarium.errors import VerificationError

ENTRY_VERSION = 1
FLAG_FORCE_CHUNK_AFTER = 0x01
FLAG_FORCE_CHUNK_BEFORE = 0x02

TYPE_WRITE_SET = 0
TYPE_SNAPSHOT = 1
TYPE_WRITE_SET_WITH_CLAIMS = 2
TYPE_WRITE_SET_WITH_COMMIT_EVIDENCE = 3
TYPE_WRITE_SET_WITH_COMMIT_EVIDENCE_AND_CLAIMS = 4

GCM_TAG_SIZE = 16
GCM_IV_SIZE = 12
ENTRY_HEADER_SIZE = 8
# header ‖ tag ‖ iv ‖ public_domain_size
FIXED = struct.Struct("<Q16s12sQ")
FIXED_SIZE = FIXED.size  # 44
PUBLIC_HEADER_4 = struct.Struct("<BQ32s32sQ")  # type 4: type, seqno, claims, ced, max_conflict_version
_PUB3 = struct.Struct("<BQ32sQ")  # type 3: type, seqno, ced, max_conflict_version
_PUB0 = struct.Struct("<BQQ")  # type 0: type, seqno, max_conflict_version
U64 = struct.Struct("<Q")
IV = struct.Struct("<QI")
MAX_ENTRY_SIZE = (1 << 48) - 1
SNAPSHOT_IV_BIT = 0x80000000

CHUNK_HEADER_SIZE = 8

Tables = Mapping[str, Mapping[bytes, bytes | None]]
"""Write set: table name → key → value (``None`` removes the key)."""


@dataclass(frozen=True, slots=True)
class EntryView:
    """One parsed entry. Offsets are relative to the buffer given to :func:`parse_entry`."""

    start: int
    end: int
    flags: int
    tag: bytes
    view: int
    iv_seqno: int
    snapshot: bool
    entry_type: int
    seqno: int
    claims_digest: bytes
    commit_evidence_digest: bytes | None
    max_conflict_version: int
    tables_start: int
    public_end: int

    @property
    def has_private(self) -> bool:
        return self.end > self.public_end


def parse_entry(buf: bytes | memoryview, offset: int, limit: int | None = None) -> EntryView:
    """Parse the entry at ``offset``; it must end at or before ``limit`` (default: buffer end)."""
    limit = len(buf) if limit is None else limit
    if limit - offset < FIXED_SIZE:
        raise VerificationError(f"truncated entry header at offset {offset}")
    header, tag, iv, pub_size = FIXED.unpack_from(buf, offset)
    version = header & 0xFF
    flags = (header >> 8) & 0xFF
    size = header >> 16
    if version != ENTRY_VERSION:
        raise VerificationError(f"unknown entry format version {version} at offset {offset}")
    end = offset + ENTRY_HEADER_SIZE + size
    if size < FIXED_SIZE - ENTRY_HEADER_SIZE or end > limit:
        raise VerificationError(f"entry at offset {offset} claims {size} bytes, beyond the end of its chunk")
    pub_start = offset + FIXED_SIZE
    public_end = pub_start + pub_size
    if public_end > end:
        raise VerificationError(f"public domain of the entry at offset {offset} overruns the entry")
    iv_seqno, iv_view = IV.unpack(iv)
    etype = buf[pub_start] if pub_size else -1
    claims = bytes(32)
    ced: bytes | None
    if etype == TYPE_WRITE_SET_WITH_COMMIT_EVIDENCE_AND_CLAIMS and pub_size >= PUBLIC_HEADER_4.size:
        _t, seqno, claims, ced, mcv = PUBLIC_HEADER_4.unpack_from(buf, pub_start)
        tables_start = pub_start + PUBLIC_HEADER_4.size
    elif etype == TYPE_WRITE_SET_WITH_COMMIT_EVIDENCE and pub_size >= _PUB3.size:
        _t, seqno, ced, mcv = _PUB3.unpack_from(buf, pub_start)
        tables_start = pub_start + _PUB3.size
    elif etype == TYPE_WRITE_SET and pub_size >= _PUB0.size:
        _t, seqno, mcv = _PUB0.unpack_from(buf, pub_start)
        ced = None
        tables_start = pub_start + _PUB0.size
    else:
        raise VerificationError(f"unsupported or truncated public domain (entry type {etype}) at offset {offset}")
    return EntryView(
        start=offset,
        end=end,
        flags=flags,
        tag=tag,
        view=iv_view & 0x7FFFFFFF,
        iv_seqno=iv_seqno,
        snapshot=bool(iv_view & SNAPSHOT_IV_BIT),
        entry_type=etype,
        seqno=seqno,
        claims_digest=claims,
        commit_evidence_digest=ced,
        max_conflict_version=mcv,
        tables_start=tables_start,
        public_end=public_end,
    )


def decode_tables(buf: bytes | memoryview, start: int, end: int) -> dict[str, dict[bytes, bytes | None]]:
    """Decode map records in ``buf[start:end]`` (a public or decrypted private domain)."""
    tables: dict[str, dict[bytes, bytes | None]] = {}
    off = start
    unpack = U64.unpack_from

    def take(n: int) -> bytes:
        nonlocal off
        if n > end - off:
            raise VerificationError("map record overruns its domain")
        data = bytes(buf[off : off + n])
        off += n
        return data

    def u64() -> int:
        nonlocal off
        if end - off < 8:
            raise VerificationError("map record overruns its domain")
        (v,) = unpack(buf, off)
        off += 8
        return int(v)

    while off < end:
        try:
            name = take(u64()).decode()
        except UnicodeDecodeError as exc:
            raise VerificationError("table name is not UTF-8") from exc
        if name in tables:
            raise VerificationError(f"table {name!r} appears twice in one domain")
        u64()  # read_version: unused by readers
        if u64() != 0:
            raise VerificationError(f"table {name!r} stores reads (read_count must be 0)")
        writes: dict[bytes, bytes | None] = {}
        for _ in range(u64()):
            key = take(u64())
            writes[key] = take(u64())
        for _ in range(u64()):
            writes[take(u64())] = None
        tables[name] = writes
    return tables


# --- chunk files ---

_CHUNK_NAME = re.compile(r"^ledger_([1-9][0-9]*)(?:-([1-9][0-9]*))?(\.committed)?$")


@dataclass(frozen=True, slots=True)
class ChunkName:
    start: int
    end: int | None
    committed: bool

    @classmethod
    def parse(cls, name: str) -> ChunkName | None:
        """Parse a chunk file name; ``None`` for names that are not ledger chunks."""
        m = _CHUNK_NAME.match(name)
        if m is None:
            return None
        end = int(m.group(2)) if m.group(2) else None
        if m.group(3) and end is None:
            return None
        return cls(int(m.group(1)), end, bool(m.group(3)))

    def __str__(self) -> str:
        base = f"ledger_{self.start}" if self.end is None else f"ledger_{self.start}-{self.end}"
        return base + (".committed" if self.committed else "")


def read_positions(buf: bytes | memoryview) -> tuple[int, list[int] | None]:
    """Return ``(entries_end, positions)`` of a chunk; positions is ``None`` while in progress."""
    if len(buf) < CHUNK_HEADER_SIZE:
        raise VerificationError("chunk file shorter than its 8-byte header")
    (pos_off,) = U64.unpack_from(buf, 0)
    if pos_off == 0:
        return len(buf), None
    if pos_off < CHUNK_HEADER_SIZE or pos_off > len(buf) or (len(buf) - pos_off) % 4:
        raise VerificationError("chunk positions table offset is out of range")
    n = (len(buf) - pos_off) // 4
    return pos_off, list(struct.unpack_from(f"<{n}I", buf, pos_off))
