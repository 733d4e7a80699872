"""Shamir k-of-n over GF(2^256 − 189): vectors and properties."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notarium.recovery import shamir
from notarium.recovery.shamir import PRIME, Share, combine, split


def _probably_prime(n: int) -> bool:
    if n % 2 == 0:
        return n == 2
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    rng = random.Random(1)
    for _ in range(40):
        x = pow(rng.randrange(2, n - 1), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def test_the_field_is_the_largest_prime_below_2_256() -> None:
    assert PRIME == 2**256 - 189
    assert _probably_prime(PRIME)
    assert not any(_probably_prime(n) for n in range(PRIME + 2, 2**256, 2))


def test_vector_polynomial_and_encoding() -> None:
    # rand=7, k=2: coefficients [secret, (7 + 1)^3] → y = 5 + 512·x
    shares = split(5, 2, 3, rand=7)
    assert [(s.x, s.y) for s in shares] == [(1, 517), (2, 1029), (3, 1541)]
    assert shares[1].to_bytes() == bytes([1, 2, 2]) + (1029).to_bytes(32, "big")
    assert combine([shares[2], shares[0]]) == 5
    # k=3: [secret, 8^3, 9^3] → y = 11 + 512x + 729x²
    three = split(11, 3, 4, rand=7)
    assert [s.y for s in three] == [11 + 512 * x + 729 * x * x for x in range(1, 5)]


@settings(max_examples=40, deadline=None)
@given(
    secret=st.integers(min_value=0, max_value=PRIME - 1),
    n=st.integers(min_value=1, max_value=6),
    data=st.data(),
)
def test_any_k_of_n_rebuild_the_secret(secret: int, n: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(min_value=1, max_value=n))
    shares = split(secret, k, n)
    assert len({s.x for s in shares}) == n
    for subset in itertools.combinations(shares, k):
        assert combine(list(subset)) == secret
    assert combine(shares) == secret  # more than k: same polynomial
    for s in shares:
        assert Share.from_bytes(s.to_bytes()) == s


@settings(max_examples=25, deadline=None)
@given(secret=st.integers(min_value=0, max_value=PRIME - 1), target=st.integers(min_value=0, max_value=PRIME - 1))
def test_k_minus_one_shares_are_consistent_with_every_secret(secret: int, target: int) -> None:
    """Perfect hiding: for any candidate secret there is a k-th point that, with the k−1 known
    shares, rebuilds exactly that candidate; so k−1 shares rule nothing out."""
    k = 3
    shares = split(secret, k, 5)
    known = shares[: k - 1]
    # the polynomial through (0, target) and the known points gives the fake third share
    points = [(0, target)] + [(s.x, s.y) for s in known]
    x3 = shares[k - 1].x

    def lagrange(at: int) -> int:
        total = 0
        for i, (xi, yi) in enumerate(points):
            num = den = 1
            for j, (xj, _yj) in enumerate(points):
                if i != j:
                    num = num * (at - xj) % PRIME
                    den = den * (xi - xj) % PRIME
            total = (total + yi * num * pow(den, -1, PRIME)) % PRIME
        return total

    fake = Share(k, x3, lagrange(x3))
    assert combine([*known, fake]) == target
    with pytest.raises(ValueError, match="needed"):
        combine(known)


def test_wrong_duplicate_and_tampered_shares() -> None:
    secret = shamir.random_secret()
    a, b, c = split(secret, 2, 3)
    with pytest.raises(ValueError, match="same index"):
        combine([a, a])
    with pytest.raises(ValueError, match="needed"):
        combine([a])
    with pytest.raises(ValueError, match="no recovery shares"):
        combine([])
    other = split(secret, 3, 3)[1]
    with pytest.raises(ValueError, match="different splits"):
        combine([a, other])
    tampered = Share(b.threshold, b.x, (b.y + 1) % PRIME)
    assert combine([a, tampered]) != secret  # a wrong share goes unnoticed here: shares.py checks them
    assert combine([a, c]) == secret


def test_malformed_share_bytes() -> None:
    good = split(1, 1, 1)[0].to_bytes()
    assert len(good) == shamir.SHARE_SIZE
    for bad, why in [
        (good[:-1], "35 bytes"),
        (b"\x02" + good[1:], "version"),
        (good[:1] + b"\x00" + good[2:], "malformed"),
        (good[:2] + b"\x00" + good[3:], "malformed"),
        (good[:3] + PRIME.to_bytes(32, "big"), "malformed"),
    ]:
        with pytest.raises(ValueError, match=why):
            Share.from_bytes(bad)


def test_split_bounds_and_hidden_repr() -> None:
    with pytest.raises(ValueError, match="threshold 0 of 3"):
        split(1, 0, 3)
    with pytest.raises(ValueError, match="threshold 4 of 3"):
        split(1, 4, 3)
    with pytest.raises(ValueError, match="count ≤ 255"):
        split(1, 1, 256)
    with pytest.raises(ValueError, match="field element"):
        split(PRIME, 1, 1)
    share = split(123456789, 1, 1)[0]
    assert "123456789" not in repr(share)
    assert "hidden" in repr(share)
