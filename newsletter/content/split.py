"""An article (Markdown or plain text) -> a draft course: one lesson per section.

Sections start at Markdown headings, at plain-text headings (a short line standing alone
without end punctuation) and at explicit `<!-- split -->` markers. An article with none of
these is cut at paragraph boundaries into lessons of about TARGET_WORDS words. The result
only depends on the text, so the same article always gives the same draft.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from newsletter.content.lessons import SUBJECT_MAX_CHARS

SPLIT_MARKER = re.compile(r"^\s*<!--\s*split\s*-->\s*$", re.IGNORECASE)
TARGET_WORDS = 250
FIRST_DELAY = "0 days"
NEXT_DELAY = "2 days"
PREHEADER_MAX_CHARS = 90

_MARKDOWN_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True, slots=True)
class DraftLesson:
    filename: str
    subject: str
    preheader: str
    delay: str
    body: str

    def to_markdown(self) -> str:
        # JSON strings are valid YAML double-quoted scalars: any subject round-trips.
        front = [
            "---",
            f"subject: {json.dumps(self.subject, ensure_ascii=False)}",
            f"preheader: {json.dumps(self.preheader, ensure_ascii=False)}",
            f"delay: {self.delay}",
            "---",
        ]
        return "\n".join(front) + "\n" + self.body.strip() + "\n"


@dataclass(frozen=True, slots=True)
class DraftCourse:
    title: str
    description: str
    lessons: tuple[DraftLesson, ...]

    def manifest(self) -> str:
        return (
            f"title = {json.dumps(self.title, ensure_ascii=False)}\n"
            f"description = {json.dumps(self.description, ensure_ascii=False)}\n"
        )


@dataclass
class _Section:
    heading: str
    paragraphs: list[str]


def split_article(text: str, fallback_title: str) -> DraftCourse:
    paragraphs = _paragraphs(text)
    title = fallback_title
    # The title is the first heading, unless real prose comes before it; a dateline or
    # byline above the title stays, at the top of the first lesson.
    for index, block in enumerate(paragraphs[:3]):
        if (heading := _heading_of(block, paragraphs[index + 1 :])) is not None:
            title, paragraphs = heading, paragraphs[:index] + paragraphs[index + 1 :]
            break
        if len(block.split()) > 12:
            break

    sections = _sections(paragraphs)
    if len(sections) == 1 and not sections[0].heading:
        sections = _by_length(sections[0].paragraphs)
    sections = [section for section in sections if section.paragraphs]

    lessons = []
    used_names: set[str] = set()
    for number, section in enumerate(sections, start=1):
        # A lesson without a heading of its own is named after the course; its preheader
        # (the opening sentence) then says what this part is about.
        subject = section.heading or (title if number == 1 else f"{title}, part {number}")
        lessons.append(
            DraftLesson(
                filename=f"{number:02d}-{_unique_name(subject, number, used_names)}.md",
                subject=_first_words(subject, SUBJECT_MAX_CHARS),
                preheader=_first_words(_first_sentence(section.paragraphs), PREHEADER_MAX_CHARS),
                delay=FIRST_DELAY if number == 1 else NEXT_DELAY,
                body="\n\n".join(section.paragraphs),
            )
        )
    description = _first_sentence(paragraphs) if paragraphs else title
    return DraftCourse(title, description, tuple(lessons))


def _paragraphs(text: str) -> list[str]:
    """Blocks separated by blank lines; each split marker and heading is a block of its own."""
    blocks: list[str] = []
    current: list[str] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        standalone = SPLIT_MARKER.match(line) or _MARKDOWN_HEADING.match(line)
        if not line.strip() or standalone:
            if current:
                blocks.append("\n".join(current))
                current = []
            if standalone:
                blocks.append(line.strip())
        else:
            current.append(line.rstrip())
    if current:
        blocks.append("\n".join(current))
    return blocks


def _heading_of(block: str, following: list[str]) -> str | None:
    """The heading text if this block is one: '# Markdown' or a short bare line."""
    if match := _MARKDOWN_HEADING.match(block):
        return match.group(2).strip()
    looks_like_title = (
        "\n" not in block
        and len(block.split()) <= 10
        and not block.rstrip().endswith((".", ",", ";", ":", "!", "?", "*"))
        and not block.lstrip().startswith(("-", "*", "•", ">", "|"))
    )
    # A short line only heads a section when prose follows it.
    return block.strip() if looks_like_title and following else None


def _sections(paragraphs: list[str]) -> list[_Section]:
    sections = [_Section("", [])]
    for index, block in enumerate(paragraphs):
        if SPLIT_MARKER.match(block):
            sections.append(_Section("", []))
        elif (heading := _heading_of(block, paragraphs[index + 1 :])) is not None:
            sections.append(_Section(heading, []))
        else:
            sections[-1].paragraphs.append(block)
    return sections


def _by_length(paragraphs: list[str]) -> list[_Section]:
    sections = [_Section("", [])]
    words = 0
    for block in paragraphs:
        size = len(block.split())
        if sections[-1].paragraphs and words + size > TARGET_WORDS:
            sections.append(_Section("", []))
            words = 0
        sections[-1].paragraphs.append(block)
        words += size
    return sections


def _first_sentence(paragraphs: list[str]) -> str:
    """The first sentence of real prose, passing over datelines and other short lines."""
    texts = [" ".join(block.split()) for block in paragraphs if block.strip()]
    prose = [text for text in texts if len(text.split()) >= 6] or texts or [""]
    return _SENTENCE_END.split(prose[0], maxsplit=1)[0]


def _first_words(text: str, limit: int) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0]
    return cut.rstrip(",;:") + "…"


def _unique_name(subject: str, number: int, used: set[str]) -> str:
    """The lesson's name (its identity once queued): from the subject, never repeated."""
    name = "-".join(re.findall(r"[a-z0-9]+", subject.lower()))[:40].strip("-") or "lesson"
    base, suffix = name, number
    while name in used:
        name, suffix = f"{base}-{suffix}", suffix + 1
    used.add(name)
    return name
