"""Hot-path equivalents of simple primitives, each tested against the plain definition.

* :class:`HmacKey` — HMAC-SHA256 (RFC 2104) with the padded key states computed once, for keys
  used many times (the commit secret) or twice (an entry's claims key).
* :class:`RandomPool` — ``os.urandom`` drawn in large blocks: one system call per 2,048 keys.
"""

from __future__ import annotations

import hashlib
import os
import threading

_BLOCK = 64
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


class HmacKey:
    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._outer = hashlib.sha256(key.translate(_OPAD))

    def digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


class RandomPool:
    """Cryptographically secure random bytes (from ``os.urandom``), fetched in blocks."""

    def __init__(self, block: int = 65536) -> None:
        self._block = block
        self._buf = b""
        self._pos = 0
        self._lock = threading.Lock()

    def __call__(self, n: int) -> bytes:
        with self._lock:
            if self._pos + n > len(self._buf):
                self._buf = os.urandom(max(self._block, n))
                self._pos = 0
            out = self._buf[self._pos : self._pos + n]
            self._pos += n
            return out
