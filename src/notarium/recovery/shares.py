"""Recovery shares: issuing them, checking a submitted one, and rebuilding the ledger secrets.

Issuing (docs/design/recovery.md; CCF's scheme of ccf-ledger-format.md §10.1, with commitments):

1. a fresh *wrapping secret* w, a uniform element of GF(p) (:mod:`.shamir`); the 32-byte wrapping
   key is HKDF-SHA256(ikm = w as 32 bytes big-endian, info = ``notarium/ledger-secret-wrapping-key/1``);
2. the newest ledger secret is wrapped with it: AES-256-GCM, all-zero IV (the key is used once),
   AAD = ``notarium/wrapped-ledger-secret/1`` ‖ start seqno (8 bytes big-endian);
3. w is split k of n; member i gets share i (:class:`.shamir.Share`, 35 bytes), encrypted to the
   member's RSA key with OAEP(SHA-256, MGF1-SHA-256);
4. a *commitment* per share, SHA-256(``notarium/recovery-share-commitment/1`` ‖ 0x00 ‖ issuance
   nonce (16 bytes) ‖ member id ‖ 0x00 ‖ share), is published with it, so a submitted share is
   checked on its own, at once. The share carries ≈ 256 bits of entropy, so the commitment hides it.

Everything goes into one public record (:class:`RecoverySharesRecord`, table
``public:ccf.internal.recovery_shares``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from notarium.recovery import shamir
from notarium.recovery.chain import SECRET_SIZE, ChainRecord, LedgerSecrets, unchain

SHARES_FORMAT = "notarium-recovery-shares/1"
MIN_RSA_BITS = 2048
_WRAP_INFO = b"notarium/ledger-secret-wrapping-key/1"
_WRAP_AAD = b"notarium/wrapped-ledger-secret/1"
_COMMIT_LABEL = b"notarium/recovery-share-commitment/1\x00"
_OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def wrapping_key(wrapping_secret: int) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=None, info=_WRAP_INFO).derive(wrapping_secret.to_bytes(32, "big"))


def _wrap_aad(start: int) -> bytes:
    return _WRAP_AAD + start.to_bytes(8, "big")


def share_commitment(issuance: bytes, member_id: str, share: bytes) -> bytes:
    return hashlib.sha256(_COMMIT_LABEL + issuance + member_id.encode() + b"\x00" + share).digest()


def load_rsa_public_key(pem: str | bytes, member_id: str) -> rsa.RSAPublicKey:
    """A member's encryption key; ``ValueError`` unless it is an RSA key of at least 2048 bits."""
    try:
        key = serialization.load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
    except (ValueError, TypeError):
        raise ValueError(f"member {member_id[:16]}: the encryption key is not a PEM public key") from None
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size < MIN_RSA_BITS:
        raise ValueError(f"member {member_id[:16]}: the encryption key must be RSA of at least {MIN_RSA_BITS} bits")
    return key


def decrypt_share(encrypted_share: bytes, member_key: rsa.RSAPrivateKey) -> bytes:
    """What a member does with its encrypted share (locally, or in an HSM)."""
    try:
        return member_key.decrypt(encrypted_share, _OAEP)
    except ValueError:
        raise ValueError("the encrypted recovery share does not decrypt with this key") from None


@dataclass(frozen=True, slots=True)
class MemberShare:
    encryption_public_key: str  # PEM: the key the share was encrypted to
    encrypted_share: bytes  # RSA-OAEP(SHA-256) of the 35-byte share
    commitment: bytes  # share_commitment(issuance, member id, share)


