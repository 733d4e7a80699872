"""Recovering the ledger secrets of a service directory from its members' recovery shares.

For a directory whose sealed secrets are gone (or a copy of its ledger moved elsewhere): the
public ledger is read without any secret to find the newest committed recovery shares record and
the ledger secret chain; members fetch their encrypted share (:meth:`DirectoryRecovery.encrypted_share`),
decrypt it locally and submit it (:meth:`DirectoryRecovery.submit_share`, checked at once); with
k good shares :meth:`DirectoryRecovery.restore` rebuilds every ledger secret and seals them
locally, after which the directory opens as usual.

Only records at or before the last signature transaction in the files count (an unsigned tail
would be dropped when the ledger opens). The records are not trusted for more than they can
prove: a forged shares record cannot match the members' shares, and each chain record is
authenticated by AES-GCM under its successor secret.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from notarium.errors import ServiceError, VerificationError
from notarium.ledger.layout import Layout
from notarium.recovery.chain import ChainRecord, LedgerSecrets
from notarium.recovery.sealing import SealedSecretsMissingError, Sealer, VirtualFileSealer, seal_secrets
from notarium.recovery.shares import RecoverySharesRecord, ShareCollector
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


class DirectoryRecovery:
    """Recovery of one service directory's ledger secrets (no HTTP: the server wraps this)."""

    def __init__(self, directory: str | os.PathLike[str], sealer: Sealer | None = None) -> None:
        self.layout = Layout(Path(directory).absolute())
        self.sealer = sealer or VirtualFileSealer(self.layout.sealed_ledger_secret)
        record, self._chain = scan_recovery_records(self.layout.ledger_dir)
        if record is None:
            raise ServiceError(f"{self.layout.root} records no recovery shares: its ledger secrets cannot be recovered")
        self._collector = ShareCollector(record)

    def __repr__(self) -> str:
        return f"DirectoryRecovery({str(self.layout.root)!r}, {self._collector!r})"

    @property
    def record(self) -> RecoverySharesRecord:
        return self._collector.record

    @property
    def threshold(self) -> int:
        return self._collector.threshold

    @property
    def members(self) -> list[str]:
        """The ids of the members holding a share."""
        return sorted(self.record.members)

    @property
    def submitted(self) -> list[str]:
        return self._collector.submitted

    @property
    def ready(self) -> bool:
        return self._collector.ready

    def encrypted_share(self, member_id: str) -> bytes:
        """The member's share, RSA-OAEP-encrypted to its key (``KeyError`` if it holds none)."""
        member = self.record.members.get(member_id)
        if member is None:
            raise KeyError(f"member {member_id[:16]} holds no recovery share")
        return member.encrypted_share

    def submit_share(self, member_id: str, share: bytes) -> int:
        """Check a decrypted share at once (``ValueError`` if wrong); returns the number of good shares."""
        count = self._collector.submit(member_id, share)
        log.info("recovery share of member %s accepted (%d of %d)", member_id[:16], count, self.threshold)
        return count

    def _chain_at(self, seqno: int) -> ChainRecord:
        record = self._chain.get(seqno)
        if record is None:
            raise ValueError(f"the ledger holds no ledger secret chain record at seqno {seqno}")
        return record

    def restore(self, *, overwrite: bool = False) -> LedgerSecrets:
        """Rebuild every ledger secret from the submitted shares and seal them locally.

        Refuses to replace secrets that are still sealed here unless ``overwrite``."""
        secrets = self._collector.recover(self._chain_at)
        if not overwrite:
            try:
                self.sealer.unseal()
            except SealedSecretsMissingError:
                pass
            else:
                raise ServiceError(f"{self.layout.root} still has sealed ledger secrets; not replacing them")
        seal_secrets(self.sealer, secrets)
        log.info("restored %d ledger secret(s) from recovery shares and sealed them", len(secrets))
        return secrets
