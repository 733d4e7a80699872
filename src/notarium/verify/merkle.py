"""CCF's Merkle tree (ccf-ledger-format.md §4), as pure functions.

* Internal node = SHA-256(left ‖ right), with **no** domain-separation prefixes.
* Shape: pair nodes left to right, promote an odd last node unchanged. This is the RFC 9162
  shape (split at the largest power of two strictly below n) without RFC 9162's prefixes.
* Leaf 0 is 32 zero bytes; the transaction at seqno i is leaf i.
* A signature transaction at seqno S signs the root over leaves 0 … S−1.

Paths are lists of ``(sibling_is_left, sibling_hash)`` from the leaf to the root.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Sequence

HASH_SIZE = 32
ZERO_HASH = bytes(HASH_SIZE)

_sha256 = hashlib.sha256

PathElement = tuple[bool, bytes]
SubtreeRoot = Callable[[int, int], bytes]


def hash_children(left: bytes, right: bytes) -> bytes:
    """The hash of an internal node."""
    return _sha256(left + right).digest()


def root_from_path(leaf: bytes, path: Sequence[PathElement]) -> bytes:
    """Fold an inclusion path from ``leaf`` up to the root it implies."""
    acc = leaf
    for is_left, sibling in path:
        acc = _sha256(sibling + acc).digest() if is_left else _sha256(acc + sibling).digest()
    return acc


class Frontier:
    """The compact right edge of a growing tree: O(log n) memory, O(1) amortised appends.

    ``peaks`` holds the roots of the perfect subtrees that make up the first ``size`` leaves,
    largest (leftmost) first; their sizes are the set bits of ``size``.
    """

    __slots__ = ("_heights", "peaks", "size")

    def __init__(self) -> None:
        self.size = 0
        self.peaks: list[bytes] = []
        self._heights: list[int] = []

    @classmethod
    def from_peaks(cls, size: int, peaks: Sequence[bytes]) -> Frontier:
        """Rebuild a frontier of ``size`` leaves from its peaks (largest first)."""
        heights = [b for b in range(size.bit_length() - 1, -1, -1) if size >> b & 1]
        if len(heights) != len(peaks):
            raise ValueError(f"a tree of {size} leaves has {len(heights)} peaks, not {len(peaks)}")
        f = cls()
        f.size = size
        f.peaks = list(peaks)
        f._heights = heights
        return f

    @property
    def heights(self) -> list[int]:
        """The height of each peak (log2 of its number of leaves), largest first."""
        return list(self._heights)

    def copy(self) -> Frontier:
        return Frontier.from_peaks(self.size, self.peaks)

    def append(self, leaf: bytes, on_complete: Callable[[int, int, bytes], None] | None = None) -> None:
        """Add a leaf. ``on_complete(height, index, hash)`` sees each perfect subtree completed."""
        peaks, heights = self.peaks, self._heights
        peaks.append(leaf)
        heights.append(0)
        self.size += 1
        while len(heights) > 1 and heights[-1] == heights[-2]:
            right = peaks.pop()
            h = heights.pop()
            node = _sha256(peaks[-1] + right).digest()
            peaks[-1] = node
            heights[-1] = h + 1
            if on_complete is not None:
                on_complete(h + 1, (self.size >> (h + 1)) - 1, node)

    def append_node(self, height: int, node: bytes) -> None:
        """Add a perfect subtree of ``2**height`` leaves; ``size`` must be a multiple of its size."""
        if self.size & ((1 << height) - 1):
            raise ValueError(f"a subtree of height {height} cannot start at leaf {self.size}")
        peaks, heights = self.peaks, self._heights
        peaks.append(node)
        heights.append(height)
        self.size += 1 << height
        while len(heights) > 1 and heights[-1] == heights[-2]:
            right = peaks.pop()
            h = heights.pop()
            peaks[-1] = _sha256(peaks[-1] + right).digest()
            heights[-1] = h + 1

    def extend(self, nodes: Sequence[tuple[int, bytes]]) -> None:
        """Add the output of :func:`range_nodes` for a range that starts where this frontier ends."""
        for height, node in nodes:
            self.append_node(height, node)

    def root(self) -> bytes:
        """The root over all leaves so far."""
        if not self.peaks:
            raise ValueError("an empty tree has no root")
        peaks = self.peaks
        acc = peaks[-1]
        for i in range(len(peaks) - 2, -1, -1):
            acc = _sha256(peaks[i] + acc).digest()
        return acc


def range_nodes(begin: int, leaves: Sequence[bytes]) -> list[tuple[int, bytes]]:
    """Leaves ``[begin, begin + len(leaves))`` as aligned perfect subtrees ``(height, root)``, in order.

    A chunk of a ledger can be hashed this way without knowing what came before it;
    ``Frontier.extend`` then joins the result to the frontier of everything before ``begin``.
    """
    left: list[tuple[int, bytes]] = []
    right: list[tuple[int, bytes]] = []
    level = list(leaves)
    pos, height = begin, 0
    while level:
        if pos & 1:
            left.append((height, level[0]))
            del level[0]
            pos += 1
        if len(level) & 1:
            right.append((height, level.pop()))
        level = [_sha256(level[i] + level[i + 1]).digest() for i in range(0, len(level), 2)]
        pos >>= 1
        height += 1
    right.reverse()
    return left + right


# --- serialised tree (public:ccf.internal.tree, ccf-ledger-format.md §4.6), big-endian ---


def deserialise_tree(data: bytes) -> tuple[int, bytes]:
    """Parse a serialised tree; return ``(number_of_leaves, root)``.

    Raises ``ValueError`` on any malformed input (callers turn it into a verification failure).
    """
    if len(data) < 16:
        raise ValueError("serialised tree shorter than its 16-byte header")
    n_leaves, n_flushed = struct.unpack_from(">QQ", data, 0)
    n_roots = n_flushed.bit_count()
    if len(data) != 16 + HASH_SIZE * (n_leaves + n_roots):
        raise ValueError("serialised tree length does not match its header")
    total = n_leaves + n_flushed
    if total == 0:
        raise ValueError("serialised tree is empty")
    off = 16
    leaves = [data[off + HASH_SIZE * i : off + HASH_SIZE * (i + 1)] for i in range(n_leaves)]
    off += HASH_SIZE * n_leaves
    roots = [data[off + HASH_SIZE * i : off + HASH_SIZE * (i + 1)] for i in range(n_roots)]
    # peaks of the flushed part, largest first, then the unflushed leaves on top
    frontier = Frontier.from_peaks(n_flushed, list(reversed(roots)))
    frontier.extend(range_nodes(n_flushed, leaves))
    return total, frontier.root()
