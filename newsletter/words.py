"""How the program counts things in words, the same way in every command and log line."""

from __future__ import annotations


def plural(count: int, noun: str, plural_noun: str | None = None) -> str:
    """'1 message', '0 messages', '2 messages'; `plural_noun` for a noun that does not
    take an s ('1 body', '2 bodies')."""
    return f"{count} {noun if count == 1 else plural_noun or noun + 's'}"
