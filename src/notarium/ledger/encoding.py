"""Writing CCF ledger entries and chunk files: the engine's side of :mod:`notarium.verify.entry`.

The byte layouts are those of :mod:`notarium.verify.entry` (its structs are packed here), so the
format is written down once, in the verification core; what is here is trusted by nobody who
verifies: a reader checks every entry with :func:`notarium.verify.entry.parse_entry`.
"""

from __future__ import annotations

import struct

from notarium.verify.entry import (
    ENTRY_VERSION,
    FIXED,
    GCM_IV_SIZE,
    GCM_TAG_SIZE,
    IV,
    PUBLIC_HEADER_4,
    SNAPSHOT_IV_BIT,
    TYPE_WRITE_SET_WITH_COMMIT_EVIDENCE_AND_CLAIMS,
    U64,
    Tables,
)


def gcm_iv(seqno: int, view: int, *, snapshot: bool = False) -> bytes:
    """The deterministic IV: seqno (LE 8) ‖ view (LE 4, low 31 bits; top bit = snapshot)."""
    if not 0 <= view <= 0x7FFFFFFF:
        raise ValueError("view must fit in 31 bits")
    return IV.pack(seqno, view | (SNAPSHOT_IV_BIT if snapshot else 0))


def encode_public_header(seqno: int, claims_digest: bytes, commit_evidence_digest: bytes) -> bytes:
    """Public-domain header of a type-4 entry (the only type notarium writes)."""
    return PUBLIC_HEADER_4.pack(
        TYPE_WRITE_SET_WITH_COMMIT_EVIDENCE_AND_CLAIMS,
        seqno,
        claims_digest,
        commit_evidence_digest,
        0,
    )


def encode_tables(tables: Tables) -> bytes:
    """Serialise map records in a deterministic order (tables and keys sorted)."""
    out: list[bytes] = []
    pack = U64.pack
    for name in sorted(tables):
        writes = tables[name]
        raw_name = name.encode()
        puts = sorted((k, v) for k, v in writes.items() if v is not None)
        removes = sorted(k for k, v in writes.items() if v is None)
        out.append(pack(len(raw_name)) + raw_name + pack(0) + pack(0) + pack(len(puts)))
        for k, v in puts:
            out.append(pack(len(k)) + k + pack(len(v)) + v)
        out.append(pack(len(removes)))
        for k in removes:
            out.append(pack(len(k)) + k)
    return b"".join(out)


def encode_single_write(table: str, key: bytes, value: bytes) -> bytes:
    """Fast path of :func:`encode_tables` for one table with one write (the common entry)."""
    name = table.encode()
    return b"".join(
        (
            U64.pack(len(name)),
            name,
            bytes(16),
            U64.pack(1),
            U64.pack(len(key)),
            key,
            U64.pack(len(value)),
            value,
            bytes(8),
        )
    )


def assemble_entry(tag: bytes, iv: bytes, public_domain: bytes, ciphertext: bytes, flags: int = 0) -> bytes:
    """Frame an entry: header ‖ tag ‖ IV ‖ public size ‖ public domain ‖ ciphertext."""
    size = GCM_TAG_SIZE + GCM_IV_SIZE + 8 + len(public_domain) + len(ciphertext)
    header = ENTRY_VERSION | (flags << 8) | (size << 16)
    return FIXED.pack(header, tag, iv, len(public_domain)) + public_domain + ciphertext


def chunk_positions_table(offsets: list[int]) -> bytes:
    return struct.pack(f"<{len(offsets)}I", *offsets)
