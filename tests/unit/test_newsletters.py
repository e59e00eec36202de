"""A newsletter issue's file: what it says, and its mistakes at their lines."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from newsletter.broadcasts import fingerprint
from newsletter.content.newsletters import WallTime, parse_send_at, read_newsletter
from newsletter.errors import ContentError


def write(tmp_path: Path, front: str, body: str = "Hello {{ first_name }}.\n") -> Path:
    path = tmp_path / "2026-12.md"
    path.write_text(f"---\n{front}---\n\n{body}", encoding="utf-8")
    return path


def test_an_issue_names_its_subject_audience_and_time(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "subject: December news\npreheader: Two new lessons\n"
        "to: tag:news and  not course:*:active\nsend_at: 2026-12-10T10:00+01:00\n",
    )

    issue = read_newsletter(path)

    assert (issue.key, issue.subject, issue.preheader) == (
        "2026-12",
        "December news",
        "Two new lessons",
    )
    assert issue.segment == "tag:news and not course:*:active"
    assert issue.send_at == datetime(2026, 12, 10, 9, 0, tzinfo=UTC)
    assert issue.body == "Hello {{ first_name }}.\n"
    assert issue.body_line == 8


def test_without_to_an_issue_is_for_everyone(tmp_path: Path) -> None:
    issue = read_newsletter(write(tmp_path, "subject: News\npreheader: All of it\n"))
    assert (issue.segment, issue.send_at) == ("all", None)


def test_every_mistake_is_named_at_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "subject: News\nto: tag:news and\nsend_at: next Tuesday\ncolour: red\n",
    )

    with pytest.raises(ContentError) as raised:
        read_newsletter(path)

    messages = [(problem.line, problem.message) for problem in raised.value.problems]
    assert (3, "to: segment 'tag:news and': at the end: expected a term such as tag:NAME") in (
        messages
    )
    assert any(
        line == 4 and text.startswith("send_at: 'next Tuesday' is not a date and time such as")
        for line, text in messages
    )
    assert any(line == 5 and "unknown key 'colour'" in text for line, text in messages)
    assert (1, "front matter lacks 'preheader'") in messages


def test_an_issue_may_carry_its_own_daily_cap(tmp_path: Path) -> None:
    front = "subject: News\npreheader: All of it\nmax_per_subscriber_per_day: 2\n"
    assert read_newsletter(write(tmp_path, front)).max_per_subscriber_per_day == 2
    plain = read_newsletter(write(tmp_path, "subject: News\npreheader: All of it\n"))
    assert plain.max_per_subscriber_per_day is None  # config's cap


@pytest.mark.parametrize("value", ["two", "-1", "101", "1.5", "٣"])
def test_a_cap_that_is_not_a_small_whole_number_is_named_at_its_line(
    tmp_path: Path, value: str
) -> None:
    path = write(tmp_path, f"subject: News\npreheader: All\nmax_per_subscriber_per_day: {value}\n")

    with pytest.raises(ContentError) as raised:
        read_newsletter(path)

    [problem] = raised.value.problems
    assert problem.line == 4
    assert problem.message.startswith("max_per_subscriber_per_day: ")
    assert "is not a whole number from 0 (no cap) to 100" in problem.message


def test_a_send_at_without_an_offset_is_a_wall_time_in_each_subscribers_zone(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "subject: News\npreheader: All of it\nsend_at: 2026-12-10T09:00\n")

    issue = read_newsletter(path)

    assert issue.send_at == WallTime(datetime(2026, 12, 10, 9, 0))


def test_a_send_at_with_an_offset_or_z_is_one_instant_for_everyone() -> None:
    assert parse_send_at("2026-12-10T09:00Z") == datetime(2026, 12, 10, 9, 0, tzinfo=UTC)
    assert parse_send_at(" 2026-12-10T10:00+01:00 ") == datetime(2026, 12, 10, 9, 0, tzinfo=UTC)
    assert parse_send_at("2026-12-10 09:00") == WallTime(datetime(2026, 12, 10, 9, 0))


@pytest.mark.parametrize("raw", ["2026-12-10", "09:00", "2026-12-10T25:00", "tomorrow"])
def test_a_send_at_needs_a_date_and_a_time_of_day(raw: str) -> None:
    with pytest.raises(ValueError, match=r"is not a date and time such as 2026-12-10T09:00"):
        parse_send_at(raw)


def test_the_same_time_with_and_without_an_offset_are_different_issues(tmp_path: Path) -> None:
    front = "subject: News\npreheader: All of it\nsend_at: 2026-12-10T09:00{}\n"
    instant = read_newsletter(write(tmp_path, front.format("+00:00")))
    local = read_newsletter(write(tmp_path, front.format("")))

    assert fingerprint(instant) != fingerprint(local)


def test_an_issue_sent_at_an_instant_keeps_the_fingerprint_it_had_before_local_times(
    tmp_path: Path,
) -> None:
    """A send started before local times existed is still resumed, not refused."""
    issue = read_newsletter(
        write(tmp_path, "subject: News\npreheader: All of it\nsend_at: 2026-12-10T09:00Z\n")
    )
    parts = ("News", "All of it", "all", "Hello {{ first_name }}.\n", "2026-12-10 09:00:00+00:00")

    assert fingerprint(issue) == hashlib.sha256("\x00".join(parts).encode()).hexdigest()
