"""Tags: the words subscribers are labelled with (docs/segments.md). Pure."""

from __future__ import annotations

import re

from newsletter.errors import NewsletterError

#: Lower-case words: letters, digits, '-' and '_', at most 64 characters.
TAG = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


class TagInvalid(NewsletterError):
    pass


def normalize_tag(text: str) -> str:
    tag = text.strip().lower()
    if not TAG.fullmatch(tag):
        raise TagInvalid(
            f"{text!r} is not a tag: use lower-case letters, digits, '-' and '_' "
            "(at most 64 characters, starting with a letter or digit)"
        )
    return tag
