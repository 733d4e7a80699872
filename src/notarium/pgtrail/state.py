"""Where a trail stands, from its newest entry: what ``pg capture`` resumes from and ``pg status``
reports."""

from __future__ import annotations

from dataclasses import dataclass

from notarium.pgtrail.errors import TrailError
from notarium.pgtrail.format import Baseline, BaselineEnd, Gap, Init, Part, Stop, TrailEntry, Txs


@dataclass(frozen=True, slots=True)
class TrailPosition:
    baseline_done: bool
    end: int  # every captured transaction committed before this LSN is in the ledger
    count: int  # transactions captured in the epoch
    stopped: Stop | None = None
    last_commit_time: str | None = None


def position_of(latest: TrailEntry | None, init: Init) -> TrailPosition:
    if latest is None or isinstance(latest, Init | Baseline):
        return TrailPosition(False, init.lsn, 0)
    if latest.epoch != init.epoch:
        raise TrailError(f"the trail's newest entry belongs to epoch {latest.epoch}, not to the current {init.epoch}")
    if isinstance(latest, BaselineEnd):
        return TrailPosition(True, latest.lsn, 0)
    if isinstance(latest, Txs):
        last = latest.txs[-1].time if latest.txs else None
        return TrailPosition(True, latest.end, latest.count, last_commit_time=last)
    if isinstance(latest, Part):
        if latest.part == latest.of:
            return TrailPosition(True, latest.end, latest.count)
        return TrailPosition(True, latest.start, latest.count - 1)  # sent again whole
    if isinstance(latest, Gap):
        return TrailPosition(True, latest.end, latest.count)
    return TrailPosition(True, latest.lsn, 0, stopped=latest)
