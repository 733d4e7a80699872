"""Property tests of notarium.verify.merkle against a naive reference tree (ccf-ledger-format.md §4)."""

from __future__ import annotations

import hashlib
import itertools
import struct
from collections.abc import Callable
from functools import cache

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from notarium.ledger.merkle import inclusion_path, perfect_root_over, root_of, serialise_tree, subtree_root
from notarium.verify.merkle import HASH_SIZE, Frontier, deserialise_tree, hash_children, range_nodes, root_from_path

# --- the naive reference: level by level, exactly as ccf-ledger-format.md §4.2 / §4.4 ---


def h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def naive_levels(leaves: list[bytes]) -> list[list[bytes]]:
    """Every level, leaves first: pair left to right, promote an odd last node unchanged."""
    levels = [list(leaves)]
    while len(levels[-1]) > 1:
        cur = levels[-1]
        levels.append([h(cur[i] + cur[i + 1]) if i + 1 < len(cur) else cur[i] for i in range(0, len(cur), 2)])
    return levels


def naive_root(leaves: list[bytes]) -> bytes:
    return naive_levels(leaves)[-1][0]


def naive_path(leaves: list[bytes], index: int) -> list[tuple[bool, bytes]]:
    path = []
    for level in naive_levels(leaves)[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            path.append((sibling < index, level[sibling]))
        index //= 2
    return path


def naive_fold(leaf: bytes, path: list[tuple[bool, bytes]]) -> bytes:
    acc = leaf
    for is_left, sibling in path:
        acc = h(sibling + acc) if is_left else h(acc + sibling)
    return acc


def naive_perfect_nodes(leaves: list[bytes]) -> list[tuple[int, int, bytes]]:
    """(height, index, hash) of every perfect aligned subtree of height >= 1 within the leaves."""
    out = []
    height = 1
    while (1 << height) <= len(leaves):
        width = 1 << height
        for index in range(len(leaves) // width):
            out.append((height, index, naive_root(leaves[index * width : (index + 1) * width])))
        height += 1
    return out


def naive_peaks(leaves: list[bytes]) -> list[bytes]:
    """Roots of the perfect subtrees on the left edge, one per set bit of len(leaves), largest first."""
    peaks, lo, n = [], 0, len(leaves)
    for bit in range(n.bit_length() - 1, -1, -1):
        if n >> bit & 1:
            peaks.append(naive_root(leaves[lo : lo + (1 << bit)]))
            lo += 1 << bit
    return peaks


def naive_serialise(leaves: list[bytes], flushed: int) -> bytes:
    rest = leaves[flushed:]
    return struct.pack(">QQ", len(rest), flushed) + b"".join(rest) + b"".join(reversed(naive_peaks(leaves[:flushed])))


def make_leaves(n: int, seed: bytes = b"") -> list[bytes]:
    return [h(seed + i.to_bytes(4, "big")) for i in range(n)]


def frontier_of(leaves: list[bytes]) -> Frontier:
    f = Frontier()
    for leaf in leaves:
        f.append(leaf)
    return f


# --- strategies ---

hashes32 = st.binary(min_size=HASH_SIZE, max_size=HASH_SIZE)
# Random 32-byte leaves (duplicates allowed, shrinks well) for small trees ...
small_leaf_lists = st.lists(hashes32, min_size=1, max_size=40)
# ... and cheap pseudo-random leaves for trees up to 300 leaves.
seeded_leaf_lists = st.builds(make_leaves, st.integers(1, 300), st.binary(max_size=8))
leaf_lists = st.one_of(small_leaf_lists, seeded_leaf_lists)

FAST = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def with_edge_sizes(test: Callable[..., None]) -> Callable[..., None]:
    """Always also run the largest size and the sizes around a power of two."""
    for n in (300, 257, 256, 255):
        test = example(make_leaves(n, b"edge"))(test)
    return test


# --- the reference itself, pinned on tiny hand-computed trees ---


def test_naive_reference_on_hand_computed_trees() -> None:
    a, b, c, d, e = (bytes([i]) * 32 for i in range(1, 6))
    assert naive_root([a]) == a
    assert naive_root([a, b]) == h(a + b)
    assert naive_root([a, b, c]) == h(h(a + b) + c)
    assert naive_root([a, b, c, d]) == h(h(a + b) + h(c + d))
    assert naive_root([a, b, c, d, e]) == h(h(h(a + b) + h(c + d)) + e)
    assert naive_path([a, b, c, d, e], 4) == [(True, h(h(a + b) + h(c + d)))]
    assert naive_path([a, b, c], 1) == [(True, a), (False, c)]


# --- primitives ---


def test_hash_children_is_plain_sha256_of_the_concatenation() -> None:
    left, right = b"\x01" * 32, b"\x02" * 32
    assert hash_children(left, right) == hashlib.sha256(left + right).digest()
    assert hash_children(left, right) != hash_children(right, left)
    # no RFC 6962 style 0x01 prefix
    assert hash_children(left, right) != hashlib.sha256(b"\x01" + left + right).digest()


def test_root_of_single_leaf_is_the_leaf_itself() -> None:
    leaf = b"\xab" * 32
    assert root_of([leaf]) == leaf
    assert frontier_of([leaf]).root() == leaf


def test_root_of_two_zero_leaves_known_value() -> None:
    # SHA-256 of 64 zero bytes
    expected = "f5a5fd42d16a20302798ef6ed309979b43003d2320d9f0e8ea9831a92759fb4b"
    assert root_of([bytes(32), bytes(32)]).hex() == expected


def test_root_from_empty_path_is_the_leaf() -> None:
    leaf = b"\x07" * 32
    assert root_from_path(leaf, []) == leaf


def test_root_from_path_sides() -> None:
    leaf, sib = b"\x01" * 32, b"\x02" * 32
    assert root_from_path(leaf, [(True, sib)]) == h(sib + leaf)
    assert root_from_path(leaf, [(False, sib)]) == h(leaf + sib)


def test_root_of_empty_raises() -> None:
    with pytest.raises(ValueError, match="at least one leaf"):
        root_of([])


@pytest.mark.parametrize(("lo", "hi"), [(0, 0), (3, 3), (5, 2)])
def test_subtree_root_empty_range_raises(lo: int, hi: int) -> None:
    with pytest.raises(ValueError, match="empty range"):
        subtree_root(lo, hi, perfect_root_over(make_leaves(8)))


@pytest.mark.parametrize(("index", "size"), [(0, 0), (-1, 5), (5, 5), (6, 5)])
def test_inclusion_path_index_out_of_range_raises(index: int, size: int) -> None:
    with pytest.raises(ValueError, match="not in a tree"):
        inclusion_path(index, size, perfect_root_over(make_leaves(8)))


def test_empty_frontier_has_no_root() -> None:
    with pytest.raises(ValueError, match="empty tree"):
        Frontier().root()


@pytest.mark.parametrize(("size", "n_peaks"), [(0, 1), (1, 0), (3, 1), (3, 3), (8, 2), (7, 2)])
def test_from_peaks_rejects_wrong_peak_count(size: int, n_peaks: int) -> None:
    with pytest.raises(ValueError, match="peaks"):
        Frontier.from_peaks(size, [bytes(32)] * n_peaks)


# --- exhaustive small trees (deterministic complement of the properties below) ---


def test_small_trees_exhaustively() -> None:
    for n in range(1, 70):
        leaves = make_leaves(n, b"exhaustive")
        expected = naive_root(leaves)
        assert root_of(leaves) == expected, n
        assert frontier_of(leaves).root() == expected, n
        perfect = perfect_root_over(leaves)
        for i in range(n):
            path = inclusion_path(i, n, perfect)
            assert path == naive_path(leaves, i), (n, i)
            assert root_from_path(leaves[i], path) == expected, (n, i)


# --- properties over 1..300 leaves ---


@FAST
@given(leaf_lists)
@with_edge_sizes
def test_root_of_matches_naive(leaves: list[bytes]) -> None:
    assert root_of(leaves) == naive_root(leaves)


@FAST
@given(leaf_lists)
@with_edge_sizes
def test_frontier_root_matches_naive_at_every_size(leaves: list[bytes]) -> None:
    f = Frontier()
    level_roots = [naive_root(leaves[: k + 1]) for k in range(len(leaves))]
    for k, leaf in enumerate(leaves):
        f.append(leaf)
        assert f.size == k + 1
        assert f.root() == level_roots[k]
        assert len(f.peaks) == f.size.bit_count()
    assert f.peaks == naive_peaks(leaves)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(leaf_lists)
@with_edge_sizes
def test_inclusion_path_of_every_index_folds_to_naive_root(leaves: list[bytes]) -> None:
    n = len(leaves)
    expected = naive_root(leaves)
    perfect = perfect_root_over(leaves)
    for i in range(n):
        path = inclusion_path(i, n, perfect)
        assert root_from_path(leaves[i], path) == expected
        assert naive_fold(leaves[i], path) == expected
        assert len(path) <= max(1, (n - 1).bit_length())


@FAST
@given(leaf_lists, st.data())
def test_inclusion_path_equals_naive_path(leaves: list[bytes], data: st.DataObject) -> None:
    n = len(leaves)
    i = data.draw(st.integers(0, n - 1), label="index")
    # a memoising callback must give the same answer as the plain one
    perfect = cache(perfect_root_over(leaves))
    assert inclusion_path(i, n, perfect) == naive_path(leaves, i)
    assert inclusion_path(i, n, perfect_root_over(leaves)) == naive_path(leaves, i)


@FAST
@given(leaf_lists, st.data())
def test_inclusion_path_in_a_prefix_tree(leaves: list[bytes], data: st.DataObject) -> None:
    """A path in the tree of the first ``size`` leaves ignores the leaves after it (§4.5)."""
    size = data.draw(st.integers(1, len(leaves)), label="size")
    i = data.draw(st.integers(0, size - 1), label="index")
    path = inclusion_path(i, size, perfect_root_over(leaves))
    assert root_from_path(leaves[i], path) == naive_root(leaves[:size])


@FAST
@given(leaf_lists, st.data())
def test_subtree_root_matches_naive_for_aligned_ranges(leaves: list[bytes], data: st.DataObject) -> None:
    n = len(leaves)
    lo_exp = data.draw(st.integers(0, n.bit_length() - 1), label="alignment")
    width = 1 << lo_exp
    lo = data.draw(st.integers(0, (n - 1) // width), label="block") * width
    hi = data.draw(st.integers(lo + 1, min(n, lo + width)), label="hi")
    assert subtree_root(lo, hi, perfect_root_over(leaves)) == naive_root(leaves[lo:hi])


@FAST
@given(leaf_lists)
@with_edge_sizes
def test_on_complete_reports_exactly_the_perfect_subtrees(leaves: list[bytes]) -> None:
    events: list[tuple[int, int, bytes]] = []
    f = Frontier()
    for k, leaf in enumerate(leaves):
        before = len(events)
        f.append(leaf, lambda height, index, node: events.append((height, index, node)))
        size = k + 1
        # the subtrees completed by this append are exactly those ending at ``size``
        new = events[before:]
        expected_heights = [ht for ht in range(1, size.bit_length()) if size % (1 << ht) == 0]
        assert [e[0] for e in new] == expected_heights
        for height, index, _node in new:
            assert (index + 1) << height == size
    assert sorted(events) == sorted(naive_perfect_nodes(leaves))
    assert len(events) == len(set(events))


def test_on_complete_known_sequence() -> None:
    leaves = make_leaves(8, b"seq")
    events: list[tuple[int, int]] = []
    f = Frontier()
    for leaf in leaves:
        f.append(leaf, lambda height, index, _node: events.append((height, index)))
    assert events == [(1, 0), (1, 1), (2, 0), (1, 2), (1, 3), (2, 1), (3, 0)]


@FAST
@given(leaf_lists, st.data())
def test_from_peaks_and_copy_continue_identically(leaves: list[bytes], data: st.DataObject) -> None:
    split = data.draw(st.integers(0, len(leaves)), label="split")
    original = frontier_of(leaves[:split])
    rebuilt = Frontier.from_peaks(split, naive_peaks(leaves[:split]))
    copy = original.copy()
    for f in (original, rebuilt, copy):
        assert f.size == split
        assert f.peaks == naive_peaks(leaves[:split])
    for leaf in leaves[split:]:
        copy.append(leaf)
        rebuilt.append(leaf)
    assert copy.root() == rebuilt.root() == naive_root(leaves)
    # the copy is independent of the frontier it came from
    assert original.size == split
    assert original.peaks == naive_peaks(leaves[:split])


@FAST
@given(leaf_lists, st.data())
def test_changing_any_single_leaf_changes_the_root(leaves: list[bytes], data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(leaves) - 1), label="index")
    replacement = data.draw(hashes32.filter(lambda x: x != leaves[i]), label="replacement")
    changed = [*leaves[:i], replacement, *leaves[i + 1 :]]
    assert root_of(changed) != root_of(leaves)
    assert frontier_of(changed).root() != frontier_of(leaves).root()


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 9, 33])
def test_changing_each_leaf_bit_changes_the_root(n: int) -> None:
    leaves = make_leaves(n, b"bits")
    root = root_of(leaves)
    for i in range(n):
        for bit in (0, 7, 128, 255):
            leaf = bytearray(leaves[i])
            leaf[bit // 8] ^= 1 << (bit % 8)
            assert root_of([*leaves[:i], bytes(leaf), *leaves[i + 1 :]]) != root


def test_appending_a_leaf_changes_the_root() -> None:
    leaves = make_leaves(40, b"append")
    roots = {root_of(leaves[:k]) for k in range(1, 41)}
    assert len(roots) == 40


# --- chunked hashing: range_nodes, Frontier.append_node / extend / heights ---


def set_bits(n: int) -> list[int]:
    return [b for b in range(n.bit_length() - 1, -1, -1) if n >> b & 1]


@FAST
@given(leaf_lists, st.data())
def test_range_nodes_are_the_aligned_subtrees_of_the_range(leaves: list[bytes], data: st.DataObject) -> None:
    n = len(leaves)
    begin = data.draw(st.integers(0, n), label="begin")
    nodes = range_nodes(begin, leaves[begin:])
    pos = begin
    starts = []
    for height, node in nodes:
        assert pos % (1 << height) == 0, (pos, height)
        assert node == naive_root(leaves[pos : pos + (1 << height)])
        starts.append(pos)
        pos += 1 << height
    assert pos == n
    # minimal: no two equal neighbours that form one aligned subtree of twice the size
    for k in range(len(nodes) - 1):
        height = nodes[k][0]
        assert not (nodes[k + 1][0] == height and starts[k] % (2 << height) == 0), (starts[k], height)
    assert len(nodes) <= 2 * max(1, n.bit_length())


@FAST
@given(leaf_lists, st.data())
def test_extend_with_range_nodes_matches_naive(leaves: list[bytes], data: st.DataObject) -> None:
    n = len(leaves)
    begin = data.draw(st.integers(0, n), label="begin")
    f = frontier_of(leaves[:begin])
    f.extend(range_nodes(begin, leaves[begin:]))
    assert f.size == n
    assert f.root() == naive_root(leaves)
    assert f.peaks == naive_peaks(leaves)
    assert f.heights == set_bits(n)


@FAST
@given(leaf_lists, st.data())
def test_chunks_hashed_separately_join_up(leaves: list[bytes], data: st.DataObject) -> None:
    """A ledger split into chunks at arbitrary points: hash each alone, join in order."""
    n = len(leaves)
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, n - 1)), max_size=6), label="cuts") - {n})
    bounds = [0, *cuts, n]
    f = Frontier()
    for lo, hi in itertools.pairwise(bounds):
        f.extend(range_nodes(lo, leaves[lo:hi]))
        assert f.size == hi
        assert f.root() == naive_root(leaves[:hi])


