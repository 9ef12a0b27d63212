"""Injected clocks, so that scheduled work and tests never depend on the wall clock."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Protocol


class Clock(Protocol):
    """Anything that tells the current time as an aware UTC datetime."""

    def now(self) -> datetime: ...


class SystemClock:
    """The real time."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)


class FixedClock:
    """A clock that stays where it is put; tests and `run-job --at` move it by hand."""

    def __init__(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("FixedClock needs an aware datetime")
        self._at = at.astimezone(timezone.utc)

    def now(self) -> datetime:
        return self._at

    def set(self, at: datetime) -> None:
        """Move to `at`."""
        self._at = at.astimezone(timezone.utc)

    def advance(self, **delta: float) -> None:
        """Move forward by a timedelta's keyword arguments."""
        self._at += timedelta(**delta)
