"""Per-ledger settings without a process: reading them from ARM tags, and the request bucket."""

from __future__ import annotations

import pytest

from notarium.host.limits import LedgerLimits, LimitBook, RequestRate, ledger_limits
from notarium.host.names import InvalidRequestError


def test_settings_come_from_tags_regardless_of_case() -> None:
    assert ledger_limits({}, 1000) == LedgerLimits()
    assert ledger_limits({"team": "a", "notarium.maxEntryBytes": "1000"}, 1000) == LedgerLimits(1000, None)
    assert ledger_limits({"NOTARIUM.REQUESTSPERSECOND": " 2.5 "}, 1000) == LedgerLimits(None, 2.5)


@pytest.mark.parametrize(
    "tags",
    [
        {"notarium.maxEntryBytes": "1001"},
        {"notarium.maxEntryBytes": "1e3"},
        {"notarium.maxEntryBytes": ""},
        {"notarium.requestsPerSecond": "0.0001"},
        {"notarium.requestsPerSecond": "1e7"},
        {"notarium.requestsPerSecond": "-inf"},
        {"Notarium.Other": "1"},
    ],
)
def test_bad_settings_name_the_rule(tags: dict[str, str]) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        ledger_limits(tags, 1000)
    assert caught.value.code == "InvalidRequestContent"
    assert "notarium." in str(caught.value)


def test_the_bucket_holds_one_second_and_refills_at_the_rate() -> None:
    bucket = RequestRate(2.0)
    now = bucket.updated
    assert [bucket.take(now) for _ in range(2)] == [0.0, 0.0]
    assert bucket.take(now) == pytest.approx(0.5)
    assert bucket.take(now + 0.5) == 0.0
    slow = RequestRate(0.01)  # a burst of one, then one every 100 s
    assert slow.take(slow.updated) == 0.0
    assert slow.take(slow.updated) == pytest.approx(100.0)


def test_each_ledger_has_its_own_bucket() -> None:
    book = LimitBook()
    book.set("a", LedgerLimits(None, 0.01))
    assert book.admit("a") == 0.0
    assert book.admit("a") > 0.0  # a's bucket is empty…
    for _ in range(100):
        assert book.admit("b") == 0.0  # …b has no setting: no limit
    book.set("a", LedgerLimits(None, 0.01))  # the same setting again: the same (empty) bucket
    assert book.admit("a") > 0.0
    book.set("a", LedgerLimits(100, 0.01))  # a changed setting: a full bucket
    assert book.admit("a") == 0.0
    book.forget("a")
    assert book.admit("a") == 0.0
