"""What a bounce or complaint does to the address it is about, and when a course has drawn
too many of them. Pure: the inbox counts, this decides."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from newsletter.config import BounceSettings
from newsletter.db.models import MailEventKind


class Verdict(StrEnum):
    SUPPRESS = "suppress"  #: never mail the address again
    COUNT = "count"  #: a soft bounce below the limit: remembered, nothing more
    NOTE = "note"  #: recorded only (a delay, a policy refusal that is about us)


def verdict(kind: MailEventKind, soft_bounces: int, settings: BounceSettings) -> Verdict:
    """`soft_bounces`: of the address within the window, this one included."""
    match kind:
        case MailEventKind.HARD_BOUNCE | MailEventKind.COMPLAINT:
            return Verdict.SUPPRESS
        case MailEventKind.SOFT_BOUNCE:
            return Verdict.SUPPRESS if soft_bounces >= settings.soft_limit else Verdict.COUNT
        case _:
            return Verdict.NOTE


@dataclass(frozen=True, slots=True)
class CourseRates:
    sent: int  #: messages of the course sent within the window
    hard_bounces: int
    complaints: int


def rates_exceeded(rates: CourseRates, settings: BounceSettings) -> str:
    """Why the course must pause, in a sentence; "" while its rates are within bounds.
    Too few messages say nothing yet: one bounce in ten is no rate."""
    if rates.sent < settings.rate_min_sent:
        return ""
    bounce_rate = rates.hard_bounces / rates.sent
    complaint_rate = rates.complaints / rates.sent
    if bounce_rate > settings.max_bounce_rate:
        return (
            f"{bounce_rate:.1%} of its last {rates.sent} messages bounced for good "
            f"(at most {settings.max_bounce_rate:.1%} is allowed): check where its "
            "addresses came from before resuming it"
        )
    if complaint_rate > settings.max_complaint_rate:
        return (
            f"{complaint_rate:.2%} of its last {rates.sent} messages were reported as spam "
            f"(at most {settings.max_complaint_rate:.2%} is allowed): check that everyone "
            "on it asked for it before resuming it"
        )
    return ""
