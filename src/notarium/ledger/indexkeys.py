"""What the lookup index stores instead of collection ids and tags (docs/design/trust-model.md).

The index (``index/index.sqlite``) is untrusted storage, like the chunk files, so on a private
ledger it must not hold what the ledger encrypts. For each ledger secret ``S`` (an entry's index
rows use the secret in force at its seqno, as its encryption does):

* lookup key ``L`` = HKDF-SHA256(ikm ``S``, no salt, info ``notarium/index-lookup-key/1``), 32 bytes;
* name key ``N`` = HKDF-SHA256(ikm ``S``, no salt, info ``notarium/index-name-key/1``), 32 bytes;
* **collection token** = HMAC-SHA256(``L``, ``"collection" 0x00`` ‖ collection id): the key of an
  entry's collection in the index;
* **tag token** = HMAC-SHA256(``L``, ``"tag" 0x00`` ‖ len(collection id) (4 bytes BE) ‖ collection
  id ‖ tag): an entry's tag within its collection (the same tag in two collections gives two
  unrelated tokens);
* **sealed collection id** (for listing collections) = AES-256-GCM(``N``, nonce = the first 12
  bytes of the collection token, AAD = the collection token) of the id padded (ISO/IEC 7816-4:
  ``0x80`` then zeros) to a multiple of 256 bytes. The nonce is a MAC of the plaintext
  (deterministic, SIV-style): two ids never share a nonce, and one id always seals the same way.

Strings are UTF-8 (lone surrogates, which no stored id holds, pass through so that a lookup of
one finds nothing rather than failing). Pure functions of their inputs.
"""

from __future__ import annotations

import hmac

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from notarium.ledger.fastcrypto import HmacKey

LOOKUP_KEY_INFO = b"notarium/index-lookup-key/1"
NAME_KEY_INFO = b"notarium/index-name-key/1"
PAD_TO = 256
_NONCE = 12


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _derive(secret: bytes, info: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=None, info=info).derive(secret)


class IndexKeys:
    """The index's keys derived from one ledger secret."""

    __slots__ = ("_lookup", "_names")

    def __init__(self, ledger_secret: bytes) -> None:
        self._lookup = HmacKey(_derive(ledger_secret, LOOKUP_KEY_INFO))
        self._names = AESGCM(_derive(ledger_secret, NAME_KEY_INFO))

    def __repr__(self) -> str:  # never show a key
        return "IndexKeys(…)"

    def collection(self, collection_id: str) -> bytes:
        """The collection token of ``collection_id`` (32 bytes)."""
        return self._lookup.digest(b"collection\x00" + _utf8(collection_id))

    def tag(self, collection_id: str, tag: str) -> bytes:
        """The token of ``tag`` within ``collection_id`` (32 bytes)."""
        raw = _utf8(collection_id)
        return self._lookup.digest(b"tag\x00" + len(raw).to_bytes(4, "big") + raw + _utf8(tag))

    def seal(self, collection_id: str) -> bytes:
        """The sealed copy of ``collection_id`` (a multiple of 256 bytes, plus the 16-byte GCM tag)."""
        token = self.collection(collection_id)
        raw = _utf8(collection_id) + b"\x80"
        padded = raw + bytes(-len(raw) % PAD_TO)
        return self._names.encrypt(token[:_NONCE], padded, token)

    def open(self, token: bytes, sealed: bytes) -> str:
        """The collection id sealed under ``token``; ``ValueError`` if it is not one of these keys'."""
        try:
            padded = self._names.decrypt(token[:_NONCE], sealed, token)
        except InvalidTag:
            raise ValueError("a sealed collection id does not open under the index key") from None
        raw = padded.rstrip(b"\x00")
        if not raw.endswith(b"\x80"):
            raise ValueError("a sealed collection id is badly padded")
        try:
            collection_id = raw[:-1].decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise ValueError("a sealed collection id is not UTF-8") from None
        if not hmac.compare_digest(self.collection(collection_id), token):
            raise ValueError("a sealed collection id does not match its token")
        return collection_id
