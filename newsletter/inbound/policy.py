"""What a bounce or complaint does to the address it is about, and when a course or a
newsletter issue has drawn too many of them. Pure: the inbox counts, this decides."""

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
class SendRates:
    """What came back about some mail: a course's within its window, or a newsletter
    issue's own sends."""

    sent: int  #: messages sent
    hard_bounces: int
    complaints: int


def rate_passed(rates: SendRates, settings: BounceSettings) -> MailEventKind | None:
    """The rate past its bound (HARD_BOUNCE or COMPLAINT); None while both are within it.
    Too few messages say nothing yet: one bounce in ten is no rate."""
    if rates.sent < settings.rate_min_sent:
        return None
    if rates.hard_bounces / rates.sent > settings.max_bounce_rate:
        return MailEventKind.HARD_BOUNCE
    if rates.complaints / rates.sent > settings.max_complaint_rate:
        return MailEventKind.COMPLAINT
    return None


def rates_exceeded(rates: SendRates, settings: BounceSettings) -> str:
    """Why the course must pause, in a sentence; "" while its rates are within bounds."""
    match rate_passed(rates, settings):
        case MailEventKind.HARD_BOUNCE:
            return (
                f"{rates.hard_bounces / rates.sent:.1%} of its last {rates.sent} messages "
                f"bounced for good (at most {settings.max_bounce_rate:.1%} is allowed): check "
                "where its addresses came from before resuming it"
            )
        case MailEventKind.COMPLAINT:
            return (
                f"{rates.complaints / rates.sent:.2%} of its last {rates.sent} messages were "
                f"reported as spam (at most {settings.max_complaint_rate:.2%} is allowed): "
                "check that everyone on it asked for it before resuming it"
            )
        case _:
            return ""


def issue_pause_reason(rates: SendRates, settings: BounceSettings) -> str:
    """Why a newsletter issue must pause, in a sentence with its counts; "" while its
    rates are within bounds. The same bounds as a course's, over the issue's own sends."""
    match rate_passed(rates, settings):
        case MailEventKind.HARD_BOUNCE:
            return (
                f"paused by the bounce rate: {rates.hard_bounces} of {rates.sent} sent "
                f"({rates.hard_bounces / rates.sent:.1%}) bounced hard (at most "
                f"{settings.max_bounce_rate:.1%} is allowed); check where its addresses came "
                "from before resuming it"
            )
        case MailEventKind.COMPLAINT:
            were = "was" if rates.complaints == 1 else "were"
            return (
                f"paused by the complaint rate: {rates.complaints} of {rates.sent} sent "
                f"({rates.complaints / rates.sent:.2%}) {were} reported as spam (at most "
                f"{settings.max_complaint_rate:.2%} is allowed); check that everyone it "
                "went to asked for it before resuming it"
            )
        case _:
            return ""
