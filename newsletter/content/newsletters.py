"""A newsletter issue: one Markdown file with front matter, sent once to a segment.

    ---
    subject: What changed in the course this month
    preheader: Two new lessons, and an answer to the question most of you asked
    to: course:leg-weakness-after-microdiscectomy:finished or tag:newsletter
    send_at: 2026-12-10T09:00+00:00
    ---
    Hello {{ first_name }}, ...

`to` is a segment (docs/segments.md; everyone when left out). `send_at` is an ISO 8601
date and time (at once when left out). With its offset from UTC (`+00:00`, `Z`) it is one
instant for everyone. Without one (`2026-12-10T09:00`) it is a local time, a WallTime: each
subscriber's copy is due at 09:00 on 10 December in their own time zone (the config's
`[schedule] timezone` for whoever has none), or at once for whoever is past it when the
send starts (newsletter.broadcasts). `max_per_subscriber_per_day` is the issue's own daily
cap per person, over config's (0: none). The body is Markdown in the lessons' sandbox, with
the same personal variables."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import cast

from newsletter import segments
from newsletter.content.lessons import convert, read_fields
from newsletter.errors import ContentError, Problem

REQUIRED_KEYS = ("subject", "preheader")
OPTIONAL_KEYS = ("to", "send_at", "max_per_subscriber_per_day")


@dataclass(frozen=True, slots=True)
class WallTime:
    """A date and time with no zone: each subscriber's copy is due when their own clock
    shows it (newsletter.broadcasts.local_due_at)."""

    at: datetime  #: naive

    def __str__(self) -> str:
        # Also the fingerprint part: never the same text as an instant's.
        return f"local {self.at.isoformat()}"


@dataclass(frozen=True, slots=True)
class Newsletter:
    path: Path
    #: Its identity: the file name without ".md". Sending a file of the same name again
    #: resumes that send; it never starts a second one.
    key: str
    subject: str
    preheader: str
    segment: str
    #: One instant for everyone (aware), a wall time in each subscriber's zone, or at once.
    send_at: datetime | WallTime | None
    body: str
    body_line: int
    #: Its own daily cap per person, over config's; None: config's.
    max_per_subscriber_per_day: int | None = None


def read_newsletter(path: Path) -> Newsletter:
    """Parse one issue, collecting every problem of its front matter before failing."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ContentError([Problem(path, 0, f"not UTF-8 text ({exc.reason})")]) from None
    values, found = read_fields(
        path, text, required=REQUIRED_KEYS, optional=OPTIONAL_KEYS, convert=_value
    )
    send_at = values.get("send_at")
    return Newsletter(
        path=path,
        key=path.stem,
        subject=str(values["subject"]),
        preheader=str(values["preheader"]),
        segment=str(values.get("to", "all")),
        send_at=send_at if isinstance(send_at, datetime | WallTime) else None,
        body=found.body,
        body_line=found.body_line,
        max_per_subscriber_per_day=cast(int | None, values.get("max_per_subscriber_per_day")),
    )


def _value(key: str, raw: str) -> object:
    if key == "to":
        try:
            segments.parse(raw)  # refused here, at its line, rather than at send time
        except segments.SegmentInvalid as exc:
            raise ValueError(str(exc)) from None
        return " ".join(raw.split())
    if key == "send_at":
        return parse_send_at(raw)
    if key == "max_per_subscriber_per_day":
        text = raw.strip()
        if not (text.isascii() and text.isdigit()) or int(text) > 100:
            raise ValueError(f"{text!r} is not a whole number from 0 (no cap) to 100")
        return int(text)
    return convert(key, raw)


def parse_send_at(raw: str) -> datetime | WallTime:
    """An ISO 8601 date and time: with an offset, that instant; without, a WallTime."""
    text = raw.strip()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or _is_date_only(text):
        raise ValueError(
            f"{raw!r} is not a date and time such as 2026-12-10T09:00 (09:00 in each "
            "subscriber's time zone) or 2026-12-10T09:00+00:00 (one instant for everyone)"
        )
    return WallTime(moment) if moment.tzinfo is None else moment


def _is_date_only(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True
