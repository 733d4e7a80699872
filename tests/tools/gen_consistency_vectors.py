"""Generate the consistency-proof test vectors in ``tests/unit/verify/vectors/consistency/``.

Consistency proofs are those of RFC 9162 §2.1.4 over CCF's Merkle tree (ccf-ledger-format.md §4):
internal node = SHA-256(left ‖ right) with no domain-separation prefixes, the RFC 9162 shape
(split at the largest power of two strictly below the size). This generator uses its own naive,
recursive implementation of RFC 9162's PROOF/SUBPROOF definition and of a verifier, and only the
standard library, so the vectors are independent of ``notarium.verify.consistency``.

Leaves are those of the Merkle vectors: ``leaf[i] = SHA-256(ASCII decimal i)``.

Usage::

    python tests/tools/gen_consistency_vectors.py           # (re)write the vector file
    python tests/tools/gen_consistency_vectors.py --check   # exit 1 if the committed file differs

The output is deterministic; ``tests/unit/verify/test_consistency.py`` checks that regenerating
gives exactly the committed file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from functools import cache
from pathlib import Path
from typing import Any

OUT_DIR = Path(__file__).resolve().parent.parent / "unit" / "verify" / "vectors" / "consistency"

LEAF_RULE = "leaf[i] = SHA-256(ASCII decimal string of i), e.g. leaf[0] = SHA-256(b'0')"
TREE_RULE = (
    "CCF Merkle tree (ccf-ledger-format.md §4): node = SHA-256(left || right), no prefixes; "
    "RFC 9162 shape: a tree of n > 1 leaves splits at the largest power of two k < n"
)
PROOF_RULE = (
    "RFC 9162 §2.1.4.1 PROOF(m, D[n]) = SUBPROOF(m, D[n], true), with SUBPROOF(m, D[m], true) = [], "
    "SUBPROOF(m, D[m], false) = [MTH(D[m])], and for m < n: SUBPROOF(m, D[0:k], b) + [MTH(D[k:n])] "
    "if m <= k, else SUBPROOF(m - k, D[k:n], false) + [MTH(D[0:k])]"
)

PAIRS = [
    (1, 1),
    (1, 2),
    (2, 2),
    (1, 3),
    (2, 3),
    (1, 4),
    (3, 4),
    (2, 5),
    (4, 5),
    (3, 7),
    (4, 7),
    (6, 7),
    (6, 8),
    (7, 8),
    (5, 13),
    (7, 13),
    (8, 13),
    (12, 13),
    (16, 17),
    (31, 64),
    (63, 64),
    (33, 65),
    (64, 100),
    (99, 100),
    (100, 100),
    (1, 1025),
    (255, 257),
    (1000, 1025),
    (1024, 1025),
]

# (m, n) of the cases that are also mutated into must-fail cases
MUTATED_PAIRS = [(3, 7), (4, 7), (6, 8), (8, 13), (64, 100), (255, 257)]


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@cache
def leaf(i: int) -> bytes:
    return sha256(str(i).encode("ascii"))


def split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


@cache
def mth(lo: int, hi: int) -> bytes:
    """RFC 9162 MTH(D[lo:hi]) with CCF hashing, by recursion over the leaves."""
    if hi - lo == 1:
        return leaf(lo)
    k = split(hi - lo)
    return sha256(mth(lo, lo + k) + mth(lo + k, hi))


def subproof(m: int, lo: int, hi: int, b: bool) -> list[bytes]:
    n = hi - lo
    if m == n:
        return [] if b else [mth(lo, hi)]
    k = split(n)
    if m <= k:
        return [*subproof(m, lo, lo + k, b), mth(lo + k, hi)]
    return [*subproof(m - k, lo + k, hi, False), mth(lo, lo + k)]


def proof(m: int, n: int) -> list[bytes]:
    return subproof(m, 0, n, True)


def naive_verify(m: int, old: bytes, n: int, new: bytes, nodes: list[bytes]) -> bool:
    """Rebuild both roots by following SUBPROOF's recursion, taking the proof's nodes from the end."""
    if not 0 < m <= n or any(len(x) != 32 for x in [old, new, *nodes]):
        return False
    rest = list(nodes)

    def walk(m: int, size: int, b: bool) -> tuple[bytes, bytes]:
        if m == size:
            if b:
                return old, old
            node = rest.pop()
            return node, node
        k = split(size)
        sibling = rest.pop()
        if m <= k:
            o, w = walk(m, k, b)
            return o, sha256(w + sibling)
        o, w = walk(m - k, size - k, False)
        return sha256(sibling + o), sha256(sibling + w)

    try:
        o, w = walk(m, n, True)
    except IndexError:  # too short
        return False
    return not rest and o == old and w == new


def _flip_bit(h: bytes, byte: int, bit: int) -> bytes:
    b = bytearray(h)
    b[byte] ^= 1 << bit
    return bytes(b)


def _case(desc: str, m: int, n: int, old: bytes, new: bytes, nodes: list[bytes], want_err: bool) -> dict[str, Any]:
    assert naive_verify(m, old, n, new, nodes) != want_err, desc
    return {
        "desc": desc,
        "m": m,
        "n": n,
        "oldRoot": old.hex(),
        "newRoot": new.hex(),
        "proof": [x.hex() for x in nodes],
        "wantErr": want_err,
    }


def consistency_doc() -> dict[str, Any]:
    cases: list[dict[str, Any]] = []
    for m, n in PAIRS:
        cases.append(
            _case(f"happy-path: from {m} to {n} leaves", m, n, mth(0, m), mth(0, n), proof(m, n), want_err=False)
        )
    for m, n in MUTATED_PAIRS:
        old, new, p = mth(0, m), mth(0, n), proof(m, n)
        last = len(p) - 1
        mutations: list[tuple[str, int, bytes, int, bytes, list[bytes]]] = [
            ("modified-proof[0]-bit-@3", m, old, n, new, [_flip_bit(p[0], 0, 3), *p[1:]]),
            (f"modified-proof[{last}]-bit-@255", m, old, n, new, [*p[:-1], _flip_bit(p[-1], 31, 7)]),
            ("wrong-old-root", m, _flip_bit(old, 5, 0), n, new, p),
            ("wrong-new-root", m, old, n, _flip_bit(new, 5, 0), p),
            ("old-root-of-other-size", m, mth(0, m - 1) if m > 1 else mth(0, 2), n, new, p),
            ("truncated-proof", m, old, n, new, p[:-1]),
            ("extended-proof", m, old, n, new, [*p, leaf(0)]),
            ("prepended-proof", m, old, n, new, [old, *p]),
            ("reversed-proof", m, old, n, new, p[::-1]),
            ("empty-proof", m, old, n, new, []),
            ("old-size-plus-one", m + 1, old, n, new, p),
            ("new-size-doubled", m, old, 2 * n, new, p),
            ("swapped-sizes", n, new, m, old, p),
            ("same-size-nonempty-proof", n, new, n, new, [new]),
            ("same-size-other-root", n, new, n, _flip_bit(new, 0, 0), []),
        ]
        for name, mm, o, nn, w, nodes in mutations:
            if (mm, o, nn, w, nodes) == (m, old, n, new, p):
                continue  # e.g. reversing a proof of one node: not a mutation
            cases.append(
                _case(f"{name}: derived from {m} to {n} leaves; must be rejected", mm, nn, o, w, nodes, want_err=True)
            )
    return {
        "desc": (
            "Consistency proofs (RFC 9162 §2.1.4) from the tree of the first m leaves (oldRoot) to the "
            "tree of the first n leaves (newRoot); proof nodes in RFC 9162 order. wantErr: verifying "
            "`proof` between (m, oldRoot) and (n, newRoot) must fail"
        ),
        "tree": TREE_RULE,
        "leaves": LEAF_RULE,
        "proof": PROOF_RULE,
        "cases": cases,
    }


def generate() -> dict[str, str]:
    """File name -> exact file text."""
    docs = {"consistency.json": consistency_doc()}
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
