"""Where "now" comes from: the edges read a Clock once and pass the instant inward."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Two clocks run in a worker: the schedule's (which `--speed` may fast-forward) and the
    wall clock (leases, retry delays, backoff, rate limits, token expiry). `after()` turns a
    real delay into an instant of this clock, so a retry five real minutes away is due at
    the right moment of a fast-forwarded schedule too."""

    def now(self) -> datetime:
        """The current instant, timezone-aware, in UTC."""
        ...

    def after(self, delay: timedelta) -> datetime:
        """The instant this clock will show once `delay` of real time has passed."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def after(self, delay: timedelta) -> datetime:
        return self.now() + delay


class MonotonicClock:
    """Elapsed real time as instants: it never stands still or steps back, whatever NTP or
    a resumed virtual machine does to the wall clock. Only differences between its instants
    mean anything."""

    _EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self._EPOCH + timedelta(seconds=time.monotonic())

    def after(self, delay: timedelta) -> datetime:
        return self.now() + delay


class FrozenClock:
    """Stands still until a test moves it."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("FrozenClock needs a timezone-aware start")
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def after(self, delay: timedelta) -> datetime:
        return self._now + delay

    def advance(self, by: timedelta) -> datetime:
        self._now += by
        return self._now

    def set(self, to: datetime) -> None:
        self._now = to.astimezone(UTC)


class FastForwardClock:
    """Runs `speed` times faster than the wall clock from `start`: a newcomer sees a
    month-long course arrive in minutes (`newsletter serve --speed`)."""

    def __init__(self, start: datetime, speed: float) -> None:
        self._start = start.astimezone(UTC)
        self._speed = speed
        self._origin = time.monotonic()

    def now(self) -> datetime:
        elapsed = time.monotonic() - self._origin
        return self._start + timedelta(seconds=elapsed * self._speed)

    def after(self, delay: timedelta) -> datetime:
        return self.now() + delay * self._speed
