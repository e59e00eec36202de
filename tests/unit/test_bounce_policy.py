"""What a bounce or complaint does to an address, and when a course has drawn too many."""

from __future__ import annotations

import pytest

from newsletter.config import BounceSettings
from newsletter.db.models import MailEventKind
from newsletter.inbound.policy import CourseRates, Verdict, rates_exceeded, verdict

SETTINGS = BounceSettings(soft_limit=3, max_bounce_rate=0.05, max_complaint_rate=0.001)


@pytest.mark.parametrize(
    ("kind", "soft_bounces", "expected"),
    [
        (MailEventKind.HARD_BOUNCE, 0, Verdict.SUPPRESS),
        (MailEventKind.COMPLAINT, 0, Verdict.SUPPRESS),
        (MailEventKind.SOFT_BOUNCE, 1, Verdict.COUNT),
        (MailEventKind.SOFT_BOUNCE, 2, Verdict.COUNT),
        (MailEventKind.SOFT_BOUNCE, 3, Verdict.SUPPRESS),
        (MailEventKind.POLICY_BOUNCE, 0, Verdict.NOTE),
        (MailEventKind.DELAYED, 0, Verdict.NOTE),
    ],
)
def test_what_each_kind_of_report_does(
    kind: MailEventKind, soft_bounces: int, expected: Verdict
) -> None:
    assert verdict(kind, soft_bounces, SETTINGS) is expected


def test_policy_refusals_never_count_however_many() -> None:
    assert verdict(MailEventKind.POLICY_BOUNCE, 100, SETTINGS) is Verdict.NOTE


def test_a_course_pauses_past_five_percent_hard_bounces() -> None:
    assert rates_exceeded(CourseRates(sent=200, hard_bounces=10, complaints=0), SETTINGS) == ""
    why = rates_exceeded(CourseRates(sent=200, hard_bounces=11, complaints=0), SETTINGS)
    assert why.startswith("5.5% of its last 200 messages bounced for good")


def test_a_course_pauses_past_one_complaint_in_a_thousand() -> None:
    assert rates_exceeded(CourseRates(sent=2000, hard_bounces=0, complaints=2), SETTINGS) == ""
    why = rates_exceeded(CourseRates(sent=2000, hard_bounces=0, complaints=3), SETTINGS)
    assert "were reported as spam" in why


def test_too_few_messages_make_no_rate() -> None:
    assert rates_exceeded(CourseRates(sent=99, hard_bounces=50, complaints=50), SETTINGS) == ""
