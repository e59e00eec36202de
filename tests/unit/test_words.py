"""Counts read as English: one of a thing, any other number of things."""

from __future__ import annotations

import pytest

from newsletter.words import plural


@pytest.mark.parametrize(
    ("count", "expected"),
    [(0, "0 messages"), (1, "1 message"), (2, "2 messages"), (-1, "-1 messages")],
)
def test_one_is_singular_and_every_other_count_plural(count: int, expected: str):
    assert plural(count, "message") == expected


def test_an_irregular_plural_is_given_by_the_caller():
    assert plural(1, "body", "bodies") == "1 body"
    assert plural(3, "body", "bodies") == "3 bodies"
