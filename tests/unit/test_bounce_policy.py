"""What a bounce or complaint does to an address, and when a course or a newsletter issue
has drawn too many."""

from __future__ import annotations

import pytest

from newsletter.config import BounceSettings
from newsletter.db.models import MailEventKind
from newsletter.inbound.policy import (
    SendRates,
    Verdict,
    issue_pause_reason,
    rate_passed,
    rates_exceeded,
    verdict,
)

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
    assert rates_exceeded(SendRates(sent=200, hard_bounces=10, complaints=0), SETTINGS) == ""
    why = rates_exceeded(SendRates(sent=200, hard_bounces=11, complaints=0), SETTINGS)
    assert why.startswith("5.5% of its last 200 messages bounced for good")


def test_a_course_pauses_past_one_complaint_in_a_thousand() -> None:
    assert rates_exceeded(SendRates(sent=2000, hard_bounces=0, complaints=2), SETTINGS) == ""
    why = rates_exceeded(SendRates(sent=2000, hard_bounces=0, complaints=3), SETTINGS)
    assert "were reported as spam" in why


def test_too_few_messages_make_no_rate() -> None:
    assert rates_exceeded(SendRates(sent=99, hard_bounces=50, complaints=50), SETTINGS) == ""


def test_which_rate_is_past_its_bound() -> None:
    assert rate_passed(SendRates(sent=120, hard_bounces=6, complaints=0), SETTINGS) is None
    assert rate_passed(SendRates(sent=120, hard_bounces=7, complaints=0), SETTINGS) == (
        MailEventKind.HARD_BOUNCE
    )
    assert rate_passed(SendRates(sent=120, hard_bounces=0, complaints=1), SETTINGS) == (
        MailEventKind.COMPLAINT
    )
    assert rate_passed(SendRates(sent=99, hard_bounces=99, complaints=99), SETTINGS) is None


def test_an_issue_pauses_at_the_course_bounds_and_says_how_many_of_its_sends_bounced() -> None:
    assert issue_pause_reason(SendRates(sent=120, hard_bounces=6, complaints=0), SETTINGS) == ""
    why = issue_pause_reason(SendRates(sent=120, hard_bounces=7, complaints=0), SETTINGS)
    assert why.startswith("paused by the bounce rate: 7 of 120 sent (5.8%) bounced hard ")
    assert "(at most 5.0% is allowed)" in why


def test_an_issue_pauses_past_one_complaint_in_a_thousand_of_its_sends() -> None:
    assert issue_pause_reason(SendRates(sent=1000, hard_bounces=0, complaints=1), SETTINGS) == ""
    one = issue_pause_reason(SendRates(sent=120, hard_bounces=0, complaints=1), SETTINGS)
    two = issue_pause_reason(SendRates(sent=1500, hard_bounces=0, complaints=2), SETTINGS)
    assert one.startswith("paused by the complaint rate: 1 of 120 sent (0.83%) was reported ")
    assert two.startswith("paused by the complaint rate: 2 of 1500 sent (0.13%) were reported ")


def test_an_issue_with_too_few_sends_has_no_rate_yet() -> None:
    assert issue_pause_reason(SendRates(sent=99, hard_bounces=99, complaints=99), SETTINGS) == ""