def test_range_nodes_small_cases() -> None:
    a, b, c, d, e = (bytes([i]) * 32 for i in range(1, 6))
    assert range_nodes(0, []) == []
    assert range_nodes(7, [a]) == [(0, a)]
    assert range_nodes(0, [a, b, c]) == [(1, h(a + b)), (0, c)]
    assert range_nodes(3, [a, b]) == [(0, a), (0, b)]
    assert range_nodes(2, [a, b, c, d, e]) == [(1, h(a + b)), (1, h(c + d)), (0, e)]
    assert range_nodes(1, [a, b, c, d]) == [(0, a), (1, h(b + c)), (0, d)]


@pytest.mark.parametrize(("size", "height"), [(1, 1), (2, 2), (3, 1), (6, 2), (12, 3)])
def test_append_node_rejects_misaligned_subtrees(size: int, height: int) -> None:
    f = frontier_of(make_leaves(size))
    with pytest.raises(ValueError, match="cannot start"):
        f.append_node(height, bytes(32))
    assert f.size == size


def test_append_node_of_a_perfect_subtree() -> None:
    leaves = make_leaves(16, b"node")
    f = frontier_of(leaves[:8])
    f.append_node(2, naive_root(leaves[8:12]))
    f.append_node(1, naive_root(leaves[12:14]))
    f.append_node(0, leaves[14])
    f.append_node(0, leaves[15])
    assert f.size == 16
    assert f.heights == [4]
    assert f.root() == naive_root(leaves)


