"""check_before_send: what the database says of a claimed delivery decides whether it goes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from newsletter.db.models import (
    BroadcastStatus,
    DeliveryKind,
    DeliveryStatus,
    EnrollmentStatus,
    SequenceStatus,
    SubscriberStatus,
)
from newsletter.db.queries import HeldDelivery
from newsletter.scheduling.checks import Check, check_before_send

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
TOKEN = "host:1/abcd"


def held(**changes: object) -> HeldDelivery:
    row = {
        "id": 1,
        "status": DeliveryStatus.SENDING,
        "claimed_by": TOKEN,
        "lease_until": NOW + timedelta(minutes=30),
        "subscriber_status": SubscriberStatus.CONFIRMED,
        "suppressed": False,
        "sequence_status": SequenceStatus.LIVE,
        "enrollment_status": EnrollmentStatus.ACTIVE,
    }
    return HeldDelivery(**(row | changes))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("row", "kind", "check"),
    [
        (held(), DeliveryKind.LESSON, Check.SEND),
        (None, DeliveryKind.LESSON, Check.GONE),  # erased
        (held(claimed_by="other:2/ffff"), DeliveryKind.LESSON, Check.LOST),
        (held(status=DeliveryStatus.QUEUED, claimed_by=None), DeliveryKind.LESSON, Check.LOST),
        (held(lease_until=NOW + timedelta(minutes=14)), DeliveryKind.LESSON, Check.LEASE_SHORT),
        (held(subscriber_status=SubscriberStatus.UNSUBSCRIBED), DeliveryKind.LESSON, Check.LEFT),
        (held(subscriber_status=SubscriberStatus.BOUNCED), DeliveryKind.LESSON, Check.LEFT),
        (held(suppressed=True), DeliveryKind.LESSON, Check.LEFT),
        # The opt-in email goes to someone still pending, or confirmed on other courses
        # who asked for one they are not on (never taken, or left); not to one on it.
        (held(subscriber_status=SubscriberStatus.PENDING), DeliveryKind.CONFIRMATION, Check.SEND),
        (held(), DeliveryKind.CONFIRMATION, Check.LEFT),
        (held(enrollment_status=EnrollmentStatus.STOPPED), DeliveryKind.CONFIRMATION, Check.LEFT),
        (held(enrollment_status=None), DeliveryKind.CONFIRMATION, Check.SEND),
        (held(enrollment_status=EnrollmentStatus.LEFT), DeliveryKind.CONFIRMATION, Check.SEND),
        (
            held(subscriber_status=SubscriberStatus.UNSUBSCRIBED, enrollment_status=None),
            DeliveryKind.CONFIRMATION,
            Check.LEFT,
        ),
        (held(enrollment_status=EnrollmentStatus.LEFT), DeliveryKind.LESSON, Check.PAUSED),
        (held(subscriber_status=SubscriberStatus.PENDING), DeliveryKind.LESSON, Check.LEFT),
        # The subscriber paused the course: the lesson is planned again when they resume.
        (held(enrollment_status=EnrollmentStatus.STOPPED), DeliveryKind.LESSON, Check.PAUSED),
        (held(enrollment_status=None), DeliveryKind.LESSON, Check.PAUSED),
        # An admin paused or archived the course: the lesson waits in the queue.
        (held(sequence_status=SequenceStatus.PAUSED), DeliveryKind.LESSON, Check.HELD),
        (held(sequence_status=SequenceStatus.ARCHIVED), DeliveryKind.LESSON, Check.HELD),
        # An opt-in email needs no enrollment yet.
        (
            held(subscriber_status=SubscriberStatus.PENDING, enrollment_status=None),
            DeliveryKind.CONFIRMATION,
            Check.SEND,
        ),
    ],
)
def test_check_before_send(row: HeldDelivery | None, kind: str, check: Check) -> None:
    assert (
        check_before_send(row, kind, token=TOKEN, wall_now=NOW, min_lease=timedelta(minutes=15))
        is check
    )


def issue_row(**changes: object) -> HeldDelivery:
    """A newsletter issue's delivery: no course, no enrollment."""
    return held(sequence_status=None, enrollment_status=None, **changes)


@pytest.mark.parametrize(
    ("row", "check"),
    [
        (issue_row(broadcast_status=BroadcastStatus.SENDING), Check.SEND),
        (issue_row(broadcast_status=BroadcastStatus.ENQUEUEING), Check.SEND),
        (issue_row(broadcast_status=BroadcastStatus.PAUSED), Check.HELD),
        (issue_row(broadcast_status=BroadcastStatus.CANCELLED), Check.WITHDRAWN),
        (
            issue_row(
                broadcast_status=BroadcastStatus.SENDING,
                subscriber_status=SubscriberStatus.UNSUBSCRIBED,
            ),
            Check.LEFT,
        ),
        (issue_row(broadcast_status=BroadcastStatus.SENDING, suppressed=True), Check.LEFT),
    ],
)
def test_an_issue_goes_while_it_is_being_sent_to_someone_still_subscribed(
    row: HeldDelivery, check: Check
) -> None:
    assert (
        check_before_send(
            row, DeliveryKind.BROADCAST, token=TOKEN, wall_now=NOW, min_lease=timedelta(minutes=15)
        )
        is check
    )
