"""The web forms, parsed: raw fields -> a typed request, or messages that say what to fix.

Pure: no request, no session, no clock. Every message is written for the person at the form,
who may be tired or in pain: what is wrong and what to do, in plain words."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from zoneinfo import available_timezones

from newsletter.addresses import MAX_ADDRESS_LENGTH, AddressInvalid, normalize_address
from newsletter.content.course import is_slug
from newsletter.render import clean_name
from newsletter.signup import SignupRequest
from newsletter.tags import TagInvalid, normalize_tag

#: Bots fill every field they find; people never see this one (hidden, out of the tab order).
HONEYPOT = "leave_empty"
MAX_NAME_LENGTH = 100
#: Longer values are cut before they are even looked at, so errors echo no megabytes back.
MAX_FIELD_LENGTH = 1000
_FORM_NAME = re.compile(r"[a-z0-9-]{1,40}")
#: RFC 5321: the part of an address before the @ holds at most 64 octets.
MAX_LOCAL_PART_LENGTH = 64
#: Control characters (C0, DEL, C1) and the Unicode line and paragraph separators: no
#: keyboard types them into a name field, and in a header a line break starts a new one.
#: A tab (pasted from a spreadsheet, say) is only a space.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


@dataclass(frozen=True, slots=True)
class Invalid:
    """Field -> what to fix, and the values as typed, to fill the form again."""

    errors: dict[str, str]
    values: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Trapped:
    """The honeypot was filled: answer as if all went well, do nothing."""


class Action(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    LEAVE_COURSE = "leave-course"
    LEAVE_ALL = "leave-all"
    TIMEZONE = "timezone"
    EXPORT = "export"
    DELETE = "delete"


#: Actions on one course when the form names one (pause and resume act on all otherwise).
COURSE_ACTIONS = frozenset({Action.PAUSE, Action.RESUME, Action.LEAVE_COURSE})
#: Longest course slug looked at (the database keeps 100 characters).
MAX_SLUG_LENGTH = 100


@dataclass(frozen=True, slots=True)
class PreferencesRequest:
    action: Action
    timezone: str | None = None  #: for Action.TIMEZONE; None: the configured default
    course: str | None = None  #: the slug of the course acted on; None: every course


def parse_course(raw: str) -> str | None:
    """A value that can be a course's slug, else None (checked, never trusted: the
    caller still looks it up among the live courses or the subscriber's own)."""
    text = raw.strip()
    return text if text and len(text) <= MAX_SLUG_LENGTH and is_slug(text) else None


#: The preferences form's choice for "no zone of my own".
DEFAULT_ZONE = "default"


@cache
def known_timezones() -> frozenset[str]:
    return frozenset(available_timezones())


def sorted_timezones() -> list[str]:
    return sorted(known_timezones())


def parse_timezone(raw: str) -> str | None:
    """A known IANA name, else None. Checked against the zone list rather than by loading
    it, so no path-like value ever reaches the file system."""
    text = raw.strip()
    return text if text in known_timezones() else None


def parse_signup(form: Mapping[str, str]) -> SignupRequest | Invalid | Trapped:
    typed = {name: form.get(name, "")[:MAX_FIELD_LENGTH] for name in ("email", "first_name")}
    if form.get(HONEYPOT, "").strip():
        return Trapped()
    errors: dict[str, str] = {}
    email = ""
    try:
        email = _email(typed["email"])
    except ValueError as exc:
        errors["email"] = str(exc)
    name = typed["first_name"].strip()
    if _CONTROL.search(name):
        errors["first_name"] = (
            "Your name had a line break or an invisible control character in it. We have "
            "taken it out below: please check your name and send the form again."
        )
    elif len(name) > MAX_NAME_LENGTH:
        errors["first_name"] = (
            f"Please shorten your name to {MAX_NAME_LENGTH} characters or fewer "
            f"(it has {len(name)})."
        )
    if errors:
        # Shown again in the form; control characters have no place in a page.
        values = {field: _CONTROL.sub(" ", value) for field, value in typed.items()}
        return Invalid(errors, values)
    form_name = form.get("form", "").strip()
    return SignupRequest(
        email=email,
        first_name=clean_name(name),
        # The browser fills this in; a value we do not know is not the person's fault, so
        # it silently falls back to the default rather than failing the form.
        timezone=parse_timezone(form.get("timezone", "")[:MAX_FIELD_LENGTH]),
        form=form_name if _FORM_NAME.fullmatch(form_name) else "signup-page",
        consent_version=form.get("consent_version", "").strip()[:40],
        tags=parse_tags(form.get("tags", "")[:MAX_FIELD_LENGTH]),
    )


#: Tags a signup form may set at once; more are ignored.
MAX_FORM_TAGS = 5


def parse_tags(raw: str) -> tuple[str, ...]:
    """The tags of a form's hidden field; one that is no tag is left out silently, as the
    person did not type it (a page's author did) and should not see a form fail for it."""
    tags = []
    for word in raw.split()[:MAX_FORM_TAGS]:
        try:
            tags.append(normalize_tag(word))
        except TagInvalid:
            continue
    return tuple(dict.fromkeys(tags))


def _email(raw: str) -> str:
    text = raw.strip()
    if not text:
        raise ValueError("Please enter your email address.")
    if len(text) > MAX_ADDRESS_LENGTH:
        raise ValueError(
            f"This is longer than {MAX_ADDRESS_LENGTH} characters, more than an email address "
            "can be. Please check it."
        )
    if "@" not in text:
        raise ValueError("An email address needs an @ sign, as in name@example.com.")
    local_part = text.rpartition("@")[0]
    if len(local_part.encode()) > MAX_LOCAL_PART_LENGTH:
        raise ValueError(
            f"The part before the @ is longer than {MAX_LOCAL_PART_LENGTH} characters, more "
            "than an email address can have. Please check it."
        )
    try:
        return normalize_address(text)
    except AddressInvalid:
        if not local_part.isascii():
            raise ValueError(
                "We cannot yet send email to an address with accents or other scripts before "
                "the @ (such as é or 用). Please use another address if you have one."
            ) from None
        raise ValueError(
            "This does not look like an email address that can receive mail. Please check "
            "it for typing mistakes; it should look like name@example.com."
        ) from None


def parse_preferences(form: Mapping[str, str]) -> PreferencesRequest | Invalid:
    raw_action = form.get("action", "")[:MAX_FIELD_LENGTH]
    raw_zone = form.get("timezone", "")[:MAX_FIELD_LENGTH]
    values = {"timezone": raw_zone}
    try:
        action = Action(raw_action)
    except ValueError:
        return Invalid({"action": "Please choose one of the buttons on this page."}, values)
    if action in COURSE_ACTIONS:
        course = parse_course(form.get("course", "")[:MAX_FIELD_LENGTH])
        if action == Action.LEAVE_COURSE and course is None:
            return Invalid({"action": "Please choose the course to leave on this page."}, values)
        return PreferencesRequest(action, course=course)
    if action != Action.TIMEZONE:
        return PreferencesRequest(action)
    if raw_zone.strip() == DEFAULT_ZONE:
        return PreferencesRequest(action, None)
    zone = parse_timezone(raw_zone)
    if zone is None:
        return Invalid(
            {"timezone": "Please choose your time zone from the list, such as Europe/London."},
            values,
        )
    return PreferencesRequest(action, zone)
