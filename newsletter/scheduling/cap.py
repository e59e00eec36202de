"""The daily cap per person: at most N lessons and newsletter issues a day, counted on the
subscriber's own calendar. Pure: the dispatcher reads what was sent, this decides.
Confirmations are never counted nor held back."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from newsletter.scheduling.wallclock import instant


def limit_for(own: int | None, configured: int) -> int:
    """The cap a message is held to: its course's or issue's own, else config's. 0: none."""
    return configured if own is None else own


def holds_back(already_today: int, limit: int) -> bool:
    """Whether one more message today would pass the cap."""
    return bool(limit) and already_today >= limit


def local_day(moment: datetime, zone: ZoneInfo) -> date:
    return moment.astimezone(zone).date()


def next_day_at(moment: datetime, zone: ZoneInfo, at: time) -> datetime:
    """`at` o'clock on the local day after `moment`'s, in UTC: when held-back mail may go."""
    return instant(local_day(moment, zone) + timedelta(days=1), at, zone)


def sent_on(day: date, zone: ZoneInfo, sends: Iterable[tuple[int, datetime]]) -> set[int]:
    """Of (delivery id, sent at) pairs, the deliveries sent on that local day."""
    return {delivery for delivery, sent_at in sends if local_day(sent_at, zone) == day}
