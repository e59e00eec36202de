"""How many messages may go out now. Pure: the caller passes `now` and, for the hourly and
daily caps, the counts it read from the database, which is what lets several workers share
those caps. The per-second rate is each worker's own token bucket, taken one message at a
time just before it is sent, so that messages spread over the second instead of leaving in
bursts."""

from __future__ import annotations

import math
from datetime import datetime

# Float sums of elapsed time land a hair under whole tokens: ten 10 ms refills at 10 a
# second add up to 0.9999999999999999.
_EPSILON = 1e-9


class TokenBucket:
    """`max_per_second` tokens a second, holding at most max(1, max_per_second): a full
    second's worth may go at once, and a rate below 1 a second still lets one through."""

    def __init__(self, max_per_second: float) -> None:
        if max_per_second <= 0:
            raise ValueError(f"max_per_second must be positive, got {max_per_second}")
        self._rate = max_per_second
        self._capacity = max(1.0, max_per_second)
        self._tokens = self._capacity  # a new worker may send a burst at once
        self._refilled_at: datetime | None = None

    def available(self, now: datetime) -> int:
        self._refill(now)
        return max(0, math.floor(self._tokens + _EPSILON))

    def wait_s(self, now: datetime) -> float:
        """Seconds until one more message may go (0: now)."""
        self._refill(now)
        missing = 1 - (self._tokens + _EPSILON)
        return max(0.0, missing / self._rate)

    def take(self, count: int, now: datetime) -> None:
        """Count `count` messages as sent. Taking more than available() is allowed and puts
        the bucket in debt: nothing more is available until time has paid it back."""
        if count < 0:
            raise ValueError(f"cannot take a negative count: {count}")
        self._refill(now)
        self._tokens -= count

    def _refill(self, now: datetime) -> None:
        last = self._refilled_at or now
        elapsed_s = max(0.0, (now - last).total_seconds())  # a clock stepping back adds nothing
        self._tokens = min(self._capacity, self._tokens + elapsed_s * self._rate)
        self._refilled_at = max(last, now)


def capped(
    available: int, sent_last_hour: int, sent_last_day: int, max_per_hour: int, max_per_day: int
) -> int:
    """`available` lowered to what the hourly and daily caps still allow; a cap of 0 is none."""
    allowed = [available]
    if max_per_hour:
        allowed.append(max_per_hour - sent_last_hour)
    if max_per_day:
        allowed.append(max_per_day - sent_last_day)
    return max(0, min(allowed))
