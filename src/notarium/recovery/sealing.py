"""Local sealing of the ledger secrets, for normal restarts.

A :class:`Sealer` keeps one opaque blob (the serialised :class:`~notarium.recovery.chain.LedgerSecrets`)
that only this node can read back. On a TEE the blob would be encrypted under a key derived from
the platform (e.g. an SNP derived key bound to chip and measurement); notarium runs on the
*virtual* platform (docs/design/trust-model.md), where "sealed" means a 0600 file in
``DIR/secrets/``, replaced atomically and durably: :class:`VirtualFileSealer`. A real TEE sealer
implements the same two methods.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from notarium.durable import replace
from notarium.errors import ServiceError
from notarium.recovery.chain import LedgerSecrets


class SealedSecretsMissingError(ServiceError):
    """Nothing is sealed here (the secrets are gone): recover from recovery shares."""


class Sealer(Protocol):
    def seal(self, data: bytes) -> None:
        """Durably replace the sealed blob with ``data``."""

    def unseal(self) -> bytes:
        """The sealed blob; :class:`SealedSecretsMissingError` if there is none."""


class VirtualFileSealer:
    """The virtual platform's sealing: a 0600 file (no hardware protection: see the trust model)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"VirtualFileSealer({str(self.path)!r})"

    def seal(self, data: bytes) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        replace(self.path, data, 0o600)

    def unseal(self) -> bytes:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            raise SealedSecretsMissingError(
                f"the ledger secrets are missing (no {self.path}): the ledger cannot be opened without them; "
                "they are recovered from the members' recovery shares"
            ) from None
        except OSError as exc:
            raise ServiceError(f"cannot unseal the ledger secret: {exc.strerror}") from None


def seal_secrets(sealer: Sealer, secrets: LedgerSecrets) -> None:
    sealer.seal(secrets.seal_bytes())


def unseal_secrets(sealer: Sealer) -> LedgerSecrets:
    try:
        return LedgerSecrets.from_sealed(sealer.unseal())
    except ValueError as exc:
        raise ServiceError(f"cannot unseal the ledger secrets: {exc}") from None
