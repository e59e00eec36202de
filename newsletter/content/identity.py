"""Who a course speaks as: its sender, footer note, consent sentence, list name and
language, and what follows it ([on_finish]); read from course.toml and kept with each
queued version of the course.

Pure: validation turns the manifest's tables into a CourseIdentity or messages naming the
key; course.py adds the file and line."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, EmailStr, Field, ValidationError, field_validator

from newsletter.headers import control_character
from newsletter.tags import TagInvalid, normalize_tag

#: What a course without a `consent` key asks people to agree to.
DEFAULT_CONSENT = (
    "Send me this free email course, one lesson every few days. "
    "I can stop it at any time with the link at the foot of every email."
)
DEFAULT_LANGUAGE = "en"
#: Longest display name, in characters, as for config's [sender] name: it bounds the header.
NAME_MAX_CHARS = 100
CONSENT_MAX_CHARS = 1000
FOOTER_MAX_CHARS = 2000
# BCP 47 in the shape browsers and mail clients read: a language, then subtags.
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*")
# RFC 2919: a list id is dot-atom text, at least two parts; kept to letters, digits and '-'.
_LIST_ID = re.compile(r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")


def consent_version(text: str) -> str:
    """A short hash of the consent sentence: a new wording gets a new version by itself,
    and a record's version says which words were agreed to."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class CourseIdentity:
    """What a course says about itself in its emails and on its signup page. None where
    the course leaves it to config.toml's [sender] (name, address) or to its title and
    slug (list name, List-Id)."""

    sender_name: str | None = None
    sender_address: str | None = None
    reply_to: str | None = None
    footer_note: str = ""  #: paragraphs separated by blank lines; "" for none
    consent_text: str = DEFAULT_CONSENT
    consent_version: str = consent_version(DEFAULT_CONSENT)
    list_name: str | None = None
    list_id: str | None = None
    language: str = DEFAULT_LANGUAGE
    #: When someone finishes the course ([on_finish]): a tag for them, and another course
    #: they start that many days later. None: nothing.
    finish_tag: str | None = None
    next_course: str | None = None
    next_after_days: int = 0
    #: Its own daily cap per person ([sending]), over config's; None: config's.
    max_per_subscriber_per_day: int | None = None

    @property
    def footer_paragraphs(self) -> list[str]:
        return [
            " ".join(part.split())
            for part in re.split(r"\n\s*\n", self.footer_note)
            if part.strip()
        ]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> CourseIdentity:
        """From a stored snapshot; keys it does not know (a newer version's) are ignored."""
        known = cls.__dataclass_fields__.keys()
        return cls(**{key: value for key, value in (data or {}).items() if key in known})


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _one_line(value: str | None) -> str | None:
    # Names go into headers: a line break there would start a header of its own.
    if value is None:
        return None
    if found := control_character(value):
        raise ValueError(f"contains a control character ({found}); it must be one line")
    if not value.strip():
        raise ValueError("must not be blank")
    return " ".join(value.split())


def _ascii_address(value: str | None) -> str | None:
    if value is not None and not value.isascii():
        raise ValueError("must be an ASCII address (internationalised ones are not supported)")
    return value


class _SenderTable(_Table):
    name: str | None = Field(default=None, max_length=NAME_MAX_CHARS)
    address: EmailStr | None = None
    reply_to: EmailStr | None = None

    _name = field_validator("name")(_one_line)
    _addresses = field_validator("address", "reply_to")(_ascii_address)


class _ListTable(_Table):
    name: str | None = Field(default=None, max_length=200)
    id: str | None = Field(default=None, max_length=255)

    _name = field_validator("name")(_one_line)

    @field_validator("id")
    @classmethod
    def _dot_atom(cls, value: str | None) -> str | None:
        if value is not None and not _LIST_ID.fullmatch(value):
            raise ValueError(
                "must look like a domain name, such as sourdough.example.org "
                "(ASCII letters, digits and '-', parts joined by dots)"
            )
        return value


class _FinishTable(_Table):
    tag: str | None = None
    start: str | None = Field(default=None, min_length=1, max_length=100)
    start_after_days: int = Field(default=0, ge=0, le=365)

    @field_validator("tag")
    @classmethod
    def _a_tag(cls, value: str | None) -> str | None:
        try:
            return normalize_tag(value) if value is not None else None
        except TagInvalid as exc:
            raise ValueError(str(exc)) from None


class _SendingTable(_Table):
    #: 0: this course's lessons are never held back by the cap.
    max_per_subscriber_per_day: int | None = Field(default=None, ge=0, le=100)


class IdentityManifest(_Table):
    """The identity keys of course.toml; title and description are checked by course.py."""

    language: str = DEFAULT_LANGUAGE
    consent: str = Field(default=DEFAULT_CONSENT, max_length=CONSENT_MAX_CHARS)
    footer_note: str = Field(default="", max_length=FOOTER_MAX_CHARS)
    sender: _SenderTable = _SenderTable()
    list: _ListTable = _ListTable()
    on_finish: _FinishTable = _FinishTable()
    sending: _SendingTable = _SendingTable()

    @field_validator("language")
    @classmethod
    def _language_tag(cls, value: str) -> str:
        if not _LANGUAGE.fullmatch(value):
            raise ValueError("must be a language tag such as en, de or pt-BR")
        return value

    @field_validator("consent")
    @classmethod
    def _sentence(cls, value: str) -> str:
        if found := control_character(value, line_breaks=True):
            raise ValueError(f"contains a control character ({found})")
        if not value.strip():
            raise ValueError("must not be blank; leave the key out for the default sentence")
        return " ".join(value.split())

    @field_validator("footer_note")
    @classmethod
    def _paragraphs(cls, value: str) -> str:
        if found := control_character(value, line_breaks=True):
            raise ValueError(f"contains a control character ({found})")
        return value.strip()

    def identity(self) -> CourseIdentity:
        return CourseIdentity(
            sender_name=self.sender.name,
            sender_address=self.sender.address,
            reply_to=self.sender.reply_to,
            footer_note=self.footer_note,
            consent_text=self.consent,
            consent_version=consent_version(self.consent),
            list_name=self.list.name,
            list_id=self.list.id,
            language=self.language,
            finish_tag=self.on_finish.tag,
            next_course=self.on_finish.start,
            next_after_days=self.on_finish.start_after_days,
            max_per_subscriber_per_day=self.sending.max_per_subscriber_per_day,
        )


#: Top-level keys of course.toml, in the order the README lists them.
IDENTITY_KEYS = tuple(IdentityManifest.model_fields)


def read_identity(values: Mapping[str, Any]) -> CourseIdentity | list[tuple[tuple[str, ...], str]]:
    """The identity, or (key path, message) for every bad value."""
    try:
        return IdentityManifest(**values).identity()
    except ValidationError as exc:
        return list(_messages(exc))


def _messages(exc: ValidationError) -> Iterator[tuple[tuple[str, ...], str]]:
    for error in exc.errors():
        key = tuple(str(part) for part in error["loc"])
        if error["type"] == "extra_forbidden":
            table: Any = IdentityManifest
            for part in key[:-1]:
                table = table.model_fields[part].annotation
            known = ", ".join(table.model_fields)
            yield key, f"unknown key '{'.'.join(key)}' (expected one of: {known})"
            continue
        message = str(error["msg"]).removeprefix("Value error, ")
        yield key, f"{'.'.join(key)}: {message[0].lower()}{message[1:]}"
