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

from notarium.errors import ServiceError
from notarium.ledger.layout import Layout
from notarium.recovery.chain import ChainRecord, LedgerSecrets
from notarium.recovery.records import scan_recovery_records
from notarium.recovery.sealing import SealedSecretsMissingError, Sealer, VirtualFileSealer, seal_secrets
from notarium.recovery.shares import RecoverySharesRecord, ShareCollector

log = logging.getLogger("notarium.recovery")


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
