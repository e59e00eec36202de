"""The relay's circuit breaker: after a few connection failures in a row, stop connecting for
a while, then let one probe through. Pure: the caller passes the wall-clock `now` and a
Random.

Without it, a relay that answers 421 or nothing gets a new connection for every due message
(dozens a second), which is what mail servers rate-limit and blocklist.

    closed ──(failures in a row reach `threshold`)──> open until T
    open ──(T passes)──> half-open: one probe send
    half-open ──(probe succeeds)──> closed;  ──(probe fails)──> open again, twice as long
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass(frozen=True)
class CircuitPolicy:
    threshold: int = 3
    first_delay_s: float = 10
    max_delay_s: float = 600
    #: Each wait is spread by up to this fraction either way, so that workers that saw the
    #: relay fail together do not all probe it at the same instant.
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.threshold < 1 or not 0 < self.first_delay_s <= self.max_delay_s:
            raise ValueError("need threshold >= 1 and 0 < first_delay_s <= max_delay_s")


class Circuit:
    def __init__(self, policy: CircuitPolicy, rng: random.Random | None = None) -> None:
        self.policy = policy
        self._rng = rng or random.Random()
        self._failures = 0  #: in a row, since the last success
        self._opened = 0  #: times opened since the last success: the backoff step
        self.open_until: datetime | None = None
        #: Why it opened: the last failure, for the operator.
        self.reason = ""

    def state(self, now: datetime) -> CircuitState:
        if self.open_until is None:
            return CircuitState.CLOSED
        return CircuitState.OPEN if now < self.open_until else CircuitState.HALF_OPEN

    def succeeded(self) -> bool:
        """A send got through; True if that closed an open circuit."""
        was_open = self.open_until is not None
        self._failures, self._opened, self.open_until, self.reason = 0, 0, None, ""
        return was_open

    def failed(self, now: datetime, reason: str) -> bool:
        """A connection-level failure; True if the circuit (re)opened because of it."""
        self._failures += 1
        probe_failed = self.state(now) is CircuitState.HALF_OPEN
        if not probe_failed and (
            self.open_until is not None or self._failures < self.policy.threshold
        ):
            return False  # already open (a send that started before it opened), or not yet
        grown = self.policy.first_delay_s * 2 ** min(self._opened, 32)
        delay_s = min(grown, self.policy.max_delay_s) * self._rng.uniform(
            1 - self.policy.jitter, 1 + self.policy.jitter
        )
        self._opened += 1
        self.open_until = now + timedelta(seconds=delay_s)
        self.reason = reason
        return True

    def hold_until(self, until: datetime, reason: str) -> None:
        """Another worker found the relay down (a shared flag): wait as long as it does, and
        if our own probe then fails, wait longer than its first wait."""
        if self.open_until is None or self.open_until < until:
            self.open_until = until
            self.reason = reason
            self._opened = max(self._opened, 1)

    def probe_now(self, now: datetime) -> None:
        """An operator said the relay is fixed (`newsletter sending resume`): probe at once."""
        if self.open_until is not None and self.open_until > now:
            self.open_until = now
