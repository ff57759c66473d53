"""Time as a dependency: the real clock in production, a controllable one in tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Something that tells the current UTC time."""

    def now(self) -> datetime: ...


class SystemClock:
    """The machine's clock, in UTC."""

    def now(self) -> datetime:
        """Current time, timezone-aware UTC."""
        return datetime.now(UTC)


class FixedClock:
    """A clock that only moves when told to; for tests."""

    def __init__(self, start: datetime, step: timedelta = timedelta(0)) -> None:
        self._now = start
        self._step = step

    def now(self) -> datetime:
        """The current fake time; advances by `step` after each call."""
        current = self._now
        self._now += self._step
        return current
