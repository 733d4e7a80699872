"""Small value types shared by every layer. No I/O, no crypto."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

_TXID = re.compile(r"^(0|[1-9][0-9]{0,9})\.(0|[1-9][0-9]{0,18})$")
MAX_VIEW = 0x7FFFFFFF  # the IV keeps 31 bits of the view (ccf-ledger-format.md §3.2)
MAX_SEQNO = (1 << 63) - 1


@dataclass(frozen=True, slots=True, order=True)
class TxId:
    """A transaction id ``view.seqno`` (ordered by view, then seqno)."""

    view: int
    seqno: int

    def __post_init__(self) -> None:
        if not 0 <= self.view <= MAX_VIEW or not 0 <= self.seqno <= MAX_SEQNO:
            raise ValueError(f"transaction id out of range: {self.view}.{self.seqno}")

    @classmethod
    def parse(cls, text: str) -> TxId:
        """Parse ``"<view>.<seqno>"``; raise ``ValueError`` on anything else."""
        m = _TXID.match(text)
        if m is None:
            raise ValueError(f"not a transaction id (expected <view>.<seqno>): {text[:40]!r}")
        return cls(int(m.group(1)), int(m.group(2)))

    def __str__(self) -> str:
        return f"{self.view}.{self.seqno}"


class TxStatus(StrEnum):
    """Transaction status as CCF reports it (ccf-ledger-format.md §7)."""

    UNKNOWN = "Unknown"
    PENDING = "Pending"
    COMMITTED = "Committed"
    INVALID = "Invalid"
