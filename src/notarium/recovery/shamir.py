"""Shamir's secret sharing, k of n, over the prime field GF(p) with p = 2^256 − 189.

The secret is one field element (≈ 256 bits: :func:`random_secret` draws it uniformly), so one
polynomial suffices; CCF instead splits 10 limbs over GF(2^31 − 1). A share is encoded in 35
bytes::

    version (1 byte, = 1) ‖ threshold k (1 byte) ‖ x (1 byte, 1…255) ‖ y (32 bytes, big-endian, < p)

Any k shares with distinct x rebuild the secret (Lagrange interpolation at 0); k − 1 shares are
consistent with every secret, so they reveal nothing. Shares are not authenticated here: see
:mod:`notarium.recovery.shares` for the per-share commitments that catch a wrong one.
"""

from __future__ import annotations

import secrets as _random
from dataclasses import dataclass

PRIME = (1 << 256) - 189  # the largest prime below 2^256
SHARE_VERSION = 1
SHARE_SIZE = 35
MAX_SHARES = 255


@dataclass(frozen=True, slots=True)
class Share:
    threshold: int
    x: int
    y: int

    def __repr__(self) -> str:  # never show the share's value
        return f"Share(threshold={self.threshold}, x={self.x}, y=<hidden>)"

    def to_bytes(self) -> bytes:
        return bytes((SHARE_VERSION, self.threshold, self.x)) + self.y.to_bytes(32, "big")

    @classmethod
    def from_bytes(cls, data: bytes) -> Share:
        """Decode a share; ``ValueError`` if it is malformed."""
        if len(data) != SHARE_SIZE:
            raise ValueError(f"a recovery share is {SHARE_SIZE} bytes, got {len(data)}")
        if data[0] != SHARE_VERSION:
            raise ValueError(f"unknown recovery share version {data[0]}")
        threshold, x = data[1], data[2]
        y = int.from_bytes(data[3:], "big")
        if threshold < 1 or x < 1 or y >= PRIME:
            raise ValueError("malformed recovery share")
        return cls(threshold, x, y)


def random_secret() -> int:
    """A uniformly random field element."""
    return _random.randbelow(PRIME)


def split(secret: int, threshold: int, count: int, *, rand: int | None = None) -> list[Share]:
    """Split ``secret`` into ``count`` shares (x = 1 … count), any ``threshold`` of which rebuild it.

    ``rand`` is for test vectors only: it seeds the coefficients deterministically."""
    if not 0 <= secret < PRIME:
        raise ValueError("the secret must be a field element")
    if not 1 <= threshold <= count <= MAX_SHARES:
        raise ValueError(f"need 1 ≤ threshold ≤ count ≤ {MAX_SHARES}, got threshold {threshold} of {count}")
    if rand is None:
        coefficients = [secret] + [_random.randbelow(PRIME) for _ in range(threshold - 1)]
    else:
        coefficients = [secret] + [pow(rand + i, 3, PRIME) for i in range(1, threshold)]
    return [Share(threshold, x, _evaluate(coefficients, x)) for x in range(1, count + 1)]


def _evaluate(coefficients: list[int], x: int) -> int:
    y = 0
    for c in reversed(coefficients):
        y = (y * x + c) % PRIME
    return y


def combine(shares: list[Share]) -> int:
    """Rebuild the secret from at least ``threshold`` shares (all of them are used).

    ``ValueError`` if there are too few, if they disagree on the threshold, or if two share an x.
    A wrong share gives a wrong secret, silently: check shares before combining them."""
    if not shares:
        raise ValueError("no recovery shares")
    threshold = shares[0].threshold
    if any(s.threshold != threshold for s in shares):
        raise ValueError("the recovery shares come from different splits (thresholds differ)")
    xs = [s.x for s in shares]
    if len(set(xs)) != len(xs):
        raise ValueError("two recovery shares have the same index")
    if len(shares) < threshold:
        raise ValueError(f"{len(shares)} recovery shares given, {threshold} needed")
    secret = 0
    for i, si in enumerate(shares):
        num, den = 1, 1
        for j, sj in enumerate(shares):
            if i != j:
                num = num * -sj.x % PRIME
                den = den * (si.x - sj.x) % PRIME
        secret = (secret + si.y * num * pow(den, -1, PRIME)) % PRIME
    return secret
