"""A subscriber as an admin or a CSV file gives one: address, one-line name, time zone."""

from __future__ import annotations

import pytest

from newsletter.errors import NewsletterError
from newsletter.subscribers import MAX_NAME_LENGTH, NewSubscriber


def test_a_subscriber_is_parsed_into_its_normal_form():
    assert NewSubscriber.parse(" Ana@Example.com ", "  Ana  Maria ", "Europe/Paris") == (
        NewSubscriber("ana@example.com", "Ana Maria", "Europe/Paris")
    )


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("Ana\r\nBcc: x@evil.test", "U+000D"),
        ("Ana\nMaria", "U+000A"),
        ("Ana\x00", "U+0000"),
        ("Ana\tMaria", "U+0009"),
        ("Ana\x1b[2J", "U+001B"),
        ("Ana\x85Maria", "U+0085"),
        ("Ana\u2028Maria", "U+2028"),
    ],
)
def test_a_name_holding_a_control_character_is_refused_naming_the_field(name, code):
    with pytest.raises(NewsletterError) as caught:
        NewSubscriber.parse("ana@example.com", name)
    message = str(caught.value)
    assert message.startswith(f"first name {name.strip()!r}: holds a control character ({code})")
    assert "\n" not in message


def test_line_breaks_around_a_name_are_trimmed_not_refused():
    assert NewSubscriber.parse("ana@example.com", "\tAna\r\n").first_name == "Ana"


def test_a_name_over_the_column_size_is_refused_rather_than_cut():
    assert NewSubscriber.parse("ana@example.com", "n" * MAX_NAME_LENGTH).first_name
    with pytest.raises(NewsletterError, match=f"101 characters; at most {MAX_NAME_LENGTH}"):
        NewSubscriber.parse("ana@example.com", "n" * 101)


def test_an_unknown_time_zone_is_refused():
    with pytest.raises(NewsletterError, match="'Mars/Base' is not a known time zone"):
        NewSubscriber.parse("ana@example.com", "", "Mars/Base")
