"""Signed link tokens: one subscriber, one purpose, and an expiry only for confirmation."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from newsletter.tokens import LinkMaker, LinkTarget, Purpose, TokenExpired, TokenInvalid, Tokens

SECRET = "test-secret-not-for-production"
ISSUED = datetime(2024, 3, 1, 9, 30, tzinfo=UTC)
BASE_URL = "https://news.example.org"


@pytest.fixture
def tokens() -> Tokens:
    return Tokens(SECRET)


@pytest.mark.parametrize("purpose", list(Purpose))
@pytest.mark.parametrize("subscriber_id", [1, 42, 2**40])
def test_token_reads_back_to_its_subscriber(
    tokens: Tokens, purpose: Purpose, subscriber_id: int
) -> None:
    token = tokens.issue(purpose, subscriber_id, ISSUED)

    assert tokens.read(purpose, token, ISSUED) == subscriber_id
    # Another instance with the same secret (another process) reads it as well.
    assert Tokens(SECRET).read(purpose, token, ISSUED + timedelta(hours=1)) == subscriber_id


@pytest.mark.parametrize(
    ("issued_for", "read_as"), list(itertools.permutations(Purpose, 2)), ids=str
)
def test_token_for_one_purpose_is_rejected_for_another(
    tokens: Tokens, issued_for: Purpose, read_as: Purpose
) -> None:
    token = tokens.issue(issued_for, 42, ISSUED)

    with pytest.raises(TokenInvalid) as caught:
        tokens.read(read_as, token, ISSUED)
    assert type(caught.value) is TokenInvalid


def _other_char(char: str) -> str:
    return "B" if char == "A" else "A"


def _tampered(token: str) -> dict[str, str]:
    payload, _, signature = token.rpartition(".")
    return {
        "other subscriber": "43" + token.removeprefix("42"),
        "signature changed": f"{payload}.{_other_char(signature[0])}{signature[1:]}",
        "signature cut": token[:-4],
        "signature dropped": payload,
        "empty": "",
        "fullwidth digits": token.replace("42", "\uff14\uff12", 1),
        "garbage": "not-a-token",
    }


@pytest.mark.parametrize("purpose", list(Purpose))
@pytest.mark.parametrize(
    "how",
    [
        "other subscriber",
        "signature changed",
        "signature cut",
        "signature dropped",
        "empty",
        "fullwidth digits",
        "garbage",
    ],
)
def test_tampered_token_is_invalid(tokens: Tokens, purpose: Purpose, how: str) -> None:
    token = tokens.issue(purpose, 42, ISSUED)
    forged = _tampered(token)[how]
    assert forged != token

    with pytest.raises(TokenInvalid) as caught:
        tokens.read(purpose, forged, ISSUED)
    assert type(caught.value) is TokenInvalid


@pytest.mark.parametrize("purpose", list(Purpose))
def test_token_signed_with_another_secret_is_rejected(tokens: Tokens, purpose: Purpose) -> None:
    token = Tokens("some-other-secret").issue(purpose, 42, ISSUED)

    with pytest.raises(TokenInvalid):
        tokens.read(purpose, token, ISSUED)


def test_confirm_token_is_good_for_seven_days(tokens: Tokens) -> None:
    token = tokens.issue(Purpose.CONFIRM, 42, ISSUED)

    assert tokens.read(Purpose.CONFIRM, token, ISSUED + timedelta(days=6, hours=23)) == 42
    assert tokens.read(Purpose.CONFIRM, token, ISSUED + timedelta(days=7)) == 42


def test_confirm_token_expires_after_seven_days(tokens: Tokens) -> None:
    token = tokens.issue(Purpose.CONFIRM, 42, ISSUED)

    with pytest.raises(TokenExpired):
        tokens.read(Purpose.CONFIRM, token, ISSUED + timedelta(days=7, minutes=1))


def test_expiry_counts_from_the_issue_time_not_the_clock(tokens: Tokens) -> None:
    later = ISSUED + timedelta(days=30)
    token = tokens.issue(Purpose.CONFIRM, 42, later)

    assert tokens.read(Purpose.CONFIRM, token, later + timedelta(days=6)) == 42
    with pytest.raises(TokenExpired):
        tokens.read(Purpose.CONFIRM, token, later + timedelta(days=8))


@pytest.mark.parametrize("how", ["pushed later", "dropped", "not a number"])
def test_confirm_token_with_a_rewritten_issue_time_is_invalid(tokens: Tokens, how: str) -> None:
    token = tokens.issue(Purpose.CONFIRM, 42, ISSUED)
    subscriber, stamp, signature = token.split(".")
    new_stamp = {
        "pushed later": str(int(stamp) + 30 * 86400),  # would not have expired by day 20
        "dropped": None,
        "not a number": "abc",
    }[how]
    forged = ".".join(part for part in (subscriber, new_stamp, signature) if part is not None)

    with pytest.raises(TokenInvalid) as caught:
        tokens.read(Purpose.CONFIRM, forged, ISSUED + timedelta(days=20))
    assert type(caught.value) is TokenInvalid


@pytest.mark.parametrize("purpose", [Purpose.UNSUBSCRIBE, Purpose.PREFERENCES])
def test_unsubscribe_and_preference_tokens_still_read_ten_years_later(
    tokens: Tokens, purpose: Purpose
) -> None:
    token = tokens.issue(purpose, 42, ISSUED)

    assert tokens.read(purpose, token, ISSUED + timedelta(days=3653)) == 42


# --- links ------------------------------------------------------------------------------


@pytest.fixture
def links(tokens: Tokens) -> LinkMaker:
    # A trailing slash on the configured base must not double up in the links.
    return LinkMaker(tokens, BASE_URL + "/", "leave@example.org")


def _token_after(url: str, prefix: str) -> str:
    assert url.startswith(prefix), url
    token = url.removeprefix(prefix)
    assert token
    assert "/" not in token
    return token


def test_personal_links_carry_tokens_that_read_back_to_the_subscriber(
    tokens: Tokens, links: LinkMaker
) -> None:
    personal = links.personal_links(42, ISSUED)

    unsubscribe = _token_after(personal.unsubscribe_url, f"{BASE_URL}/unsubscribe/")
    preferences = _token_after(personal.preferences_url, f"{BASE_URL}/preferences/")
    assert tokens.read(Purpose.UNSUBSCRIBE, unsubscribe, ISSUED) == 42
    assert tokens.read(Purpose.PREFERENCES, preferences, ISSUED) == 42


def test_unsubscribe_mailto_subject_carries_the_unsubscribe_token(
    tokens: Tokens, links: LinkMaker
) -> None:
    personal = links.personal_links(42, ISSUED)

    mailto = urlsplit(personal.unsubscribe_mailto)
    assert (mailto.scheme, mailto.path) == ("mailto", "leave@example.org")
    [subject] = parse_qs(mailto.query, strict_parsing=True)["subject"]
    word, _, token = subject.partition(" ")
    assert word == "unsubscribe"
    assert tokens.read(Purpose.UNSUBSCRIBE, token, ISSUED) == 42
    assert personal.unsubscribe_url.endswith("/" + token)


def test_personal_links_of_two_subscribers_differ(links: LinkMaker) -> None:
    first, second = links.personal_links(1, ISSUED), links.personal_links(2, ISSUED)

    assert first.unsubscribe_url != second.unsubscribe_url
    assert first.preferences_url != second.preferences_url
    assert first.unsubscribe_mailto != second.unsubscribe_mailto


def test_confirm_url_carries_an_expiring_confirm_token(tokens: Tokens, links: LinkMaker) -> None:
    token = _token_after(links.confirm_url(42, ISSUED), f"{BASE_URL}/confirm/")

    assert tokens.read(Purpose.CONFIRM, token, ISSUED + timedelta(days=1)) == 42
    with pytest.raises(TokenExpired):
        tokens.read(Purpose.CONFIRM, token, ISSUED + timedelta(days=8))


@pytest.mark.parametrize("purpose", list(Purpose))
def test_a_token_for_one_course_reads_back_to_its_subscriber_and_course(
    tokens: Tokens, purpose: Purpose
) -> None:
    token = tokens.issue(purpose, 42, ISSUED, sequence_id=7)

    assert tokens.read_target(purpose, token, ISSUED) == LinkTarget(42, 7)
    assert tokens.read(purpose, token, ISSUED) == 42
    # A token without a course (every link made before courses had pages) names none.
    assert tokens.read_target(purpose, tokens.issue(purpose, 42, ISSUED), ISSUED) == (
        LinkTarget(42, None)
    )


def test_a_lessons_links_leave_its_course_or_everything(tokens: Tokens) -> None:
    links = LinkMaker(tokens, BASE_URL, "unsubscribe@example.org")
    personal = links.personal_links(42, ISSUED, sequence_id=7)

    course_token = personal.unsubscribe_url.rpartition("/")[2]
    all_token = personal.unsubscribe_all_url.rpartition("/")[2]
    assert tokens.read_target(Purpose.UNSUBSCRIBE, course_token, ISSUED) == LinkTarget(42, 7)
    assert tokens.read_target(Purpose.UNSUBSCRIBE, all_token, ISSUED) == LinkTarget(42, None)
    # The mailto: half of List-Unsubscribe carries the same course-bound token.
    assert course_token in personal.unsubscribe_mailto


def test_a_course_cannot_be_written_into_a_signed_token(tokens: Tokens) -> None:
    token = tokens.issue(Purpose.UNSUBSCRIBE, 42, ISSUED)
    payload, _, signature = token.rpartition(".")
    with pytest.raises(TokenInvalid):
        tokens.read_target(Purpose.UNSUBSCRIBE, f"{payload}-7.{signature}", ISSUED)
