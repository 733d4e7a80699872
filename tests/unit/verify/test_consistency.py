"""notarium.verify.consistency: consistency proofs, signed roots, and ledger extension.

- The committed vectors (tests/unit/verify/vectors/consistency/, written by tests/tools/gen_consistency_vectors.py
  from its own naive implementation) are exactly what the generator writes, and the code agrees.
- Every size pair 1 ≤ m ≤ n ≤ 300: the generated proof equals a naive recursive reference (RFC 9162
  SUBPROOF over roots computed by recursion over the leaves) and verifies; tampering any node, a
  wrong old or new root, a truncated or extended proof are all rejected.
- Large trees (up to 2**48 leaves, mostly identical leaves) with hypothesis, and garbage input.
- Signed roots: JSON form (strict), COSE verification, and ``verify_extension`` (fork, rollback).
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import importlib.util
import json
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from notarium.errors import VerificationError
from notarium.ledger import signing
from notarium.ledger.merkle import consistency_proof
from notarium.ledger.signing import cose_root_protected_header
from notarium.types import TxId
from notarium.verify import (
    SignedRoot,
    cose,
    proof_from_json,
    proof_to_json,
    verify_consistency,
    verify_extension,
    verify_signed_root,
)
from notarium.verify.consistency import MAX_CONSISTENCY_PROOF

if TYPE_CHECKING:
    from conftest import Identity, Pki

TESTS = Path(__file__).resolve().parents[2]
VECTOR_DIR = TESTS / "unit" / "verify" / "vectors" / "consistency"
GENERATOR = TESTS / "tools" / "gen_consistency_vectors.py"


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def flip(h: bytes, byte: int = 0, bit: int = 0) -> bytes:
    b = bytearray(h)
    b[byte] ^= 1 << bit
    return bytes(b)


def split(n: int) -> int:
    """Largest power of two strictly below n (n ≥ 2), computed without bit tricks."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


class WrongCheckError(Exception):
    """verify_consistency refused with another check name than "consistency"."""


def rejects(m: Any, old: Any, n: Any, new: Any, proof: Any) -> bool:
    """True if verify_consistency refuses (with check="consistency"); other exceptions propagate."""
    try:
        verify_consistency(m, old, n, new, proof)
    except VerificationError as exc:
        if exc.check != "consistency":
            raise WrongCheckError(exc.check) from exc
        return True
    return False


# ====================================================================================================
# the vectors
# ====================================================================================================


