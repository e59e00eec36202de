"""Segments as people write them: what they parse to, and where a mistake is."""

from __future__ import annotations

from datetime import date

import pytest

from newsletter.segments import (
    All,
    Any_,
    Course,
    Everyone,
    Not,
    SegmentInvalid,
    SignedUp,
    Tag,
    TimeZone,
    courses_named,
    parse,
)


@pytest.mark.parametrize(
    ("text", "segment"),
    [
        ("all", Everyone()),
        ("tag:baker", Tag("baker")),
        ("TAG:Baker", Tag("baker")),
        ("course:sourdough", Course("sourdough", "any")),
        ("course:sourdough:finished", Course("sourdough", "finished")),
        ("signup:before:2026-06-01", SignedUp(True, date(2026, 6, 1))),
        ("tz:Europe/London", TimeZone("Europe/London")),
        (
            "tag:baker and not course:sourdough:active",
            All((Tag("baker"), Not(Course("sourdough", "active")))),
        ),
        # 'and' binds tighter than 'or', as in SQL and Python.
        ("tag:a or tag:b and tag:c", Any_((Tag("a"), All((Tag("b"), Tag("c")))))),
        ("(tag:a or tag:b) and tag:c", All((Any_((Tag("a"), Tag("b"))), Tag("c")))),
        ("not not tag:a", Not(Not(Tag("a")))),
    ],
)
def test_what_a_segment_means(text: str, segment: object) -> None:
    assert parse(text) == segment


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the segment is empty; `all` is everyone"),
        ("tag:baker and", "at the end: expected a term such as tag:NAME"),
        ("(tag:a", "at the end: expected ')'"),
        ("tag:a tag:b", "at character 7, 'tag:b': expected 'and', 'or' or the end"),
        ("course:bread:done", "expected course:SLUG or course:SLUG:any|active|finished|left"),
        ("signup:after:June", "expected signup:before:YYYY-MM-DD or signup:after:YYYY-MM-DD"),
        ("tz:Europe/Lonon", "expected tz: and an IANA time zone"),
        ("tag:a; drop table", "'a;' is not a tag"),
        ("bakers", "expected tag:NAME, course:SLUG[:STATE]"),
    ],
)
def test_a_mistake_is_named_where_it_is(text: str, message: str) -> None:
    with pytest.raises(SegmentInvalid) as caught:
        parse(text)
    assert message in str(caught.value)


def test_the_courses_a_segment_names_can_be_checked() -> None:
    segment = parse("course:a and not (course:b:left or tag:x)")
    assert courses_named(segment) == {"a", "b"}
