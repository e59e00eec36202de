"""The pure form parsers: raw fields -> a typed request, or what to fix."""

from __future__ import annotations

import pytest

from newsletter.signup import CONSENT_VERSION, SignupRequest
from newsletter.web.forms import (
    HONEYPOT,
    Action,
    Invalid,
    PreferencesRequest,
    Trapped,
    parse_preferences,
    parse_signup,
    parse_timezone,
)


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ({"email": "Ana@Example.com"}, SignupRequest("ana@example.com")),
        (
            {"email": " ana@example.com ", "first_name": "  Ana\tMaria\x07 ", "form": "snippet"},
            SignupRequest("ana@example.com", "Ana Maria", form="snippet"),
        ),
        (
            {"email": "ana@example.com", "timezone": "Europe/Paris"},
            SignupRequest("ana@example.com", timezone="Europe/Paris"),
        ),
        # An unknown zone from the browser is not the person's fault: the default is used.
        (
            {"email": "ana@example.com", "timezone": "Narnia/Cair_Paravel"},
            SignupRequest("ana@example.com"),
        ),
        # A form name outside [a-z0-9-] is recorded as the signup page.
        (
            {"email": "ana@example.com", "form": "<b>evil</b>"},
            SignupRequest("ana@example.com"),
        ),
        ({"email": "ana@bücher.example"}, SignupRequest("ana@xn--bcher-kva.example")),
    ],
)
def test_good_signups_parse_to_a_request(form, expected):
    assert parse_signup(form) == expected
    assert expected.consent_version == CONSENT_VERSION


@pytest.mark.parametrize(
    ("form", "field", "fragment"),
    [
        ({}, "email", "enter your email"),
        ({"email": "   "}, "email", "enter your email"),
        ({"email": "ana"}, "email", "@ sign"),
        ({"email": "ana@"}, "email", "does not look like"),
        ({"email": "ana@example"}, "email", "does not look like"),
        ({"email": "x" * 300 + "@example.com"}, "email", "longer than 254"),
        ({"email": "ana@example.com", "first_name": "n" * 101}, "first_name", "100 characters"),
    ],
)
def test_bad_signups_say_what_to_fix_and_keep_what_was_typed(form, field, fragment):
    result = parse_signup(form)
    assert isinstance(result, Invalid)
    assert fragment in result.errors[field]
    assert result.values["email"] == form.get("email", "")[:1000]


def test_the_honeypot_wins_over_everything():
    assert parse_signup({"email": "", HONEYPOT: "x"}) == Trapped()


@pytest.mark.parametrize(
    ("raw", "zone"),
    [
        ("Europe/London", "Europe/London"),
        (" America/New_York ", "America/New_York"),
        ("../../../etc/passwd", None),
        ("europe/london", None),
        ("", None),
    ],
)
def test_only_known_iana_zones_are_accepted(raw, zone):
    assert parse_timezone(raw) == zone


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ({"action": "pause"}, PreferencesRequest(Action.PAUSE)),
        ({"action": "delete", "timezone": "junk"}, PreferencesRequest(Action.DELETE)),
        (
            {"action": "timezone", "timezone": "Asia/Tokyo"},
            PreferencesRequest(Action.TIMEZONE, "Asia/Tokyo"),
        ),
        ({"action": "timezone", "timezone": "default"}, PreferencesRequest(Action.TIMEZONE)),
    ],
)
def test_preference_actions_parse(form, expected):
    assert parse_preferences(form) == expected


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({}, "action"),
        ({"action": "drop table"}, "action"),
        ({"action": "timezone", "timezone": "Mars/Base"}, "timezone"),
    ],
)
def test_bad_preference_forms_say_what_to_fix(form, field):
    result = parse_preferences(form)
    assert isinstance(result, Invalid)
    assert field in result.errors
