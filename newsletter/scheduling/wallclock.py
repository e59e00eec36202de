"""Pure: a wall time (what the clock on someone's wall shows) in a time zone, as an instant.
Lessons' send times and newsletter issues sent at a local time both resolve wall times
here, so that a daylight-saving change treats them alike."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo


def instant(day: date, moment: time, zone: ZoneInfo) -> datetime:
    """`moment` o'clock on `day` in `zone`, in UTC.

    A wall time skipped by a spring-forward change (02:30) resolves to the same distance
    past the change (03:30); an ambiguous autumn time takes its first occurrence."""
    return datetime.combine(day, moment, tzinfo=zone).astimezone(UTC)


def zone_named(name: str | None, default: ZoneInfo) -> ZoneInfo:
    """A subscriber's time zone; the default when they gave none, or one this system's
    zone database does not know (any more)."""
    try:
        return ZoneInfo(name) if name else default
    except (ValueError, KeyError):
        return default
