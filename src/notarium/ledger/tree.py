"""The engine's Merkle tree: a frontier for new roots, and tiles for inclusion paths.

Memory stays O(n / 256): the roots of all complete subtrees of 256 leaves or more are kept in
memory (``levels[h - TILE_HEIGHT]``); anything smaller is recomputed from at most one tile of
leaves read from the index. The hashing and shape rules are those of :mod:`notarium.verify.merkle`;
the proofs are built by :mod:`notarium.ledger.merkle`.
"""

from __future__ import annotations

from collections.abc import Callable

from notarium.ledger.merkle import inclusion_path, perfect_root_over
from notarium.verify.merkle import ZERO_HASH, Frontier, PathElement, hash_children

TILE_HEIGHT = 8
TILE_SIZE = 1 << TILE_HEIGHT

LeafReader = Callable[[int, int], list[bytes]]


class TreeStore:
    def __init__(self, frontier: Frontier, tiles: list[bytes], read_leaves: LeafReader) -> None:
        """``tiles`` are the level-8 roots in order; ``read_leaves(lo, hi)`` returns leaves lo…hi−1."""
        self.frontier = frontier
        self.levels: list[list[bytes]] = [list(tiles)]
        level = self.levels[0]
        while len(level) >= 2:
            level = [hash_children(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            self.levels.append(level)
        self._read_leaves = read_leaves
        self._tile_cache: dict[int, list[bytes]] = {}
        self.new_tiles: list[tuple[int, bytes]] = []  # level-8 roots not yet written to the index

    @classmethod
    def empty(cls, read_leaves: LeafReader) -> TreeStore:
        f = Frontier()
        f.append(ZERO_HASH)
        return cls(f, [], read_leaves)

    def append(self, leaf: bytes) -> None:
        self.frontier.append(leaf, self._on_complete)

    def _on_complete(self, height: int, index: int, node: bytes) -> None:
        if height < TILE_HEIGHT:
            return
        h = height - TILE_HEIGHT
        if h == len(self.levels):
            self.levels.append([])
        level = self.levels[h]
        if index != len(level):
            raise RuntimeError(f"tree level {height} out of step: node {index} after {len(level)}")
        level.append(node)
        if h == 0:
            self.new_tiles.append((index, node))

    def _tile_leaves(self, tile: int) -> list[bytes]:
        cached = self._tile_cache.get(tile)
        if cached is not None:
            return cached
        lo = tile * TILE_SIZE
        leaves = [ZERO_HASH, *self._read_leaves(1, TILE_SIZE)] if tile == 0 else self._read_leaves(lo, lo + TILE_SIZE)
        if len(leaves) == TILE_SIZE:  # only complete tiles are immutable
            if len(self._tile_cache) >= 64:
                self._tile_cache.pop(next(iter(self._tile_cache)))
            self._tile_cache[tile] = leaves
        return leaves

    def _leaves(self, lo: int, hi: int) -> list[bytes]:
        tile = lo >> TILE_HEIGHT
        base = tile * TILE_SIZE
        return self._tile_leaves(tile)[lo - base : hi - base]

    def perfect_root(self, lo: int, size: int) -> bytes:
        height = size.bit_length() - 1
        if height >= TILE_HEIGHT:
            return self.levels[height - TILE_HEIGHT][lo >> height]
        leaves = self._leaves(lo, lo + size)
        if len(leaves) != size:
            raise RuntimeError(f"index is missing leaves in [{lo}, {lo + size})")
        return perfect_root_over(leaves)(0, size)

    def path(self, index: int, size: int) -> list[PathElement]:
        """Inclusion path of leaf ``index`` in the tree of the first ``size`` leaves."""
        if size > self.frontier.size:
            raise ValueError(f"tree has {self.frontier.size} leaves, not {size}")
        return inclusion_path(index, size, self.perfect_root)
