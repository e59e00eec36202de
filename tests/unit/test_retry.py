"""retry.decide: every reply a relay can give, mapped to what the dispatcher does next."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from newsletter.delivery.retry import Decision, PolicyWatch, RetryPolicy, Verdict, decide
from newsletter.delivery.transport import SendReport, Stage

NOW = datetime(2024, 10, 1, 9, 30, tzinfo=UTC)
STEADY = RetryPolicy(jitter=0)


def refused(
    stage: Stage, code: int | None, enhanced: str | None = None, text: str = "refused"
) -> SendReport:
    """A failed send as SmtpTransport reports it: the enhanced status leads the reply text."""
    message = f"{enhanced} {text}" if enhanced else text
    return SendReport(accepted=False, code=code, enhanced=enhanced, message=message, stage=stage)


def dropped(stage: Stage, text: str) -> SendReport:
    """A send whose connection was cut or timed out: no reply at all."""
    return SendReport(
        accepted=False, code=None, enhanced=None, message=text, stage=stage, dropped=True
    )


def decided(
    report: SendReport,
    *,
    attempts: int = 1,
    first_attempt_at: datetime = NOW,
    policy: RetryPolicy = STEADY,
    seed: int = 0,
) -> Decision:
    return decide(
        report,
        attempts=attempts,
        first_attempt_at=first_attempt_at,
        now=NOW,
        policy=policy,
        rng=random.Random(seed),
    )


ACCEPTED = SendReport(accepted=True, code=250, enhanced=None, message="OK", stage=None)
MAILBOX_FULL = refused(Stage.RCPT, 452, "4.2.2", "Mailbox full")


def retry_delay(decision: Decision) -> timedelta:
    assert decision.retry_at is not None
    return decision.retry_at - NOW


@pytest.mark.parametrize(
    ("report", "verdict"),
    [
        (ACCEPTED, Verdict.SENT),
        # The session failed: the relay cannot take mail now. The circuit counts it; the
        # delivery waits, uncharged.
        (refused(Stage.CONNECT, None, text="Connection refused"), Verdict.RELAY_UNAVAILABLE),
        (refused(Stage.CONNECT, None, text="Malformed SMTP response"), Verdict.RELAY_UNAVAILABLE),
        (refused(Stage.CONNECT, 421, "4.3.2"), Verdict.RELAY_UNAVAILABLE),
        (refused(Stage.HELO, None, text="Server disconnected"), Verdict.RELAY_UNAVAILABLE),
        (refused(Stage.TLS, None, text="certificate verify failed"), Verdict.RELAY_UNAVAILABLE),
        (refused(Stage.AUTH, 454, "4.7.0"), Verdict.RELAY_UNAVAILABLE),
        (refused(Stage.MAIL, 421, "4.7.0", "Too many connections"), Verdict.RELAY_UNAVAILABLE),
        (refused(Stage.MAIL, 451, "4.3.0"), Verdict.RELAY_UNAVAILABLE),
        (refused(Stage.MAIL, 452, "4.3.1", "Insufficient storage"), Verdict.RELAY_UNAVAILABLE),
        # 421 closes the channel whatever the stage (RFC 5321 3.8).
        (refused(Stage.RCPT, 421, "4.7.0", "Rate limited"), Verdict.RELAY_UNAVAILABLE),
        (refused(Stage.DATA, 421), Verdict.RELAY_UNAVAILABLE),
        # The relay refuses us, the sender: pause everything, blame no subscriber.
        (refused(Stage.AUTH, None, text="AUTH not offered"), Verdict.SENDER_BLOCKED),
        # ...but a relay that went quiet or hung up during AUTH is the relay's trouble.
        (dropped(Stage.AUTH, "Timed out waiting for server response"), Verdict.RELAY_UNAVAILABLE),
        # The sender's own address refused, at whatever stage: ours to fix.
        (refused(Stage.RCPT, 550, "5.1.8", "Sender domain not found"), Verdict.SENDER_BLOCKED),
        (refused(Stage.RCPT, 553, "5.1.7", "Bad sender address syntax"), Verdict.SENDER_BLOCKED),
        (refused(Stage.MAIL, 552, "5.2.3", "Message length exceeds limit"), Verdict.FAILED),
        (refused(Stage.AUTH, 535, "5.7.8", "Bad credentials"), Verdict.SENDER_BLOCKED),
        (refused(Stage.AUTH, 535), Verdict.SENDER_BLOCKED),
        (refused(Stage.AUTH, 534), Verdict.SENDER_BLOCKED),
        (refused(Stage.AUTH, 538), Verdict.SENDER_BLOCKED),
        (refused(Stage.MAIL, 530), Verdict.SENDER_BLOCKED),
        (refused(Stage.RCPT, 530, "5.7.0", "Authentication required"), Verdict.SENDER_BLOCKED),
        (refused(Stage.CONNECT, 554), Verdict.SENDER_BLOCKED),
        (refused(Stage.HELO, 550), Verdict.SENDER_BLOCKED),
        (refused(Stage.TLS, 554), Verdict.SENDER_BLOCKED),
        (refused(Stage.MAIL, 553, "5.1.8", "Sender domain unknown"), Verdict.SENDER_BLOCKED),
        (refused(Stage.MAIL, 550, "5.7.1", "Sender address rejected"), Verdict.SENDER_BLOCKED),
        # ...but a size refusal at MAIL FROM is about this message, for any recipient.
        (refused(Stage.MAIL, 552, text="Message size exceeds fixed limit"), Verdict.FAILED),
        (refused(Stage.MAIL, 552, "5.3.4", "Message too big"), Verdict.FAILED),
        # One recipient, temporarily: retried with backoff, charged.
        (refused(Stage.RCPT, 450, "4.2.0", "Greylisted"), Verdict.RETRY),
        (refused(Stage.RCPT, 451, "4.7.1", "Try again later"), Verdict.RETRY),
        (refused(Stage.DATA, 451, "4.3.0"), Verdict.RETRY),
        (refused(Stage.DATA, None, text="Connection lost"), Verdict.RETRY),
        (MAILBOX_FULL, Verdict.RETRY),
        # A bare 552 at RCPT or after DATA: "storage allocation" (RFC 5321 4.5.3.1.10).
        (refused(Stage.RCPT, 552, text="Too many recipients"), Verdict.RETRY),
        (refused(Stage.DATA, 552, text="Exceeded storage allocation"), Verdict.RETRY),
        # A full mailbox may empty, even when the relay says 5xx.
        (refused(Stage.RCPT, 552, "5.2.2", "Over quota"), Verdict.RETRY),
        (refused(Stage.DATA, 552, "5.2.2", "Over quota"), Verdict.RETRY),
        # One recipient's server refuses our mail for policy: that message fails, the
        # subscriber stays.
        (refused(Stage.RCPT, 550, "5.7.1", "Relaying denied"), Verdict.FAILED),
        (refused(Stage.RCPT, 550, "5.7.26", "Unauthenticated email"), Verdict.FAILED),
        (refused(Stage.RCPT, 550, "5.7.515", "Access denied"), Verdict.FAILED),
        (refused(Stage.DATA, 554, "5.7.1", "Spam"), Verdict.FAILED),
        # The address is bad.
        (refused(Stage.RCPT, 550, "5.1.1", "No such user"), Verdict.BOUNCED),
        (refused(Stage.RCPT, 550), Verdict.BOUNCED),
        (refused(Stage.RCPT, 553, "5.1.3", "Bad address syntax"), Verdict.BOUNCED),
        (refused(Stage.RCPT, 550, "5.2.1", "Mailbox disabled"), Verdict.BOUNCED),
        (refused(Stage.DATA, 550, "5.1.1", "No such user"), Verdict.BOUNCED),
        # This message is refused, not the subscriber.
        (refused(Stage.DATA, 554), Verdict.FAILED),
        (refused(Stage.DATA, 552, "5.3.4", "Too big"), Verdict.FAILED),
        (refused(Stage.DATA, 554, "5.6.0", "Bad content"), Verdict.FAILED),
    ],
    ids=str,
)
def test_reply_gets_its_verdict(report: SendReport, verdict: Verdict) -> None:
    decision = decided(report)

    assert decision.verdict is verdict
    # Only what is tried again by itself has a time to try again.
    assert (decision.retry_at is not None) == (verdict is Verdict.RETRY)


@pytest.mark.parametrize(
    ("report", "policy", "too_big"),
    [
        (refused(Stage.RCPT, 550, "5.7.26", "Unauthenticated email"), True, False),
        (refused(Stage.DATA, 554, "5.7.1", "Spam"), True, False),
        (refused(Stage.RCPT, 550, "5.1.1", "No such user"), False, False),
        (refused(Stage.RCPT, 451, "4.7.1", "Greylisted"), False, False),
        (refused(Stage.MAIL, 552, text="Message size exceeds fixed limit"), False, True),
        (refused(Stage.MAIL, 552, "5.2.3", "Message length exceeds limit"), False, True),
        (refused(Stage.DATA, 552, "5.3.4", "Too big"), False, True),
        (refused(Stage.DATA, 554, "5.6.0", "Bad content"), False, False),
    ],
    ids=str,
)
def test_policy_and_size_refusals_are_named(
    report: SendReport, *, policy: bool, too_big: bool
) -> None:
    decision = decided(report)

    assert (decision.policy, decision.too_big) == (policy, too_big)


@pytest.mark.parametrize(
    ("attempts", "delay_min"),
    [
        (1, 5),
        (2, 10),
        (3, 20),
        (6, 160),
        (7, 240),  # 320, capped at 4 hours
        (30, 240),
        (5000, 240),  # far beyond what a float power can hold
    ],
)
def test_backoff_doubles_until_the_cap(attempts: int, delay_min: int) -> None:
    lifetime = RetryPolicy(jitter=0, give_up_after_s=10**9)

    decision = decided(MAILBOX_FULL, attempts=attempts, policy=lifetime)

    assert decision.verdict is Verdict.RETRY
    assert retry_delay(decision) == timedelta(minutes=delay_min)


def test_jitter_spreads_each_delay_within_its_bounds() -> None:
    policy = RetryPolicy(jitter=0.2)

    delays = {
        retry_delay(decided(MAILBOX_FULL, attempts=2, policy=policy, seed=seed))
        for seed in range(200)
    }

    assert all(timedelta(minutes=8) <= delay <= timedelta(minutes=12) for delay in delays)
    assert len(delays) > 100  # spread out, not a handful of values
    assert min(delays) < timedelta(minutes=9)
    assert max(delays) > timedelta(minutes=11)


def test_same_seed_same_delay() -> None:
    policy = RetryPolicy()

    assert decided(MAILBOX_FULL, policy=policy, seed=7) == decided(
        MAILBOX_FULL, policy=policy, seed=7
    )


def test_retry_that_would_outlive_the_message_gives_up() -> None:
    # Four days minus an hour ago; the next retry, 4 hours on, falls past the deadline.
    first = NOW - timedelta(days=4) + timedelta(hours=1)

    decision = decided(MAILBOX_FULL, attempts=12, first_attempt_at=first)

    assert decision == Decision(
        Verdict.FAILED, None, "gave up after 12 attempts: RCPT: 452 4.2.2 Mailbox full"
    )


def test_retry_inside_the_lifetime_is_still_a_retry() -> None:
    first = NOW - timedelta(days=4) + timedelta(hours=4, seconds=1)

    decision = decided(MAILBOX_FULL, attempts=12, first_attempt_at=first)

    assert decision.verdict is Verdict.RETRY
    assert decision.retry_at == NOW + timedelta(hours=4)


@pytest.mark.parametrize(
    ("report", "reason"),
    [
        (ACCEPTED, "250 OK"),
        (refused(Stage.RCPT, 550, "5.1.1", "No such user"), "RCPT: 550 5.1.1 No such user"),
        (refused(Stage.CONNECT, None, text="Connection refused"), "CONNECT: Connection refused"),
    ],
)
def test_reason_is_one_line_naming_the_stage_and_reply(report: SendReport, reason: str) -> None:
    assert decided(report).reason == reason


def test_attempts_count_this_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        decided(MAILBOX_FULL, attempts=0)


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ({"first_delay_s": 0}, "first_delay_s"),
        ({"first_delay_s": 600, "max_delay_s": 300}, "max_delay_s"),
        ({"factor": 0.5}, "factor"),
        ({"jitter": 1.0}, "jitter"),
        ({"jitter": -0.1}, "jitter"),
    ],
)
def test_policy_refuses_settings_that_make_no_sense(
    settings: dict[str, float], complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint):
        RetryPolicy(**settings)


def test_a_few_policy_refusals_in_a_long_window_are_one_recipients_business() -> None:
    watch = PolicyWatch(window=200, share=0.05)

    verdicts = [
        watch.observe(refused_for_policy=n % 20 == 0, recipient=f"r{n}@a.example", reason="x")
        for n in range(400)
    ]

    assert not any(verdicts)  # 10 in every 200: at the limit, not over it


def test_policy_refusals_over_the_share_of_the_window_say_who_refused_and_how() -> None:
    watch = PolicyWatch(window=200, share=0.05)
    for n in range(20):
        watch.observe(refused_for_policy=False, recipient=f"ok{n}@b.example", reason="250 OK")
    gmail = "RCPT: 550 5.7.26 Unauthenticated email"
    too_many = [
        watch.observe(
            refused_for_policy=True,
            recipient=f"r{n}@{'gmail.com' if n < 8 else 'yahoo.com'}",
            reason=gmail if n < 8 else "RCPT: 554 5.7.1 Rejected",
        )
        for n in range(11)
    ]

    assert too_many == [False] * 10 + [True]
    assert watch.summary() == (
        "11 of the last 31 recipients were refused for policy reasons (gmail.com 8, "
        "yahoo.com 3); replies: RCPT: 550 5.7.26 Unauthenticated email (8x); "
        "RCPT: 554 5.7.1 Rejected (3x)"
    )


def test_refusals_that_leave_the_window_no_longer_count() -> None:
    watch = PolicyWatch(window=10, share=0.2)
    for n in range(2):
        watch.observe(refused_for_policy=True, recipient=f"r{n}@c.example", reason="x")
    for n in range(10):  # pushes both refusals out
        watch.observe(refused_for_policy=False, recipient=f"ok{n}@c.example", reason="ok")

    assert not watch.observe(refused_for_policy=True, recipient="a@c.example", reason="x")
    assert not watch.observe(refused_for_policy=True, recipient="b@c.example", reason="x")
    assert watch.observe(refused_for_policy=True, recipient="c@c.example", reason="x")
