"""Finding the recovery records in a ledger's chunk files, without any secret.

The newest committed recovery shares record (``public:ccf.internal.recovery_shares``) and every
ledger secret chain record (``public:ccf.internal.historical_encrypted_ledger_secret``): what a
disaster recovery starts from (:class:`notarium.ledger.restore.DirectoryRecovery`) and what an
audit with recovered secrets needs. Only records at or before the last signature transaction in
the files count (an unsigned tail would be dropped when the ledger opens).
"""

from __future__ import annotations

import logging
from pathlib import Path

from notarium.errors import VerificationError
from notarium.recovery.chain import ChainRecord
from notarium.recovery.shares import RecoverySharesRecord
from notarium.verify import tables
from notarium.verify.entry import CHUNK_HEADER_SIZE, ChunkName, decode_tables, parse_entry, read_positions

log = logging.getLogger("notarium.recovery")

_SIGNATURE_NAME = tables.SIGNATURES.encode()
_SHARES_NAME = tables.RECOVERY_SHARES.encode()
_CHAIN_NAME = tables.HISTORICAL_LEDGER_SECRET.encode()


def _offsets(buf: bytes, needle: bytes, end: int) -> list[int]:
    found, at = [], buf.find(needle, CHUNK_HEADER_SIZE, end)
    while at >= 0:
        found.append(at)
        at = buf.find(needle, at + 1, end)
    return found


def scan_recovery_records(ledger_dir: Path) -> tuple[RecoverySharesRecord | None, dict[int, ChainRecord]]:
    """The newest recovery shares record and every chain record (by seqno), at or before the last
    signature transaction of the chunk files in ``ledger_dir``. Reads public data only."""
    chunks = sorted((name.start, p) for p in ledger_dir.iterdir() if (name := ChunkName.parse(p.name)) is not None)
    shares: list[tuple[int, bytes]] = []
    chain: list[tuple[int, bytes]] = []
    last_signature = 0
    for _start, path in chunks:
        buf = path.read_bytes()
        try:
            entries_end, _positions = read_positions(buf)
        except VerificationError:
            entries_end = len(buf)
        hits = sorted(
            {at for name in (_SIGNATURE_NAME, _SHARES_NAME, _CHAIN_NAME) for at in _offsets(buf, name, entries_end)}
        )
        if not hits:
            continue
        off, i = CHUNK_HEADER_SIZE, 0
        while off < entries_end and i < len(hits):
            try:
                e = parse_entry(buf, off, entries_end)
            except VerificationError:
                break  # a torn tail: nothing after it is signed
            if hits[i] < e.public_end:
                while i < len(hits) and hits[i] < e.end:
                    i += 1
                public = decode_tables(buf, e.tables_start, e.public_end)
                if tables.SIGNATURES in public:
                    last_signature = e.seqno
                for table, into in ((tables.RECOVERY_SHARES, shares), (tables.HISTORICAL_LEDGER_SECRET, chain)):
                    value = public.get(table, {}).get(tables.SINGLETON_KEY)
                    if value is not None:
                        into.append((e.seqno, value))
            off = e.end
    signed_shares = [value for seqno, value in shares if seqno <= last_signature]
    record = RecoverySharesRecord.from_json(signed_shares[-1]) if signed_shares else None
    return record, {seqno: ChainRecord.from_json(value) for seqno, value in chain if seqno <= last_signature}
