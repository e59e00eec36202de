"""Whether a claimed delivery may still go, from what the database says of it right before
it is sent. Pure: the dispatcher reads the rows, this decides."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import Enum

from newsletter.db.models import (
    BroadcastStatus,
    DeliveryKind,
    DeliveryStatus,
    EnrollmentStatus,
    SequenceStatus,
    SubscriberStatus,
)
from newsletter.db.queries import BROADCAST_SENDING, HeldDelivery


class Check(Enum):
    """What the database says of a claimed delivery just before it is sent; the value is
    the outcome a pass reports for those not sent."""

    SEND = "checked"
    GONE = "gone"  #: the row is gone: the person was erased
    LOST = "lost_claim"  #: another claim holds it now (our lease ran out)
    LEASE_SHORT = "lease_short"  #: too little lease left to start an SMTP exchange safely
    LEFT = "cancelled"  #: the recipient can no longer receive it
    PAUSED = "paused_course"  #: the subscriber paused (or left) this course
    HELD = "sequence_held"  #: the course (or the newsletter issue) is paused or archived
    WITHDRAWN = "issue_cancelled"  #: the newsletter issue was cancelled


def check_before_send(
    row: HeldDelivery | None,
    kind: str,
    *,
    token: str,
    wall_now: datetime,
    min_lease: timedelta,
) -> Check:
    if row is None:
        return Check.GONE
    if row.status != DeliveryStatus.SENDING or row.claimed_by != token:
        return Check.LOST
    if row.lease_until is None or row.lease_until - wall_now < min_lease:
        return Check.LEASE_SHORT
    confirmation = kind == DeliveryKind.CONFIRMATION
    if row.suppressed or not _may_receive(row, confirmation):
        return Check.LEFT
    if row.sequence_status not in (None, SequenceStatus.LIVE):
        return Check.HELD
    if kind == DeliveryKind.BROADCAST:
        if row.broadcast_status == BroadcastStatus.CANCELLED:
            return Check.WITHDRAWN
        return Check.SEND if row.broadcast_status in BROADCAST_SENDING else Check.HELD
    if not confirmation and row.enrollment_status != EnrollmentStatus.ACTIVE:
        return Check.PAUSED
    return Check.SEND


#: Enrollments a confirmation email may still go out for: none yet, or a course left.
_NOT_ON_COURSE = (None, EnrollmentStatus.LEFT)


def _may_receive(row: HeldDelivery, confirmation: bool) -> bool:
    """Lessons go to confirmed subscribers. Confirmations go to pending ones, and to
    confirmed ones who asked for a further course they are not on yet."""
    if not confirmation:
        return row.subscriber_status == SubscriberStatus.CONFIRMED
    if row.subscriber_status == SubscriberStatus.PENDING:
        return True
    return (
        row.subscriber_status == SubscriberStatus.CONFIRMED
        and row.enrollment_status in _NOT_ON_COURSE
    )