def test_heights_is_a_copy() -> None:
    f = frontier_of(make_leaves(11))
    assert f.heights == [3, 1, 0]
    f.heights.append(5)
    assert f.heights == [3, 1, 0]
    assert Frontier.from_peaks(11, f.peaks).heights == [3, 1, 0]


# --- serialised tree (§4.6) ---


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(leaf_lists)
@with_edge_sizes
def test_serialise_round_trips_for_every_flush_point(leaves: list[bytes]) -> None:
    n = len(leaves)
    expected = naive_root(leaves)
    flushed = Frontier()
    # the naive serialiser is quadratic: compare bytes at every split of small trees, a sample of big ones
    exact = set(range(n + 1)) if n <= 64 else {0, 1, n // 2, n - 1, n, *(1 << k for k in range(n.bit_length()))}
    for split in range(n + 1):
        data = serialise_tree(flushed, leaves[split:])
        if split in exact:
            assert data == naive_serialise(leaves, split)
        assert len(data) == 16 + HASH_SIZE * (n - split + split.bit_count())
        assert deserialise_tree(data) == (n, expected)
        if split < n:
            flushed.append(leaves[split])


@FAST
@given(leaf_lists, st.data())
def test_deserialise_rejects_truncated_and_extended(leaves: list[bytes], data: st.DataObject) -> None:
    n = len(leaves)
    split = data.draw(st.integers(0, n), label="split")
    good = serialise_tree(frontier_of(leaves[:split]), leaves[split:])
    cut = data.draw(st.integers(0, len(good) - 1), label="cut")
    with pytest.raises(ValueError, match="serialised tree"):
        deserialise_tree(good[:cut])
    extra = data.draw(st.binary(min_size=1, max_size=70), label="extra")
    with pytest.raises(ValueError, match="serialised tree"):
        deserialise_tree(good + extra)


@FAST
@given(st.binary(max_size=300))
def test_deserialise_garbage_raises_value_error_only(garbage: bytes) -> None:
    try:
        size, root = deserialise_tree(garbage)
    except ValueError:
        return
    # consistent by chance: then it is a well-formed tree
    assert size >= 1
    assert len(root) == HASH_SIZE


@FAST
@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.integers(0, 8))
def test_deserialise_header_that_disagrees_with_length(n_leaves: int, n_flushed: int, n_hashes: int) -> None:
    data = struct.pack(">QQ", n_leaves, n_flushed) + bytes(HASH_SIZE * n_hashes)
    if n_leaves + n_flushed.bit_count() == n_hashes and n_leaves + n_flushed > 0:
        assert deserialise_tree(data)[0] == n_leaves + n_flushed
    else:
        with pytest.raises(ValueError, match="serialised tree"):
            deserialise_tree(data)


def test_deserialise_empty_tree_rejected() -> None:
    with pytest.raises(ValueError, match="empty"):
        deserialise_tree(bytes(16))


def test_deserialise_only_flushed_peaks() -> None:
    """A fully flushed tree of 2**64-1 leaves is 64 peaks and nothing else."""
    peaks = [bytes([i]) * 32 for i in range(64)]
    data = struct.pack(">QQ", 0, 2**64 - 1) + b"".join(peaks)
    expected = peaks[0]  # peaks are lowest bit first: fold from the smallest
    for p in peaks[1:]:
        expected = h(p + expected)
    assert deserialise_tree(data) == (2**64 - 1, expected)
