"""One transaction's bytes, as the engine writes and reads them (no engine state here).

Sealing (:func:`seal_entry`) serialises a write set in CCF's format (ccf-ledger-format.md §3),
the private domain encrypted with AES-256-GCM under the ledger secret in force, and returns the
entry with its Merkle leaf; :func:`decrypt_private` and :func:`ledger_entry` read it back. The
format itself is parsed and checked by :mod:`notarium.verify.entry`.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _encode_json_string
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from notarium.errors import ServiceError
from notarium.ledger.encoding import assemble_entry, encode_public_header, gcm_iv
from notarium.ledger.fastcrypto import HmacKey
from notarium.ledger.indexkeys import IndexKeys
from notarium.types import TxId
from notarium.verify import tables
from notarium.verify.entry import (
    ENTRY_HEADER_SIZE,
    FIXED_SIZE,
    GCM_IV_SIZE,
    GCM_TAG_SIZE,
    EntryView,
    Tables,
    decode_tables,
)
from notarium.verify.secrets import commit_secret

DEFAULT_COLLECTION = "subledger:0"
# public internal tables whose latest values the index keeps too (besides tables.STATE_PREFIXES)
_INDEXED_INTERNAL = frozenset({tables.RECOVERY_SHARES, tables.HISTORICAL_LEDGER_SECRET})

StateWrites = list[tuple[str, bytes, bytes | None]]
"""Writes to public state tables: table, key, value (``None``: removed)."""


class SecretKeys:
    """What the engine derives from one ledger secret."""

    __slots__ = ("aead", "ce_mac", "commit_secret", "index")

    def __init__(self, secret: bytes) -> None:
        self.aead = AESGCM(secret)
        self.commit_secret = commit_secret(secret)
        self.ce_mac = HmacKey(self.commit_secret)
        self.index = IndexKeys(secret)  # tokens and sealed names of the lookup index


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    txid: TxId
    collection_id: str
    contents: str
    tags: str | None
    claims_secret: bytes

    def application_claims(self) -> list[dict[str, Any]]:
        """The ACL ``LedgerEntry`` application claim that the receipt's claims digest commits to."""
        return [
            {
                "kind": "LedgerEntry",
                "ledgerEntry": {
                    "collectionId": self.collection_id,
                    "contents": self.contents,
                    "protocol": "LedgerEntryV1",
                    "secretKey": base64.b64encode(self.claims_secret).decode(),
                },
            }
        ]


def seal_entry(
    key: SecretKeys, seqno: int, view: int, public: bytes, private: bytes, claims: bytes
) -> tuple[bytes, bytes]:
    """Serialise one entry in CCF's format (private domain encrypted); return it and its leaf."""
    ce = b"ce:%d.%d:%s" % (view, seqno, key.ce_mac.digest(b"%d.%d" % (view, seqno)).hex().encode())
    ced = hashlib.sha256(ce).digest()
    public_domain = encode_public_header(seqno, claims, ced) + public
    iv = gcm_iv(seqno, view)
    sealed = key.aead.encrypt(iv, private, public_domain)
    entry = assemble_entry(sealed[-GCM_TAG_SIZE:], iv, public_domain, sealed[:-GCM_TAG_SIZE])
    return entry, hashlib.sha256(hashlib.sha256(entry).digest() + ced + claims).digest()


def leaf_of(raw: bytes | memoryview, e: EntryView) -> bytes:
    """The Merkle leaf of the entry ``raw`` holds (exactly that entry)."""
    ced = e.commit_evidence_digest or bytes(32)
    return hashlib.sha256(hashlib.sha256(raw).digest() + ced + e.claims_digest).digest()


def decrypt_private(key: SecretKeys, raw: bytes | memoryview, e: EntryView) -> dict[str, dict[bytes, bytes | None]]:
    """Decrypt the private domain of one entry (``raw`` holds exactly that entry)."""
    public_domain = bytes(raw[FIXED_SIZE : e.public_end - e.start])
    ciphertext = bytes(raw[e.public_end - e.start :])
    iv = bytes(raw[ENTRY_HEADER_SIZE + GCM_TAG_SIZE : ENTRY_HEADER_SIZE + GCM_TAG_SIZE + GCM_IV_SIZE])
    try:
        plain = key.aead.decrypt(iv, ciphertext + e.tag, public_domain)
    except InvalidTag:
        raise ServiceError(f"entry {e.view}.{e.seqno} does not decrypt under the ledger secret") from None
    return decode_tables(plain, 0, len(plain))


def entry_value(contents: str, secret: bytes, tags: str | None) -> bytes:
    """The value an application entry writes under its collection id (ACL's ``LedgerEntryV1``)."""
    return b'{"contents":%s,"secretKey":"%s"%s}' % (
        _json_str(contents),
        base64.b64encode(secret),
        b"" if tags is None else b',"tags":' + _json_str(tags),
    )


def ledger_entry(txid: TxId, writes: Mapping[bytes, bytes | None]) -> LedgerEntry:
    """The application entry of ``txid`` from its one write to the entries table."""
    if len(writes) != 1:
        raise ServiceError(f"entry {txid} is not a single ledger entry")
    ((key, value),) = writes.items()
    record = json.loads(value or b"{}")
    return LedgerEntry(
        txid=txid,
        collection_id=key.decode(),
        contents=record["contents"],
        tags=record.get("tags"),
        claims_secret=base64.b64decode(record["secretKey"]),
    )


def entry_collection_and_tags(writes: Mapping[bytes, bytes | None] | None) -> tuple[str, list[str]] | None:
    """(collection id, tags) if ``writes`` (to an entries table) are those of one application entry."""
    if not writes or len(writes) != 1:
        return None
    ((key, value),) = writes.items()
    try:
        tags = json.loads(value or b"{}").get("tags")
    except (ValueError, AttributeError):
        tags = None
    return key.decode(), split_tags(tags if isinstance(tags, str) else None)


def check_write_set(public: Tables, private: Tables | None) -> None:
    """``ValueError`` unless public tables are named ``public:…`` and private ones are not."""
    for name in public:
        if not name.startswith("public:"):
            raise ValueError(f"public table names start with 'public:': {name!r}")
    for name in private or {}:
        if name.startswith("public:"):
            raise ValueError(f"private table names must not start with 'public:': {name!r}")


def split_tags(tags: str | None) -> list[str]:
    return [t for t in (tags or "").split(",") if t]


def state_writes(public: Mapping[str, Mapping[bytes, bytes | None]]) -> StateWrites:
    """Writes to the public state tables the index keeps (governance, notarium's own; not entries)."""
    return [
        (name, key, value)
        for name, writes in public.items()
        if (name.startswith(tables.STATE_PREFIXES) or name in _INDEXED_INTERNAL) and name != tables.ENTRIES_PUBLIC
        for key, value in writes.items()
    ]


def _json_str(text: str) -> bytes:
    return _encode_json_string(text).encode()