@cache
def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("notarium_tests_gen_consistency_vectors", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@cache
def vector_doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((VECTOR_DIR / "consistency.json").read_text("utf-8"))
    return doc


def vector_cases(*, want_err: bool) -> list[Any]:
    selected = [c for c in vector_doc()["cases"] if c["wantErr"] == want_err]
    return [pytest.param(c, id=c["desc"].split(":")[0] + f"-{c['m']}-{c['n']}-{i}") for i, c in enumerate(selected)]


def test_regenerating_gives_the_committed_file() -> None:
    files = generator().generate()
    assert sorted(files) == sorted(p.name for p in VECTOR_DIR.glob("*.json"))
    for name, text in files.items():
        assert (VECTOR_DIR / name).read_text("utf-8") == text, f"{name} is stale: run {GENERATOR}"


def test_generator_check_mode(tmp_path: Path) -> None:
    gen = generator()
    assert gen.main(["--check"]) == 0
    assert gen.main(["--check", "--out", str(tmp_path)]) == 1
    assert gen.main(["--out", str(tmp_path)]) == 0
    assert gen.main(["--check", "--out", str(tmp_path)]) == 0


def test_vectors_are_small_and_cover_both_outcomes() -> None:
    assert (VECTOR_DIR / "consistency.json").stat().st_size < 200_000
    doc = vector_doc()
    assert doc["desc"]
    assert all(c["desc"] for c in doc["cases"])
    names = {c["desc"].split(":")[0] for c in doc["cases"]}
    assert {"happy-path", "truncated-proof", "extended-proof", "wrong-old-root", "wrong-new-root"} <= names
    assert sum(c["wantErr"] for c in doc["cases"]) > 50


@pytest.mark.parametrize("case", vector_cases(want_err=False))
def test_vector_proofs(case: dict[str, Any]) -> None:
    m, n = case["m"], case["n"]
    leaves = [generator().leaf(i) for i in range(n)]

    def perfect(lo: int, size: int) -> bytes:
        level = leaves[lo : lo + size]
        while len(level) > 1:
            level = [sha256(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
        return level[0]

    proof = [bytes.fromhex(x) for x in case["proof"]]
    assert consistency_proof(m, n, perfect) == proof
    verify_consistency(m, bytes.fromhex(case["oldRoot"]), n, bytes.fromhex(case["newRoot"]), proof)
    assert proof_from_json(case["proof"]) == proof
    assert proof_to_json(proof) == case["proof"]


@pytest.mark.parametrize("case", vector_cases(want_err=True))
def test_vector_mutations_are_rejected(case: dict[str, Any]) -> None:
    proof = [bytes.fromhex(x) for x in case["proof"]]
    assert rejects(case["m"], bytes.fromhex(case["oldRoot"]), case["n"], bytes.fromhex(case["newRoot"]), proof)


# ====================================================================================================
# every size pair up to 300, against a naive reference
# ====================================================================================================

N = 300
LEAVES = [sha256(b"leaf %d" % i) for i in range(N)]
PERFECT: dict[tuple[int, int], bytes] = {(i, 1): leaf for i, leaf in enumerate(LEAVES)}
_size = 2
while _size <= N:
    for _lo in range(0, N - _size + 1, _size):
        half = _size // 2
        PERFECT[(_lo, _size)] = sha256(PERFECT[(_lo, half)] + PERFECT[(_lo + half, half)])
    _size *= 2


def perfect_root(lo: int, size: int) -> bytes:
    return PERFECT[(lo, size)]


@cache
def mth(lo: int, hi: int) -> bytes:
    """Root of LEAVES[lo:hi] by recursion over the leaves (RFC 9162 MTH, CCF hashing)."""
    if hi - lo == 1:
        return LEAVES[lo]
    k = split(hi - lo)
    return sha256(mth(lo, lo + k) + mth(lo + k, hi))


ROOTS = [b""] + [mth(0, n) for n in range(1, N + 1)]


def reference_proof(m: int, n: int, root: Callable[[int, int], bytes] = mth) -> list[bytes]:
    """RFC 9162 §2.1.4.1 PROOF(m, D[n]), literally."""

    def sub(m: int, lo: int, hi: int, b: bool) -> list[bytes]:
        if m == hi - lo:
            return [] if b else [root(lo, hi)]
        k = split(hi - lo)
        if m <= k:
            return [*sub(m, lo, lo + k, b), root(lo + k, hi)]
        return [*sub(m - k, lo + k, hi, False), root(lo, lo + k)]

    return sub(m, 0, n, True)


@cache
def all_proofs() -> dict[tuple[int, int], list[bytes]]:
    return {(m, n): consistency_proof(m, n, perfect_root) for n in range(1, N + 1) for m in range(1, n + 1)}


def test_roots_agree_with_the_merkle_module() -> None:
    from notarium.ledger.merkle import root_of

    for n in (1, 2, 3, 5, 8, 13, 100, 255, 256, 257, 300):
        assert root_of(LEAVES[:n]) == ROOTS[n]


def test_every_pair_matches_the_reference_and_verifies() -> None:
    proofs = all_proofs()
    assert len(proofs) == N * (N + 1) // 2
    for (m, n), proof in proofs.items():
        assert proof == reference_proof(m, n), (m, n)
        verify_consistency(m, ROOTS[m], n, ROOTS[n], proof)
        if m == n:
            assert proof == []
        else:
            assert 1 <= len(proof) <= 2 * (n - 1).bit_length()


def test_every_pair_rejects_tampering() -> None:
    """Every pair: a tampered node (every node for n ≤ 128, one rotating node above), a wrong old
    root, a wrong new root, a truncated proof, an extended proof."""
    problems = []
    for (m, n), proof in all_proofs().items():
        old, new = ROOTS[m], ROOTS[n]
        positions = range(len(proof)) if n <= 128 else ([(7 * m + n) % len(proof)] if proof else [])
        for i in positions:
            bad = [*proof[:i], flip(proof[i], i % 32, (m + n) % 8), *proof[i + 1 :]]
            if not rejects(m, old, n, new, bad):
                problems.append(f"{m}->{n}: tampered node {i} accepted")
        for name, args in (
            ("wrong old root", (m, flip(old, 31, 7), n, new, proof)),
            ("wrong new root", (m, old, n, flip(new, 31, 7), proof)),
            ("extended", (m, old, n, new, [*proof, LEAVES[m - 1]])),
        ):
            if not rejects(*args):
                problems.append(f"{m}->{n}: {name} accepted")
        if proof and not rejects(m, old, n, new, proof[:-1]):
            problems.append(f"{m}->{n}: truncated accepted")
        if m < n and not rejects(m, ROOTS[m - 1] if m > 1 else ROOTS[2], n, new, proof):
            problems.append(f"{m}->{n}: another tree's root accepted")
    assert not problems, problems[:20]


def test_same_size() -> None:
    for n in (1, 2, 7, 64):
        assert consistency_proof(n, n, perfect_root) == []
        verify_consistency(n, ROOTS[n], n, ROOTS[n], [])
        assert rejects(n, ROOTS[n], n, flip(ROOTS[n]), [])
        assert rejects(n, ROOTS[n], n, ROOTS[n], [ROOTS[n]])


def test_a_proof_between_other_trees_fails() -> None:
    assert rejects(3, ROOTS[3], 9, ROOTS[9], all_proofs()[(3, 8)])
    assert rejects(5, ROOTS[5], 9, ROOTS[9], all_proofs()[(4, 9)])
    assert rejects(9, ROOTS[9], 3, ROOTS[3], all_proofs()[(3, 9)])  # sizes swapped
    assert rejects(3, ROOTS[3], 9, ROOTS[9], [])


# ====================================================================================================
# input validation
# ====================================================================================================


@pytest.mark.parametrize(
    ("m", "n"),
    [(0, 1), (0, 0), (2, 1), (-1, 3), (True, 2), (1, 2.0), ("1", 2)],
)
def test_generation_needs_0_lt_m_le_n(m: Any, n: Any) -> None:
    with pytest.raises(ValueError, match="0 < m <= n"):
        consistency_proof(m, n, perfect_root)


GOOD = (3, ROOTS[3], 7, ROOTS[7], consistency_proof(3, 7, perfect_root))


@pytest.mark.parametrize(
    ("index", "value"),
    [
        (0, 0),
        (0, -3),
        (0, True),
        (0, 3.0),
        (0, "3"),
        (0, 8),  # m > n
        (2, 2),  # n < m
        (2, 1 << 63),  # beyond any seqno
        (1, ROOTS[3][:31]),
        (1, ROOTS[3] + b"\x00"),
        (1, ROOTS[3].hex()),
        (1, bytearray(ROOTS[3])),
        (3, ROOTS[7][:-1]),
        (3, None),
        (4, b"".join(consistency_proof(3, 7, perfect_root))),  # bytes, not a sequence of nodes
        (4, "ab" * 32),
        (4, None),
        (4, [*consistency_proof(3, 7, perfect_root)[:-1], consistency_proof(3, 7, perfect_root)[-1][:31]]),
        (4, [*consistency_proof(3, 7, perfect_root)[:-1], consistency_proof(3, 7, perfect_root)[-1].hex()]),
        (4, [ROOTS[1]] * (MAX_CONSISTENCY_PROOF + 1)),
    ],
)
def test_malformed_input_is_rejected(index: int, value: Any) -> None:
    verify_consistency(*GOOD)
    args = list(GOOD)
    args[index] = value
    assert rejects(*args)


def test_proof_json() -> None:
    proof = all_proofs()[(5, 13)]
    text = proof_to_json(proof)
    assert all(len(x) == 64 and x == x.lower() for x in text)
    assert proof_from_json(text) == proof
    assert proof_from_json([]) == []
    for bad in (
        None,
        "ab",
        {"0": text[0]},
        [text[0].upper()],
        [text[0][:-2]],
        [text[0] + "00"],
        ["zz" * 32],
        [1],
        [text[0]] * (MAX_CONSISTENCY_PROOF + 1),
    ):
        with pytest.raises(VerificationError) as info:
            proof_from_json(bad)
        assert info.value.check == "consistency"


# ====================================================================================================
# large trees, with hypothesis
# ====================================================================================================

FILL = sha256(b"fill")


class SparseTree:
    """A tree of up to 2**48 leaves: every leaf is FILL but a few marked ones. Roots are exact
    (computed by recursion that stops at ranges of FILL only, whose roots depend only on the size)."""

    def __init__(self, marked: Sequence[int]) -> None:
        self.marked = sorted(set(marked))
        self._memo: dict[tuple[int, int], bytes] = {}

    @staticmethod
    @cache
    def uniform(size: int) -> bytes:
        if size == 1:
            return FILL
        k = split(size)
        return sha256(SparseTree.uniform(k) + SparseTree.uniform(size - k))

    def leaf(self, i: int) -> bytes:
        return sha256(b"marked %d" % i) if i in self.marked else FILL

    def root(self, lo: int, hi: int) -> bytes:
        i = bisect.bisect_left(self.marked, lo)
        if i == len(self.marked) or self.marked[i] >= hi:
            return SparseTree.uniform(hi - lo)
        if hi - lo == 1:
            return self.leaf(lo)
        key = (lo, hi)
        if key not in self._memo:
            k = split(hi - lo)
            self._memo[key] = sha256(self.root(lo, lo + k) + self.root(lo + k, hi))
        return self._memo[key]

    def perfect(self, lo: int, size: int) -> bytes:
        assert size & (size - 1) == 0, size
        assert lo % size == 0, (lo, size)
        return self.root(lo, lo + size)


@st.composite
def large_pairs(draw: st.DrawFn) -> tuple[int, int, SparseTree]:
    n = draw(st.one_of(st.integers(1, 2**48), st.integers(2**20 - 3, 2**20 + 3), st.integers(1, 2000)))
    m = draw(st.one_of(st.integers(1, n), st.sampled_from([1, n, max(1, n - 1), max(1, n // 2)])))
    marked = draw(st.lists(st.integers(0, n - 1), max_size=6))
    if draw(st.booleans()):
        marked.append(m - 1)  # the old tree's last leaf is one of a kind
    return m, n, SparseTree(marked)


@settings(max_examples=300, deadline=None)
@given(large_pairs(), st.data())
def test_large_trees(pair: tuple[int, int, SparseTree], data: st.DataObject) -> None:
    m, n, tree = pair
    old, new = tree.root(0, m), tree.root(0, n)
    proof = consistency_proof(m, n, tree.perfect)
    assert proof == reference_proof(m, n, tree.root)
    assert len(proof) <= MAX_CONSISTENCY_PROOF
    verify_consistency(m, old, n, new, proof)
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1))
        assert rejects(m, old, n, new, [*proof[:i], flip(proof[i], data.draw(st.integers(0, 31))), *proof[i + 1 :]])
        assert rejects(m, old, n, new, proof[:i] + proof[i + 1 :])
    assert rejects(m, old, n, new, [*proof, FILL])
    assert rejects(m, flip(old), n, new, proof)
    assert rejects(m, old, n, flip(new), proof)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(st.integers(-2, 70), st.integers(), st.booleans(), st.none()),
    st.binary(min_size=0, max_size=40),
    st.one_of(st.integers(-2, 70), st.integers(), st.floats()),
    st.binary(min_size=30, max_size=33),
    st.lists(st.one_of(st.binary(min_size=31, max_size=33), st.text(max_size=3), st.integers()), max_size=10),
)
def test_garbage_is_only_ever_a_verification_error(m: Any, old: Any, n: Any, new: Any, proof: Any) -> None:
    rejects(m, old, n, new, proof)  # passing or refusing are both fine; any other exception fails the test


# ====================================================================================================
# signed roots
# ====================================================================================================


def make_signed_root(
    service: Identity,
    txid: TxId,
    root: bytes,
    *,
    header_txid: TxId | None = None,
    protected: bytes | None = None,
) -> SignedRoot:
    key = service.key
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    if protected is None:
        protected = cose_root_protected_header(
            key.public_key(), header_txid or txid, iat=1_700_000_000, issuer="test", subject="ledger.signature"
        )
    signature = signing.encode_sign1(protected, {}, signing.sign_detached(key, protected, root))
    return SignedRoot(txid, root, signature)


def signed_at(service: Identity, seqno: int, view: int = 2) -> SignedRoot:
    """The signed root of a signature transaction at ``seqno`` over LEAVES (tree size seqno)."""
    return make_signed_root(service, TxId(view, seqno), ROOTS[seqno])


def test_signed_root_json(service: Identity) -> None:
    sr = signed_at(service, 17)
    obj = sr.to_json()
    assert set(obj) == {"transactionId", "treeSize", "root", "signature"}
    assert obj["transactionId"] == "2.17"
    assert obj["treeSize"] == 17 == sr.tree_size
    assert obj["root"] == ROOTS[17].hex()
    assert base64.b64decode(obj["signature"]) == sr.signature
    assert SignedRoot.from_json(json.loads(json.dumps(obj))) == sr
    verify_signed_root(SignedRoot.from_json(obj), service.cert)


def _with(obj: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = {**obj, **changes}
    return {k: v for k, v in out.items() if v is not _DROP}


_DROP = object()


@pytest.mark.parametrize(
    "changes",
    [
        {"transactionId": _DROP},
        {"treeSize": _DROP},
        {"root": _DROP},
        {"signature": _DROP},
        {"extra": 1},
        {"transactionId": 17},
        {"transactionId": "2.017"},
        {"transactionId": "2"},
        {"transactionId": "2.18"},  # treeSize is 17
        {"transactionId": "2.0", "treeSize": 0},
        {"treeSize": "17"},
        {"treeSize": 17.0},
        {"treeSize": True},
        {"treeSize": 16},
        {"root": ROOTS[17].hex().upper()},
        {"root": ROOTS[17].hex()[:-2]},
        {"root": ROOTS[17].hex() + "00"},
        {"root": "zz" * 32},
        {"root": None},
        {"signature": ""},
        {"signature": "not base64!"},
        {"signature": base64.b64encode(b"not cbor at all").decode()},
        {"signature": base64.b64encode(cbor2.dumps([1, 2, 3, 4])).decode()},
        {"signature": 5},
    ],
    ids=lambda c: ",".join(f"{k}={'DROP' if v is _DROP else repr(v)[:20]}" for k, v in c.items()),
)
def test_signed_root_from_json_is_strict(service: Identity, changes: dict[str, Any]) -> None:
    obj = _with(signed_at(service, 17).to_json(), **changes)
    with pytest.raises(VerificationError) as info:
        SignedRoot.from_json(obj)
    assert info.value.check == "signed-root"


@pytest.mark.parametrize("obj", [None, [], "x", 17])
def test_signed_root_from_json_needs_an_object(obj: Any) -> None:
    with pytest.raises(VerificationError):
        SignedRoot.from_json(obj)


def test_signed_root_construction_checks_its_fields() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        SignedRoot(TxId(2, 5), b"\x00" * 31, b"sig")
    with pytest.raises(ValueError, match="seqno"):
        SignedRoot(TxId(2, 0), ROOTS[1], b"sig")
    with pytest.raises(ValueError, match="signature"):
        SignedRoot(TxId(2, 5), ROOTS[5], b"")


def _refused(sr: SignedRoot, cert: Any) -> str:
    with pytest.raises(VerificationError) as info:
        verify_signed_root(sr, cert)
    assert info.value.check == "signed-root"
    return str(info.value)


def test_verify_signed_root(pki: Pki, service: Identity, rsa_key: Any) -> None:
    sr = signed_at(service, 40)
    verify_signed_root(sr, service.cert)
    # another root, another txid, a header naming another txid
    assert "does not verify" in _refused(SignedRoot(sr.txid, ROOTS[39], sr.signature), service.cert)
    assert "2.41" in _refused(SignedRoot(TxId(2, 41), sr.root, sr.signature), service.cert)
    assert "ccf.v1.txid" in _refused(
        make_signed_root(service, TxId(2, 40), ROOTS[40], header_txid=TxId(3, 40)), service.cert
    )
    # another service (a forger's key) and a node key of this service
    other = pki.service()
    assert "kid" in _refused(sr, other.cert)
    assert "kid" in _refused(make_signed_root(other, TxId(2, 40), ROOTS[40]), service.cert)
    node = pki.node(service)
    assert "kid" in _refused(make_signed_root(node, TxId(2, 40), ROOTS[40]), service.cert)
    # a service certificate without an EC key
    rsa_service = pki.service(key=rsa_key)
    assert "elliptic-curve" in _refused(sr, rsa_service.cert)


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1()], ids=lambda c: c.name)
def test_every_supported_curve(pki: Pki, curve: ec.EllipticCurve) -> None:
    svc = pki.service(curve)
    verify_signed_root(make_signed_root(svc, TxId(1, 9), ROOTS[9]), svc.cert)


def test_weak_or_mismatched_algorithms_are_refused(pki: Pki, service: Identity) -> None:
    key = service.key
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    good = cbor2.loads(cose_root_protected_header(key.public_key(), TxId(2, 9), iat=1, issuer="i", subject="s"))
    for alg in (-7, -36, -37, -257, -8, 0, None, "ES384"):  # other curves' algs, RSA-PSS, RSA, EdDSA, junk
        header = {**good, cose.HDR_ALG: alg} if alg is not None else {k: v for k, v in good.items() if k != 1}
        protected = cbor2.dumps(header)
        signature = signing.encode_sign1(protected, {}, signing.sign_detached(key, protected, ROOTS[9]))
        _refused(SignedRoot(TxId(2, 9), ROOTS[9], signature), service.cert)
    # a P-256 signature by a P-256 service is fine; the same bytes against a P-384 service are not
    weak = pki.service(ec.SECP256R1())
    sr = make_signed_root(weak, TxId(2, 9), ROOTS[9])
    verify_signed_root(sr, weak.cert)
    _refused(sr, service.cert)


def test_a_signature_that_is_not_a_sign1(service: Identity) -> None:
    _refused(SignedRoot(TxId(2, 9), ROOTS[9], b"\xa0"), service.cert)
    _refused(SignedRoot(TxId(2, 9), ROOTS[9], cbor2.dumps(cbor2.CBORTag(18, [b"", {}, ROOTS[9], b""]))), service.cert)


# ====================================================================================================
# verify_extension
# ====================================================================================================


def _extension_refused(old: SignedRoot, new: SignedRoot, proof: Sequence[bytes], cert: Any) -> str:
    with pytest.raises(VerificationError) as info:
        verify_extension(old, new, proof, cert)
    return info.value.check


def test_extension_between_many_sizes(service: Identity) -> None:
    sizes = [1, 2, 3, 7, 8, 9, 100, 255, 256, 300]
    roots = {s: signed_at(service, s) for s in sizes}
    for i, m in enumerate(sizes):
        for n in sizes[i:]:
            verify_extension(roots[m], roots[n], all_proofs()[(m, n)], service.cert)


def test_extension_failures(pki: Pki, service: Identity) -> None:
    old, new = signed_at(service, 10), signed_at(service, 25)
    proof = all_proofs()[(10, 25)]
    verify_extension(old, new, proof, service.cert)
    verify_extension(old, old, [], service.cert)
    # rollback: the "new" root is older
    assert _extension_refused(new, old, proof, service.cert) == "rollback"
    # rollback: a later tree size in an earlier view
    assert _extension_refused(old, signed_at(service, 25, view=1), proof, service.cert) == "rollback"
    # fork: the same tree size, another root, or another signature transaction at that seqno
    forked = make_signed_root(service, TxId(2, 25), flip(ROOTS[25]))
    assert _extension_refused(new, forked, [], service.cert) == "fork"
    assert _extension_refused(new, signed_at(service, 25, view=3), [], service.cert) == "fork"
    # an extension whose proof does not hold: a forked history at a larger size
    assert _extension_refused(old, forked, proof, service.cert) == "consistency"
    assert _extension_refused(old, new, proof[:-1], service.cert) == "consistency"
    assert _extension_refused(old, new, all_proofs()[(11, 25)], service.cert) == "consistency"
    # either signed root not signed by this service
    other = pki.service()
    assert _extension_refused(old, new, proof, other.cert) == "signed-root"
    assert (
        _extension_refused(make_signed_root(other, TxId(2, 10), ROOTS[10]), new, proof, service.cert) == "signed-root"
    )
    assert (
        _extension_refused(old, make_signed_root(other, TxId(2, 25), ROOTS[25]), proof, service.cert) == "signed-root"
    )
    assert _extension_refused(old, SignedRoot(new.txid, ROOTS[24], new.signature), proof, service.cert) == "signed-root"
