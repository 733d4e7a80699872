"""The database trail's errors."""

from __future__ import annotations

from notarium.errors import NotariumError


class TrailError(NotariumError):
    """The trail cannot go on: the database, the slot or the ledger is not as it must be.

    The message says what is wrong and what to do; ``hint`` adds the command that fixes it."""

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint

    def diagnostics(self) -> str:
        return f"{self}\n  hint: {self.hint}" if self.hint else str(self)
