"""throttle: the per-second token bucket and the hourly and daily caps, on explicit instants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from newsletter.delivery.throttle import TokenBucket, capped

T0 = datetime(2024, 10, 1, 9, 30, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("max_per_second", "burst"),
    [(10, 10), (2.5, 2), (1, 1), (0.5, 1), (0.01, 1)],
)
def test_a_new_bucket_allows_one_seconds_worth_and_at_least_one(
    max_per_second: float, burst: int
) -> None:
    assert TokenBucket(max_per_second).available(T0) == burst


def test_taking_spends_tokens_and_time_refills_them() -> None:
    bucket = TokenBucket(10)

    bucket.take(10, T0)

    assert bucket.available(T0) == 0
    assert bucket.available(at(0.1)) == 1
    assert bucket.available(at(0.55)) == 5
    assert bucket.available(at(60)) == 10  # never more than the burst


def test_refill_in_many_small_steps_loses_no_token_to_rounding() -> None:
    bucket = TokenBucket(10)
    bucket.take(10, T0)

    # Ten steps of 10 ms add up to 0.9999999999999999 in floats, yet one whole token.
    counts = [bucket.available(at(step / 100)) for step in range(1, 101)]

    assert counts == [step // 10 for step in range(1, 101)]


def test_taking_more_than_available_is_a_debt_that_time_repays() -> None:
    bucket = TokenBucket(10)

    bucket.take(15, T0)

    assert bucket.available(T0) == 0
    assert bucket.available(at(0.5)) == 0
    assert bucket.available(at(0.6)) == 1


def test_a_rate_below_one_a_second_spaces_single_messages() -> None:
    bucket = TokenBucket(0.5)

    bucket.take(1, T0)

    assert bucket.available(at(1)) == 0
    assert bucket.available(at(2)) == 1


def test_a_clock_stepping_back_adds_nothing() -> None:
    bucket = TokenBucket(10)
    bucket.take(10, at(5))

    assert bucket.available(at(1)) == 0
    # Refilling counts from the latest instant seen, not from the step back.
    assert bucket.available(at(5.1)) == 1


def test_bucket_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(0)
    with pytest.raises(ValueError, match="negative"):
        TokenBucket(1).take(-1, T0)


@pytest.mark.parametrize(
    ("available", "sent_last_hour", "sent_last_day", "max_per_hour", "max_per_day", "allowed"),
    [
        pytest.param(10, 5000, 90000, 0, 0, 10, id="no caps"),
        pytest.param(10, 95, 95, 100, 0, 5, id="hour cap nearly reached"),
        pytest.param(10, 5, 998, 100, 1000, 2, id="day cap nearly reached"),
        pytest.param(10, 95, 998, 100, 1000, 2, id="the tighter cap wins"),
        pytest.param(3, 5, 5, 100, 1000, 3, id="the bucket is tighter"),
        pytest.param(10, 100, 100, 100, 0, 0, id="hour cap reached"),
        pytest.param(10, 130, 130, 100, 0, 0, id="over a cap is still zero"),
        pytest.param(0, 0, 0, 100, 1000, 0, id="empty bucket"),
    ],
)
def test_caps_lower_what_the_bucket_allows(
    available: int,
    sent_last_hour: int,
    sent_last_day: int,
    max_per_hour: int,
    max_per_day: int,
    allowed: int,
) -> None:
    assert capped(available, sent_last_hour, sent_last_day, max_per_hour, max_per_day) == allowed


def test_wait_says_how_long_until_the_next_message_may_go() -> None:
    bucket = TokenBucket(4)
    start = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
    bucket.take(4, start)

    assert bucket.wait_s(start) == pytest.approx(0.25)
    assert bucket.wait_s(start + timedelta(seconds=0.1)) == pytest.approx(0.15)
    assert bucket.wait_s(start + timedelta(seconds=0.25)) == 0
