"""Generate the language-neutral Merkle tree test vectors in ``tests/unit/verify/vectors/merkle/``.

The vectors describe CCF's Merkle tree (ccf-ledger-format.md §4): internal node = SHA-256(left ‖
right) with no domain-separation prefixes; levels are built by pairing left to right and promoting
an odd last node unchanged. This generator uses its own naive, level-by-level implementation and
only the standard library, so the vectors are independent of ``notarium.verify.merkle``.

Leaves are ``leaf[i] = SHA-256(ASCII decimal i)``, e.g. ``leaf[0] = SHA-256(b"0")``.

Usage::

    python tests/tools/gen_vectors.py           # (re)write the vector files
    python tests/tools/gen_vectors.py --check   # exit 1 if the committed files differ

The output is deterministic; ``tests/unit/verify/test_merkle_vectors.py`` checks that regenerating
gives exactly the committed files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

OUT_DIR = Path(__file__).resolve().parent.parent / "unit" / "verify" / "vectors" / "merkle"

LEAF_RULE = "leaf[i] = SHA-256(ASCII decimal string of i), e.g. leaf[0] = SHA-256(b'0')"
TREE_RULE = (
    "CCF Merkle tree (ccf-ledger-format.md §4): node = SHA-256(left || right), no prefixes; "
    "levels pair nodes left to right and promote an odd last node unchanged"
)

ROOT_SIZES = [*range(1, 41), 63, 64, 65, 100, 127, 128, 129, 255, 256, 257, 1000, 1023, 1024, 1025]

INCLUSION_CASES = [
    (0, 1),
    (0, 2),
    (1, 2),
    (0, 3),
    (2, 3),
    (4, 5),
    (3, 7),
    (6, 7),
    (5, 8),
    (0, 13),
    (9, 13),
    (12, 13),
    (31, 33),
    (32, 33),
    (0, 100),
    (64, 100),
    (99, 100),
    (500, 1000),
    (999, 1000),
    (1024, 1025),
]

# (index, size) of the inclusion cases that are also mutated into must-fail cases
MUTATED_INCLUSION_CASES = [(5, 8), (9, 13), (64, 100)]

TREE_CASES = [
    (0, 1),
    (1, 1),
    (0, 2),
    (1, 2),
    (2, 2),
    (0, 3),
    (2, 3),
    (3, 3),
    (4, 5),
    (5, 5),
    (0, 7),
    (3, 7),
    (6, 7),
    (7, 7),
    (8, 13),
    (11, 13),
    (13, 13),
    (32, 33),
    (33, 33),
    (0, 40),
    (21, 40),
    (64, 100),
    (99, 100),
    (100, 100),
    (1000, 1025),
    (1025, 1025),
]


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def leaf(i: int) -> bytes:
    return sha256(str(i).encode("ascii"))


def leaves(n: int) -> list[bytes]:
    return [leaf(i) for i in range(n)]


def naive_levels(level0: list[bytes]) -> list[list[bytes]]:
    """All levels of the tree, leaves first, root level (one node) last."""
    levels = [list(level0)]
    while len(levels[-1]) > 1:
        cur = levels[-1]
        nxt = [sha256(cur[i] + cur[i + 1]) if i + 1 < len(cur) else cur[i] for i in range(0, len(cur), 2)]
        levels.append(nxt)
    return levels


def naive_root(level0: list[bytes]) -> bytes:
    return naive_levels(level0)[-1][0]


def naive_path(level0: list[bytes], index: int) -> list[tuple[bool, bytes]]:
    """Inclusion path as in ccf-ledger-format.md §4.4: (sibling_is_left, sibling) leaf to root."""
    path = []
    for level in naive_levels(level0)[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            path.append((sibling < index, level[sibling]))
        index //= 2
    return path


def fold(leaf_hash: bytes, path: list[tuple[bool, bytes]]) -> bytes:
    acc = leaf_hash
    for is_left, sibling in path:
        acc = sha256(sibling + acc) if is_left else sha256(acc + sibling)
    return acc


def flushed_peaks(level0: list[bytes], flushed: int) -> list[bytes]:
    """Roots of the perfect subtrees on the left edge of the first ``flushed`` leaves, largest first."""
    peaks, lo = [], 0
    for bit in range(flushed.bit_length() - 1, -1, -1):
        if flushed >> bit & 1:
            peaks.append(naive_root(level0[lo : lo + (1 << bit)]))
            lo += 1 << bit
    return peaks


def serialise(level0: list[bytes], flushed: int) -> bytes:
    """``public:ccf.internal.tree`` (ccf-ledger-format.md §4.6): big-endian header, leaves, roots."""
    unflushed = level0[flushed:]
    out = len(unflushed).to_bytes(8, "big") + flushed.to_bytes(8, "big")
    out += b"".join(unflushed)
    out += b"".join(reversed(flushed_peaks(level0, flushed)))  # lowest set bit first
    return out


def _path_json(path: list[tuple[bool, bytes]]) -> list[dict[str, str]]:
    return [{"left": h.hex()} if is_left else {"right": h.hex()} for is_left, h in path]


def _flip_bit(h: bytes, byte: int, bit: int) -> bytes:
    b = bytearray(h)
    b[byte] ^= 1 << bit
    return bytes(b)


def roots_doc() -> dict[str, Any]:
    cases = []
    for n in ROOT_SIZES:
        cases.append(
            {
                "desc": f"root over leaves 0..{n - 1} ({n} leaves)",
                "size": n,
                "root": naive_root(leaves(n)).hex(),
            }
        )
    return {
        "desc": "Merkle roots over the first `size` leaves",
        "tree": TREE_RULE,
        "leaves": LEAF_RULE,
        "cases": cases,
    }


def inclusion_doc() -> dict[str, Any]:
    cases: list[dict[str, Any]] = []
    for index, size in INCLUSION_CASES:
        lv = leaves(size)
        path = naive_path(lv, index)
        root = naive_root(lv)
        assert fold(lv[index], path) == root
        cases.append(
            {
                "desc": f"happy-path: leaf {index} in a tree of {size} leaves",
                "index": index,
                "size": size,
                "leaf": lv[index].hex(),
                "path": _path_json(path),
                "root": root.hex(),
                "wantErr": False,
            }
        )
    for index, size in MUTATED_INCLUSION_CASES:
        lv = leaves(size)
        path = naive_path(lv, index)
        root = naive_root(lv)
        mutations: list[tuple[str, bytes, list[tuple[bool, bytes]]]] = [
            ("wrong-leaf", leaf(size + 1), path),
            ("neighbour-leaf", lv[index ^ 1], path),
            ("truncated-proof", lv[index], path[:-1]),
            ("extended-proof", lv[index], [*path, (False, lv[0])]),
            ("reversed-proof", lv[index], path[::-1]),
            ("modified-proof[0]-bit-@3", lv[index], [(path[0][0], _flip_bit(path[0][1], 0, 3)), *path[1:]]),
            (
                f"modified-proof[{len(path) - 1}]-bit-@255",
                lv[index],
                [*path[:-1], (path[-1][0], _flip_bit(path[-1][1], 31, 7))],
            ),
            ("flipped-side[0]", lv[index], [(not path[0][0], path[0][1]), *path[1:]]),
        ]
        for name, leaf_hash, bad_path in mutations:
            assert fold(leaf_hash, bad_path) != root
            cases.append(
                {
                    "desc": f"{name}: leaf {index} in a tree of {size} leaves; folding must not give the root",
                    "index": index,
                    "size": size,
                    "leaf": leaf_hash.hex(),
                    "path": _path_json(bad_path),
                    "root": root.hex(),
                    "wantErr": True,
                }
            )
    return {
        "desc": (
            "Inclusion paths, leaf to root; fold {'left': h} as SHA-256(h || acc) and "
            "{'right': h} as SHA-256(acc || h). wantErr: folding `path` from `leaf` must not give `root`"
        ),
        "tree": TREE_RULE,
        "leaves": LEAF_RULE,
        "cases": cases,
    }


def tree_doc() -> dict[str, Any]:
    cases: list[dict[str, Any]] = []
    for flushed, size in TREE_CASES:
        lv = leaves(size)
        cases.append(
            {
                "desc": f"happy-path: {size} leaves, the first {flushed} flushed",
                "flushed": flushed,
                "size": size,
                "serialised": serialise(lv, flushed).hex(),
                "root": naive_root(lv).hex(),
                "wantErr": False,
            }
        )
    good = serialise(leaves(13), 8)
    header = good[:16]
    body = good[16:]
    bad: list[tuple[str, bytes]] = [
        ("empty", b""),
        ("short-header", header[:15]),
        ("header-only-empty-tree", bytes(16)),
        ("truncated-by-one-byte", good[:-1]),
        ("truncated-by-one-hash", good[:-32]),
        ("trailing-garbage-byte", good + b"\x00"),
        ("trailing-garbage-hash", good + bytes(32)),
        ("header-leaves-plus-one", (5 + 1).to_bytes(8, "big") + (8).to_bytes(8, "big") + body),
        ("header-flushed-9", (5).to_bytes(8, "big") + (9).to_bytes(8, "big") + body),
        ("little-endian-header", (5).to_bytes(8, "little") + (8).to_bytes(8, "little") + body),
        ("huge-leaf-count", b"\xff" * 8 + (8).to_bytes(8, "big") + body),
    ]
    for name, data in bad:
        cases.append(
            {
                "desc": f"{name}: malformed serialised tree (derived from 13 leaves, 8 flushed)",
                "serialised": data.hex(),
                "wantErr": True,
            }
        )
    return {
        "desc": (
            "Serialised trees (public:ccf.internal.tree, ccf-ledger-format.md §4.6): big-endian "
            "uint64 num_leaf_nodes, uint64 num_flushed, the unflushed leaves, then one root per set "
            "bit of num_flushed, lowest bit first. Deserialising gives (size, root); wantErr: "
            "the bytes must be rejected"
        ),
        "tree": TREE_RULE,
        "leaves": LEAF_RULE,
        "cases": cases,
    }


def generate() -> dict[str, str]:
    """File name -> exact file text."""
    docs = {"roots.json": roots_doc(), "inclusion.json": inclusion_doc(), "tree.json": tree_doc()}
    return {name: json.dumps(doc, indent=2, ensure_ascii=False) + "\n" for name, doc in docs.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output directory")
    args = parser.parse_args(argv)
    files = generate()
    if args.check:
        stale = [n for n, t in files.items() if not (args.out / n).is_file() or (args.out / n).read_text("utf-8") != t]
        for name in stale:
            print(f"stale: {args.out / name}", file=sys.stderr)
        return 1 if stale else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.out / name).write_text(text, "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
