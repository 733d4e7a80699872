"""The trail's entry format (strict decoding, parts) and its replay (state, repeats, gaps, epochs),
without a database or a ledger: entries are built here and fed as if read back verified."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from notarium.errors import VerificationError
from notarium.pgtrail.format import (
    Baseline,
    BaselineEnd,
    Change,
    ColumnShape,
    Gap,
    Init,
    Part,
    Stop,
    TableShape,
    TrailFormatError,
    Tx,
    Txs,
    decode,
    encode,
    join_parts,
    split_tx,
)
from notarium.pgtrail.pgoutput import UNCHANGED
from notarium.pgtrail.replay import Replay
from notarium.pgtrail.trail import Recorded
from notarium.types import TxId

ACCOUNTS = TableShape(
    "public.accounts",
    (ColumnShape("id", "integer", 23), ColumnShape("owner", "text", 25), ColumnShape("balance", "numeric", 1700)),
    ("id",),
    "key",
)
LOG = TableShape(
    "public.log", (ColumnShape("what", "text", 25), ColumnShape("n", "integer", 23)), ("what", "n"), "full"
)


def _init(epoch: int = 1, lsn: int = 100) -> Init:
    return Init(
        epoch, "7400000000000000001", 1, "shop", "notarium_shop", "notarium_shop", lsn, "t", (ACCOUNTS, LOG), "init"
    )


def _tx(lsn: int, *changes: Change) -> Tx:
    return Tx(lsn, lsn, lsn + 8, f"2026-12-05T00:00:{lsn % 60:02d}+00:00", changes)


class Feeder:
    def __init__(self, tmp: Path) -> None:
        self.replay = Replay(tmp)
        self.seqno = 1

    def feed(self, *entries: object) -> None:
        for e in entries:
            self.seqno += 1
            self.replay.feed(Recorded.of(TxId(2, self.seqno), encode(e)))  # type: ignore[arg-type]

    def state(self, table: str) -> list[tuple[list[object], int]]:
        self.replay.db.execute("COMMIT")
        self.replay.db.execute("BEGIN")
        return sorted(self.replay.rows(table), key=json.dumps)


@pytest.fixture
def f(tmp_path: Path) -> Iterator[Feeder]:
    feeder = Feeder(tmp_path)
    yield feeder
    feeder.replay.close()


def _baseline(f: Feeder, lsn: int = 100) -> None:
    f.feed(
        _init(lsn=lsn - 10),
        Baseline(1, lsn, "public.accounts", 0, (("1", "ann", "10.00"), ("2", "bob", "0"))),
        Baseline(1, lsn, "public.log", 1, (("x", "1"),)),
        BaselineEnd(1, lsn, {"public.accounts": 2, "public.log": 1}, 2),
    )


# --- format ---------------------------------------------------------------------------------------


def test_every_kind_round_trips() -> None:
    tx = _tx(
        200,
        Change("I", "public.accounts", new=("3", None, UNCHANGED)),
        Change("T", "public.log", tables=("public.log",)),
    )
    for entry in (
        _init(),
        Baseline(1, 100, "public.accounts", 0, (("1", None, "x"),)),
        BaselineEnd(1, 100, {"public.accounts": 1}, 1),
        Txs(1, 100, 300, 1, (tx,)),
        Part(1, 100, 200, 208, 1, 1, 2, "0" * 64, "text"),
        Gap(1, 100, 200, 5, "why"),
        Stop(1, 200, "public.accounts", "why"),
    ):
        assert decode(encode(entry)) == entry


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(extra=1),
        lambda d: d.update(format="notarium-pg/2"),
        lambda d: d.update(kind="nonsense"),
        lambda d: d.update(epoch=-1),
        lambda d: d.update(epoch=True),
        lambda d: d.update(count="1"),
        lambda d: d.update(to="12"),
        lambda d: d["txs"][0].update(lsn="0/1"),  # outside the entry's range
        lambda d: d["txs"][0]["changes"][0].__setitem__(0, "X"),
        lambda d: d["txs"][0]["changes"][0][2].__setitem__(0, 5),  # a number is not a text value
        lambda d: d["txs"][0]["changes"][0][2].__setitem__(0, {"unchanged": False}),
        lambda d: d["txs"].append(d["txs"][0]),  # not in commit order
    ],
)
def test_decoding_is_strict(mutate: object) -> None:
    d = json.loads(encode(Txs(1, 100, 300, 1, (_tx(200, Change("I", "public.accounts", new=("3", "c", "1"))),))))
    mutate(d)  # type: ignore[operator]
    with pytest.raises(TrailFormatError):
        decode(json.dumps(d))


def test_garbage_is_a_format_error() -> None:
    for text in (
        "",
        "[]",
        "null",
        "{",
        '{"format": "notarium-pg/1"}',
        json.dumps({"format": "notarium-pg/1", "kind": "init"}),
    ):
        with pytest.raises(TrailFormatError):
            decode(text)


def test_a_value_larger_than_a_part_is_cut_inside_and_joins_back() -> None:
    big = "".join(chr(0x20 + (i * 7919) % 0x2FF0) for i in range(60_000)) + '"\\' * 500
    tx = _tx(500, Change("I", "public.log", new=(big, "1")), Change("I", "public.log", new=("small", "2")))
    parts = split_tx(1, 400, 3, tx, 4096)
    assert all(len(encode(p).encode()) <= 4096 for p in parts)
    assert join_parts(parts).txs == (tx,)


def test_a_large_transaction_splits_into_parts_that_join_back() -> None:
    rows = [Change("I", "public.accounts", new=(str(i), 'ü"\\\n\x01' * 20, "1")) for i in range(400)]
    tx = _tx(500, *rows)
    parts = split_tx(1, 400, 7, tx, 4096)
    assert len(parts) > 10
    assert all(len(encode(p).encode()) <= 4096 for p in parts)
    assert [(p.part, p.of) for p in parts] == [(i + 1, len(parts)) for i in range(len(parts))]
    whole = join_parts(parts)
    assert whole == Txs(1, 400, tx.end, 7, (tx,))
    altered = dataclasses.replace(parts[1], text=parts[1].text[:-1] + "x")
    with pytest.raises(TrailFormatError, match="digest"):
        join_parts([parts[0], altered, *parts[2:]])
    with pytest.raises(TrailFormatError, match="disagree"):
        join_parts([parts[0], dataclasses.replace(parts[1], count=8), *parts[2:]])
    with pytest.raises(TrailFormatError, match="not 1"):
        join_parts(parts[1:])


# --- replay ---------------------------------------------------------------------------------------


def test_baseline_then_changes(f: Feeder) -> None:
    _baseline(f)
    f.feed(
        Txs(
            1,
            100,
            300,
            3,
            (
                _tx(110, Change("U", "public.accounts", new=("1", "ann", "5.00"))),
                _tx(120, Change("U", "public.accounts", new=("3", "bob", "0"), old=("2", None, None))),  # key change
                _tx(
                    130,
                    Change("D", "public.accounts", old=("1", None, None)),
                    Change("I", "public.log", new=("y", "2")),
                ),
            ),
        )
    )
    assert f.state("public.accounts") == [(["3", "bob", "0"], 1)]
    assert f.state("public.log") == [(["x", "1"], 1), (["y", "2"], 1)]
    assert f.replay.result.count == 3
    assert f.replay.result.end == 300
    assert f.replay.result.findings == []


def test_repeats_are_recognised_by_lsn_and_skipped(f: Feeder) -> None:
    _baseline(f)
    first = Txs(1, 100, 200, 1, (_tx(110, Change("I", "public.log", new=("x", "1"))),))
    f.feed(first, first)  # sent again after a crash
    overlapping = Txs(
        1,
        100,
        300,
        2,
        (_tx(110, Change("I", "public.log", new=("x", "1"))), _tx(210, Change("I", "public.log", new=("z", "3")))),
    )
    f.feed(overlapping)
    assert f.state("public.log") == [(["x", "1"], 2), (["z", "3"], 1)]  # full identity: the duplicate row counts twice
    assert f.replay.result.count == 2
    assert f.replay.result.findings == []


def test_an_uncovered_range_is_a_gap(f: Feeder) -> None:
    _baseline(f)
    f.feed(Txs(1, 150, 200, 1, (_tx(160, Change("I", "public.log", new=("q", "9"))),)))
    (gap,) = f.replay.result.findings
    assert gap.kind == "gap"
    assert "0/64" in gap.message  # 100
    f.feed(Gap(1, 200, 400, 1, "slot advanced"))
    assert [x.kind for x in f.replay.result.findings] == ["gap", "gap"]
    assert f.replay.result.end == 400


def test_unchanged_values_are_carried_forward(f: Feeder) -> None:
    _baseline(f)
    f.feed(Txs(1, 100, 200, 1, (_tx(110, Change("U", "public.accounts", new=("2", UNCHANGED, "7"))),)))
    assert f.state("public.accounts") == [(["1", "ann", "10.00"], 1), (["2", "bob", "7"], 1)]


def test_parts_apply_once_when_whole(f: Feeder) -> None:
    _baseline(f)
    tx = _tx(110, *[Change("I", "public.log", new=(f"r{i}", str(i))) for i in range(200)])
    parts = split_tx(1, 100, 1, tx, 2048)
    f.feed(*parts[:-1])
    assert len(f.state("public.log")) == 1  # not yet whole
    f.feed(parts[0], parts[-1])  # a part sent again, then the last
    assert len(f.state("public.log")) == 201
    assert f.replay.result.count == 1


def test_changes_the_trail_cannot_explain_are_inconsistencies(f: Feeder) -> None:
    _baseline(f)
    f.feed(
        Txs(
            1,
            100,
            200,
            2,
            (
                _tx(110, Change("U", "public.accounts", new=("9", "zed", "1"))),
                _tx(120, Change("I", "public.accounts", new=("1", "again", "1"))),
            ),
        )
    )
    assert [x.kind for x in f.replay.result.findings] == ["inconsistency", "inconsistency"]


def test_a_truncate_empties_the_table(f: Feeder) -> None:
    _baseline(f)
    f.feed(Txs(1, 100, 200, 1, (_tx(110, Change("T", "public.log", tables=("public.log",))),)))
    assert f.state("public.log") == []


def test_an_incomplete_or_altered_baseline_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    f = Feeder(tmp_path / "a")
    f.feed(_init(), Baseline(1, 100, "public.accounts", 0, (("1", "ann", "1"),)))
    with pytest.raises(VerificationError, match="1 of its 2 entries"):
        f.feed(BaselineEnd(1, 100, {"public.accounts": 1}, 2))
    f.replay.close()
    (tmp_path / "b").mkdir()
    g = Feeder(tmp_path / "b")
    g.feed(_init(), Baseline(1, 100, "public.accounts", 0, (("1", "ann", "1"),)))
    with pytest.raises(VerificationError, match="does not hold the rows it counts"):
        g.feed(BaselineEnd(1, 100, {"public.accounts": 2}, 1))
    g.replay.close()


def test_a_retried_baseline_replaces_the_unfinished_one(f: Feeder) -> None:
    f.feed(_init(), Baseline(1, 100, "public.accounts", 0, (("1", "old", "1"),)))  # the agent died here
    f.feed(
        Baseline(1, 150, "public.accounts", 0, (("1", "new", "1"),)),
        BaselineEnd(1, 150, {"public.accounts": 1}, 1),
    )
    assert f.state("public.accounts") == [(["1", "new", "1"], 1)]
    assert f.replay.result.end == 150


def test_a_new_epoch_starts_afresh_and_is_reported(f: Feeder) -> None:
    _baseline(f)
    f.feed(Stop(1, 150, "public.accounts", "changed shape"))
    f.feed(_init(epoch=2, lsn=400), Baseline(2, 410, "public.log", 0, ()), BaselineEnd(2, 410, {}, 1))
    assert f.state("public.accounts") == []
    assert [x.kind for x in f.replay.result.findings] == ["stop", "epoch"]
    assert "after capture stopped" in f.replay.result.findings[1].message
    with pytest.raises(VerificationError, match="does not follow"):
        f.feed(_init(epoch=4))


def test_replay_up_to_a_snapshot_point_leaves_out_later_transactions(tmp_path: Path) -> None:
    f = Feeder(tmp_path)
    f.replay.before = 130  # a snapshot sees the transactions whose commit record precedes 130
    _baseline(f)
    f.feed(
        Txs(
            1,
            100,
            200,
            2,
            (
                _tx(110, Change("I", "public.log", new=("seen", "1"))),
                _tx(130, Change("I", "public.log", new=("after", "2"))),
            ),
        ),
        Txs(1, 200, 300, 3, (_tx(210, Change("I", "public.log", new=("later", "3"))),)),
    )
    assert [r[0][0] for r in f.state("public.log")] == ["seen", "x"]
    assert f.replay.result.count == 1
    assert f.replay.result.findings == []  # what lies beyond the point is no gap
    f.replay.close()