@dataclass(frozen=True, slots=True)
class RecoverySharesRecord:
    """The public record of one issuance (``public:ccf.internal.recovery_shares``, singleton)."""

    issuance: bytes  # 16 random bytes, unique per issuance
    threshold: int
    ledger_secret_start: int  # the start seqno of the wrapped (newest) secret
    wrapped_ledger_secret: bytes  # AES-GCM ciphertext ‖ tag
    members: dict[str, MemberShare] = field(default_factory=dict)

    @property
    def previous_secret_stored_version(self) -> int | None:
        """Seqno of the chain record that holds the previous secret (``None``: no previous one)."""
        return self.ledger_secret_start - 1 if self.ledger_secret_start > 1 else None

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "format": SHARES_FORMAT,
                "issuance": self.issuance.hex(),
                "threshold": self.threshold,
                "wrapped_latest_ledger_secret": {
                    "start_seqno": self.ledger_secret_start,
                    "encrypted_data": base64.b64encode(self.wrapped_ledger_secret).decode(),
                    "previous_secret_stored_version": self.previous_secret_stored_version,
                },
                "members": {
                    member_id: {
                        "encryption_public_key": m.encryption_public_key,
                        "encrypted_share": base64.b64encode(m.encrypted_share).decode(),
                        "commitment": m.commitment.hex(),
                    }
                    for member_id, m in sorted(self.members.items())
                },
            },
            separators=(",", ":"),
            sort_keys=True,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> RecoverySharesRecord:
        try:
            doc: Any = json.loads(data)
            if doc["format"] != SHARES_FORMAT:
                raise ValueError("unknown format")
            wrapped = doc["wrapped_latest_ledger_secret"]
            members = {
                str(member_id): MemberShare(
                    str(m["encryption_public_key"]),
                    base64.b64decode(m["encrypted_share"], validate=True),
                    bytes.fromhex(m["commitment"]),
                )
                for member_id, m in doc["members"].items()
            }
            record = cls(
                bytes.fromhex(doc["issuance"]),
                int(doc["threshold"]),
                int(wrapped["start_seqno"]),
                base64.b64decode(wrapped["encrypted_data"], validate=True),
                members,
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ValueError("malformed recovery shares record") from None
        if not 1 <= record.threshold <= len(record.members):
            raise ValueError("malformed recovery shares record: threshold out of range")
        return record

    def recovery_members(self) -> dict[str, str]:
        """Member id → encryption public key PEM, as given to :func:`issue_shares`."""
        return {member_id: m.encryption_public_key for member_id, m in self.members.items()}

    def check_share(self, member_id: str, share: bytes) -> shamir.Share:
        """The decoded share if it is the one issued to ``member_id``; ``ValueError`` otherwise."""
        member = self.members.get(member_id)
        if member is None:
            raise ValueError(f"member {member_id[:16]} holds no recovery share in the current issuance")
        if not hmac.compare_digest(share_commitment(self.issuance, member_id, share), member.commitment):
            raise ValueError(f"the recovery share submitted for member {member_id[:16]} is not the one issued to it")
        decoded = shamir.Share.from_bytes(share)
        if decoded.threshold != self.threshold:
            raise ValueError("the recovery share belongs to another issuance")
        return decoded

    def unwrap(self, shares: list[shamir.Share]) -> tuple[int, bytes]:
        """The newest ledger secret ``(start, secret)`` from checked shares."""
        key = wrapping_key(shamir.combine(shares))
        try:
            secret = AESGCM(key).decrypt(bytes(12), self.wrapped_ledger_secret, _wrap_aad(self.ledger_secret_start))
        except InvalidTag:
            raise ValueError("the recovery shares do not unwrap the ledger secret") from None
        return self.ledger_secret_start, secret


def check_recovery_members(members: Mapping[str, str | bytes], threshold: int) -> dict[str, rsa.RSAPublicKey]:
    """The members' RSA keys; ``ValueError`` unless ``threshold`` of ``members`` is a valid issuance."""
    if not members:
        raise ValueError("recovery shares need at least one recovery member")
    if len(members) > shamir.MAX_SHARES:
        raise ValueError(f"at most {shamir.MAX_SHARES} recovery members")
    if not 1 <= threshold <= len(members):
        raise ValueError(f"the recovery threshold must be between 1 and {len(members)}, got {threshold}")
    return {member_id: load_rsa_public_key(pem, member_id) for member_id, pem in members.items()}


def issue_shares(
    latest: tuple[int, bytes],
    members: Mapping[str, str | bytes],
    threshold: int,
    *,
    random_bytes: Callable[[int], bytes] = os.urandom,
) -> RecoverySharesRecord:
    """Wrap the newest ledger secret ``(start, secret)`` under a fresh key split ``threshold`` of
    ``len(members)`` shares, one per member (id → RSA public key PEM)."""
    start, secret = latest
    if len(secret) != SECRET_SIZE:
        raise ValueError(f"a ledger secret is {SECRET_SIZE} bytes")
    keys = check_recovery_members(members, threshold)
    wrapping_secret = shamir.random_secret()
    wrapped = AESGCM(wrapping_key(wrapping_secret)).encrypt(bytes(12), secret, _wrap_aad(start))
    issuance = random_bytes(16)
    split = shamir.split(wrapping_secret, threshold, len(members))
    issued: dict[str, MemberShare] = {}
    for (member_id, key), share in zip(sorted(keys.items()), split, strict=True):
        raw = share.to_bytes()
        pem = members[member_id]
        issued[member_id] = MemberShare(
            pem.decode() if isinstance(pem, bytes) else pem,
            key.encrypt(raw, _OAEP),
            share_commitment(issuance, member_id, raw),
        )
    return RecoverySharesRecord(issuance, threshold, start, wrapped, issued)


class ShareCollector:
    """Checks shares as members submit them; with enough, rebuilds every ledger secret."""

    def __init__(self, record: RecoverySharesRecord) -> None:
        self.record = record
        self._shares: dict[str, shamir.Share] = {}

    def __repr__(self) -> str:
        return f"ShareCollector(submitted={sorted(self._shares)}, threshold={self.record.threshold})"

    @property
    def threshold(self) -> int:
        return self.record.threshold

    @property
    def submitted(self) -> list[str]:
        return sorted(self._shares)

    @property
    def ready(self) -> bool:
        return len(self._shares) >= self.record.threshold

    def submit(self, member_id: str, share: bytes) -> int:
        """Check ``share`` at once (``ValueError`` if it is not the one issued to ``member_id``, or
        if that member already submitted); returns how many good shares are in."""
        if member_id in self._shares:
            raise ValueError(f"member {member_id[:16]} has already submitted its recovery share")
        self._shares[member_id] = self.record.check_share(member_id, share)
        return len(self._shares)

    def recover(self, chain_at: Callable[[int], ChainRecord]) -> LedgerSecrets:
        """All ledger secrets: unwrap the newest, then walk the chain back (``chain_at(seqno)``:
        the chain record written at ``seqno``)."""
        if not self.ready:
            raise ValueError(f"{len(self._shares)} recovery shares submitted, {self.record.threshold} needed")
        return unchain(self.record.unwrap(list(self._shares.values())), chain_at)
