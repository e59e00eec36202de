"""The pure form parsers: raw fields -> a typed request, or what to fix."""

from __future__ import annotations

import pytest

from newsletter.signup import SignupRequest
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
            {"email": " ana@example.com ", "first_name": "  Ana\tMaria \n", "form": "snippet"},
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
    assert expected.consent_version == ""  # the course's current sentence


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
        ({"email": "a" * 65 + "@example.com"}, "email", "before the @ is longer than 64"),
        ({"email": "josé@example.org"}, "email", "accents or other scripts"),
        ({"email": "用户@例子.广告"}, "email", "accents or other scripts"),
        ({"email": "ana@example.com", "first_name": "Ana\r\nBcc: x@evil"}, "first_name", "line"),
    ],
)
def test_bad_signups_say_what_to_fix_and_keep_what_was_typed(form, field, fragment):
    result = parse_signup(form)
    assert isinstance(result, Invalid)
    assert fragment in result.errors[field]
    assert result.values["email"] == form.get("email", "")[:1000]


@pytest.mark.parametrize(
    "name",
    [
        "Ana\r\nBcc: x@evil.test",
        "Ana\nMaria",
        "Ana\x00",
        "Ana\x07Maria",
        "Ana\x1bMaria",
        "Ana\x7f",
        "Ana\x85Maria",  # NEL, a C1 line break
        "Ana\x9bMaria",
        "Ana\u2028Maria",
    ],
)
def test_a_name_with_a_line_break_or_control_character_is_refused_at_its_field(name):
    result = parse_signup({"email": "ana@example.com", "first_name": name})
    assert isinstance(result, Invalid)
    assert list(result.errors) == ["first_name"]
    assert "taken it out below" in result.errors["first_name"]
    # Shown again without the character, which has no place in a page either.
    shown = result.values["first_name"]
    assert shown.replace(" ", "") == "".join(c for c in name if c.isprintable()).replace(" ", "")


@pytest.mark.parametrize(
    "name",
    ["Zoë", "“Ana” O\u2019Brien", "José-María", "Ana 🌷", "王秀英", "سارة", "נועה", "Łukasz Żółć"],
)
def test_names_in_any_script_are_kept_as_typed(name):
    result = parse_signup({"email": "ana@example.com", "first_name": f" {name} "})
    assert result == SignupRequest("ana@example.com", name)


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
