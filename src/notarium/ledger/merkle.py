"""Building Merkle proofs over CCF's tree: the ledger's side of :mod:`notarium.verify.merkle` and
:mod:`notarium.verify.consistency`, which check what is built here (same shape and hashing rules,
ccf-ledger-format.md §4): subtree roots, inclusion paths, RFC 9162 consistency proofs, and the
serialised tree a signature transaction carries (§4.6).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Sequence

from notarium.verify.merkle import Frontier, PathElement

_sha256 = hashlib.sha256

SubtreeRoot = Callable[[int, int], bytes]
"""``perfect_root(lo, size)``: the root of the perfect, aligned subtree of ``size`` leaves at ``lo``."""


def _split(n: int) -> int:
    """The largest power of two strictly less than ``n`` (n ≥ 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def subtree_root(lo: int, hi: int, perfect_root: SubtreeRoot) -> bytes:
    """Root of leaves ``[lo, hi)`` where ``lo`` is aligned to the largest power of two ≤ hi−lo.

    ``perfect_root(lo, size)`` must return the root of the perfect, aligned subtree of
    ``size`` (a power of two) leaves starting at ``lo``.
    """
    if hi <= lo:
        raise ValueError(f"empty range [{lo}, {hi})")
    peaks: list[bytes] = []
    while lo < hi:
        size = 1 << ((hi - lo).bit_length() - 1)
        peaks.append(perfect_root(lo, size))
        lo += size
    acc = peaks[-1]
    for peak in reversed(peaks[:-1]):
        acc = _sha256(peak + acc).digest()
    return acc


def inclusion_path(index: int, size: int, perfect_root: SubtreeRoot) -> list[PathElement]:
    """The inclusion path of leaf ``index`` in the tree of the first ``size`` leaves."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size} leaves")
    path: list[PathElement] = []
    lo, hi = 0, size
    while hi - lo > 1:
        mid = lo + _split(hi - lo)
        if index < mid:
            path.append((False, subtree_root(mid, hi, perfect_root)))
            hi = mid
        else:
            path.append((True, subtree_root(lo, mid, perfect_root)))
            lo = mid
    path.reverse()
    return path


def perfect_root_over(leaves: Sequence[bytes]) -> SubtreeRoot:
    """A ``perfect_root`` callback over an in-memory sequence of leaves (tests, small trees)."""

    def perfect(lo: int, size: int) -> bytes:
        level = list(leaves[lo : lo + size])
        while len(level) > 1:
            level = [_sha256(level[i] + level[i + 1]).digest() for i in range(0, len(level), 2)]
        return level[0]

    return perfect


def root_of(leaves: Sequence[bytes]) -> bytes:
    """Root over a sequence of leaves (at least one)."""
    if not leaves:
        raise ValueError("a tree needs at least one leaf")
    return subtree_root(0, len(leaves), perfect_root_over(leaves))


def consistency_proof(m: int, n: int, perfect_root: SubtreeRoot) -> list[bytes]:
    """The RFC 9162 consistency proof from the tree of the first ``m`` leaves to that of the first ``n``.

    ``perfect_root(lo, size)`` returns the root of the perfect, aligned subtree of ``size`` leaves
    starting at ``lo`` (as for :func:`inclusion_path`). ``m == n`` gives ``[]``.
    """
    if type(m) is not int or type(n) is not int or not 0 < m <= n:
        raise ValueError(f"a consistency proof needs 0 < m <= n, not m={m!r}, n={n!r}")
    # RFC 9162 SUBPROOF(m, D[lo:hi], b), unrolled: each level adds one node after the nodes of
    # the level below it, so collect them top-down and reverse at the end.
    proof: list[bytes] = []
    lo, hi, complete = 0, n, True
    while hi - lo != m:
        k = _split(hi - lo)
        if m <= k:
            proof.append(subtree_root(lo + k, hi, perfect_root))
            hi = lo + k
        else:
            proof.append(subtree_root(lo, lo + k, perfect_root))
            lo += k
            m -= k
            complete = False
    if not complete:
        proof.append(subtree_root(lo, hi, perfect_root))
    proof.reverse()
    return proof


# --- serialised tree (public:ccf.internal.tree, ccf-ledger-format.md §4.6), big-endian ---


def serialise_tree(flushed: Frontier, unflushed_leaves: Sequence[bytes]) -> bytes:
    """Serialise a tree whose first ``flushed.size`` leaves are kept only as peaks."""
    parts = [struct.pack(">QQ", len(unflushed_leaves), flushed.size)]
    parts.extend(unflushed_leaves)
    # one root per set bit of num_flushed, lowest bit first: the peaks, smallest first
    parts.extend(reversed(flushed.peaks))
    return b"".join(parts)
