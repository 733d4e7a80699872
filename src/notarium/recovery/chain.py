"""Ledger secrets in force from a seqno on, and the chain that links each to its successor.

A ledger secret (32 bytes, AES-256-GCM key) is in force from its *start* seqno until the next
secret's start: an entry is sealed with the secret that has the highest start ≤ its seqno
(ccf-ledger-format.md §3.1). The first secret starts at 1. A rekey at seqno R starts a new secret
at R + 1 and records, in R itself, the previous secret encrypted under the new one
(:class:`ChainRecord`, table ``public:ccf.internal.historical_encrypted_ledger_secret``), so that
the newest secret unlocks all history.
"""

from __future__ import annotations

import base64
import bisect
import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SECRET_SIZE = 32
CHAIN_FORMAT = "notarium-ledger-secret-chain/1"
SEALED_FORMAT = "notarium-sealed-ledger-secrets/1"
_CHAIN_KEY_INFO = b"notarium/ledger-secret-chain-key/1"
_CHAIN_AAD = b"notarium/ledger-secret-chain/1"


class LedgerSecrets:
    """An immutable, ordered set of ``(start seqno, secret)``; the first starts at 1."""

    __slots__ = ("_secrets", "_starts")

    def __init__(self, secrets: list[tuple[int, bytes]]) -> None:
        if not secrets or secrets[0][0] != 1:
            raise ValueError("the first ledger secret must start at seqno 1")
        starts = [s for s, _ in secrets]
        if any(b <= a for a, b in itertools.pairwise(starts)):
            raise ValueError("ledger secret starts must increase")
        if any(len(k) != SECRET_SIZE for _, k in secrets):
            raise ValueError(f"a ledger secret is {SECRET_SIZE} bytes")
        self._starts = starts
        self._secrets = [bytes(k) for _, k in secrets]

    @classmethod
    def single(cls, secret: bytes) -> LedgerSecrets:
        return cls([(1, secret)])

    def __repr__(self) -> str:  # never show a secret
        return f"LedgerSecrets(starts={self._starts})"

    def __len__(self) -> int:
        return len(self._starts)

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        return iter(zip(self._starts, self._secrets, strict=True))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LedgerSecrets) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    @property
    def starts(self) -> list[int]:
        return list(self._starts)

    @property
    def latest(self) -> tuple[int, bytes]:
        return self._starts[-1], self._secrets[-1]

    def index_for(self, seqno: int) -> int:
        """Position of the secret in force at ``seqno``."""
        if seqno < 1:
            raise ValueError("seqnos start at 1")
        return bisect.bisect_right(self._starts, seqno) - 1

    def for_seqno(self, seqno: int) -> bytes:
        """The secret in force at ``seqno``."""
        return self._secrets[self.index_for(seqno)]

    def with_new(self, start: int, secret: bytes) -> LedgerSecrets:
        return LedgerSecrets([*self, (start, secret)])

    def up_to(self, last_start: int) -> LedgerSecrets:
        """Only the secrets starting at or before ``last_start``."""
        return LedgerSecrets([(s, k) for s, k in self if s <= last_start])

    # --- the virtual platform's sealed form ---

    def seal_bytes(self) -> bytes:
        """Serialised for local sealing. One secret from seqno 1 is its 32 raw bytes (the form
        notarium has always written); more are a JSON document."""
        if len(self) == 1:
            return self._secrets[0]
        doc = {
            "format": SEALED_FORMAT,
            "secrets": [{"start_seqno": s, "secret": base64.b64encode(k).decode()} for s, k in self],
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_sealed(cls, data: bytes) -> LedgerSecrets:
        """Parse :meth:`seal_bytes`; ``ValueError`` (naming no secret) if malformed."""
        if len(data) == SECRET_SIZE:
            return cls.single(data)
        try:
            doc = json.loads(data)
            if doc.get("format") != SEALED_FORMAT:
                raise ValueError("unknown format")
            pairs = [
                (int(item["start_seqno"]), base64.b64decode(item["secret"], validate=True)) for item in doc["secrets"]
            ]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ValueError("the sealed ledger secrets are malformed") from None
        return cls(pairs)


def _chain_key(successor: bytes) -> AESGCM:
    return AESGCM(HKDF(hashes.SHA256(), 32, salt=None, info=_CHAIN_KEY_INFO).derive(successor))


def _chain_aad(start: int, successor_start: int) -> bytes:
    return _CHAIN_AAD + start.to_bytes(8, "big") + successor_start.to_bytes(8, "big")


@dataclass(frozen=True, slots=True)
class ChainRecord:
    """A previous ledger secret (from ``start_seqno``) encrypted under its successor (from
    ``successor_start_seqno``): AES-256-GCM, key = HKDF-SHA256(successor, info =
    ``notarium/ledger-secret-chain-key/1``), random 12-byte IV, AAD binding both starts."""

    start_seqno: int
    successor_start_seqno: int
    iv: bytes
    ciphertext: bytes

    @property
    def previous_secret_stored_version(self) -> int | None:
        """Seqno of the transaction holding the record that chains ``start_seqno``'s predecessor."""
        return self.start_seqno - 1 if self.start_seqno > 1 else None

    @classmethod
    def seal(cls, previous: tuple[int, bytes], successor: tuple[int, bytes], iv: bytes) -> ChainRecord:
        (start, secret), (succ_start, succ) = previous, successor
        if succ_start <= start:
            raise ValueError("a successor secret starts after the secret it chains")
        ct = _chain_key(succ).encrypt(iv, secret, _chain_aad(start, succ_start))
        return cls(start, succ_start, iv, ct)

    def open(self, successor: bytes) -> bytes:
        """The previous secret; ``ValueError`` if ``successor`` does not decrypt this record."""
        try:
            return _chain_key(successor).decrypt(
                self.iv, self.ciphertext, _chain_aad(self.start_seqno, self.successor_start_seqno)
            )
        except InvalidTag:
            raise ValueError(
                f"the ledger secret chain record for the secret from seqno {self.start_seqno} "
                "does not decrypt under its successor"
            ) from None

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "format": CHAIN_FORMAT,
                "start_seqno": self.start_seqno,
                "successor_start_seqno": self.successor_start_seqno,
                "previous_secret_stored_version": self.previous_secret_stored_version,
                "iv": base64.b64encode(self.iv).decode(),
                "ciphertext": base64.b64encode(self.ciphertext).decode(),
            },
            separators=(",", ":"),
            sort_keys=True,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> ChainRecord:
        try:
            doc: Any = json.loads(data)
            if doc["format"] != CHAIN_FORMAT:
                raise ValueError("unknown format")
            return cls(
                int(doc["start_seqno"]),
                int(doc["successor_start_seqno"]),
                base64.b64decode(doc["iv"], validate=True),
                base64.b64decode(doc["ciphertext"], validate=True),
            )
        except (ValueError, KeyError, TypeError):
            raise ValueError("malformed ledger secret chain record") from None


def unchain(latest: tuple[int, bytes], chain_at: Callable[[int], ChainRecord]) -> LedgerSecrets:
    """Every ledger secret, from the newest back: ``chain_at(seqno)`` returns the chain record
    written at ``seqno`` (the transaction before the successor's start)."""
    found = [latest]
    start, secret = latest
    while start > 1:
        record = chain_at(start - 1)
        if record.successor_start_seqno != start or record.start_seqno >= start:
            raise ValueError(f"the ledger secret chain record at seqno {start - 1} does not link to seqno {start}")
        secret = record.open(secret)
        start = record.start_seqno
        found.append((start, secret))
    return LedgerSecrets(found[::-1])
