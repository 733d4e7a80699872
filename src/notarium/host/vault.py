"""A hosted ledger's identity, sealed for the other processes of a host on PostgreSQL.

With ``notarium host DIR --store``, the process that creates a ledger makes its service directory
(``notarium init``'s files: service identity, ledger secret, node identity, consortium member)
and every other host process needs the same files to run a node of that ledger. They travel
through PostgreSQL, which is not trusted (docs/design/ha.md), so they are sealed: AES-256-GCM
under the host's **store key** (``DIR/store_key``, 32 random bytes, 0600), which every host
process of one host holds (the operator copies it with ``host_token`` and the TLS CA) and
PostgreSQL never sees. The additional data binds a bundle to its ledger's schema, so a bundle
copied to another ledger's row does not open.

Blob: ``0x01 ‖ nonce (12) ‖ AES-256-GCM(key, nonce, JSON {"format", "files": {path: base64}}, aad)``.
Only the identity files travel: never the ledger's chunks or index (a node fills those from the
log, verifying them), nor its lock and view files.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from notarium.durable import replace
from notarium.errors import ServiceError

VERSION = 1
FORMAT = "notarium-host-bundle/1"
KEY_BYTES = 32
_SKIPPED_DIRS = frozenset({"ledger", "index"})
_SKIPPED_FILES = frozenset({"node/LOCK", "node/view"})
MAX_BUNDLE_BYTES = 4 * 1024 * 1024


class VaultError(ServiceError):
    """A bundle that does not open with this host's store key (another host's, or altered)."""


def load_or_create_key(path: Path, *, create: bool) -> bytes:
    """The store key in ``path`` (hex); made when missing and ``create``."""
    if not path.exists():
        if not create:
            raise ServiceError(f"{path} is missing")
        replace(path, secrets.token_hex(KEY_BYTES).encode() + b"\n", 0o600)
    try:
        key = bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError) as exc:
        raise ServiceError(f"cannot read the store key {path}: {exc}") from None
    if len(key) != KEY_BYTES:
        raise ServiceError(f"{path} does not hold a {KEY_BYTES}-byte key")
    return key


def key_check(key: bytes) -> str:
    """A value that tells store keys apart without revealing them (recorded in the store)."""
    return hmac.new(key, b"notarium-host-store-key-check/1", hashlib.sha256).hexdigest()


def _aad(schema: str) -> bytes:
    return f"{FORMAT} schema={schema}".encode()


def pack(directory: Path, schema: str, key: bytes) -> bytes:
    """Seal the identity files of the service directory ``directory``."""
    files: dict[str, str] = {}
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        if not path.is_file() or rel.split("/", 1)[0] in _SKIPPED_DIRS or rel in _SKIPPED_FILES:
            continue
        files[rel] = base64.b64encode(path.read_bytes()).decode()
    plain = json.dumps({"format": FORMAT, "files": files}, sort_keys=True).encode()
    nonce = os.urandom(12)
    return bytes([VERSION]) + nonce + AESGCM(key).encrypt(nonce, plain, _aad(schema))


def unpack(blob: bytes, directory: Path, schema: str, key: bytes) -> None:
    """Write the files sealed in ``blob`` into ``directory`` (new), with ``ledger/`` and ``index/``
    empty: a node that fills its replica from the log."""
    if len(blob) < 29 or len(blob) > MAX_BUNDLE_BYTES or blob[0] != VERSION:
        raise VaultError(f"the identity bundle of {schema} is malformed")
    try:
        plain = AESGCM(key).decrypt(blob[1:13], blob[13:], _aad(schema))
    except InvalidTag:
        raise VaultError(
            f"the identity bundle of {schema} does not open with this host's store key: every host process of a "
            "host needs the same DIR/store_key (docs/operations/ha.md)"
        ) from None
    doc = json.loads(plain)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("files"), dict):
        raise VaultError(f"the identity bundle of {schema} is not a {FORMAT}")
    directory.mkdir(mode=0o700, parents=True)
    for rel, data in doc["files"].items():
        target = (directory / rel).resolve()
        if not str(rel) or directory.resolve() not in target.parents:
            raise VaultError(f"the identity bundle of {schema} names a path outside the ledger: {rel[:80]!r}")
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        replace(target, base64.b64decode(data), 0o600)
    for sub in _SKIPPED_DIRS:
        (directory / sub).mkdir(mode=0o700, exist_ok=True)
