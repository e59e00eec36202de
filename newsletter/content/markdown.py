"""Lesson Markdown -> HTML fragment, plain text, and the links it holds (with their lines)."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

from markdown_it import MarkdownIt
from markdown_it.token import Token

# CommonMark with typographic quotes; raw HTML stays off so a lesson cannot smuggle markup
# that mail clients render unpredictably.
_OPTIONS = {"html": False, "typographer": True}
_md = MarkdownIt("commonmark", _OPTIONS).enable(["replacements", "smartquotes"])


class _EveryLink(MarkdownIt):
    """The same parser, keeping links it would drop (javascript:, data:, vbscript:,
    file:), so that `course check` can name them rather than let them show as raw text."""

    def validateLink(self, url: str) -> bool:
        return True


_md_every_link = _EveryLink("commonmark", _OPTIONS).enable(["replacements", "smartquotes"])


@dataclass(frozen=True, slots=True)
class Link:
    url: str
    text: str
    line: int  #: 1-based line of the block holding the link, within the Markdown source
    image: bool = False  #: an image's source rather than a link


def display_width(text: str) -> int:
    """Columns the text takes in a fixed-width font: two for wide East Asian characters,
    none for combining marks, so an underline matches a Japanese or accented heading."""
    if text.isascii():
        return len(text)
    return sum(
        0 if unicodedata.combining(char) else 2 if unicodedata.east_asian_width(char) in "WF" else 1
        for char in text
    )


def to_html(source: str) -> str:
    return str(_md.render(source))


def links_in(source: str) -> list[Link]:
    """Every link and image source, including those the renderer refuses to link."""
    found = []
    for block in _md_every_link.parse(source):
        if block.type != "inline" or not block.children:
            continue
        line = block.map[0] + 1 if block.map else 0
        href, words = "", list[str]()
        for token in block.children:
            if token.type == "link_open":
                href, words = str(token.attrGet("href") or ""), []
            elif token.type == "link_close":
                found.append(Link(url=href, text="".join(words), line=line))
                href = ""
            elif href and token.type in ("text", "code_inline"):
                words.append(token.content)
            elif href and token.type == "softbreak":
                words.append(" ")
            elif token.type == "image":
                src = str(token.attrGet("src") or "")
                found.append(Link(url=src, text=token.content, line=line, image=True))
    return found


def to_text(source: str) -> str:
    """Plain-text twin: readable in any client, links written out after their words."""
    # Items of a tight list stay on consecutive lines, as the author wrote them.
    blocks = _text_blocks(_md.parse(source))
    return "".join(("\n" if tight else "\n\n") + text for text, tight in blocks).strip() + "\n"


def _text_blocks(tokens: list[Token]) -> Iterator[tuple[str, bool]]:
    """Each block's text, and whether it continues a tight list (no blank line before it)."""
    prefixes: list[str] = []  # list markers and quote marks of the blocks we are inside
    counters: list[int] = []
    pending_marker = ""
    list_opened = False  # the next item starts a list, so it keeps its blank line
    for index, token in enumerate(tokens):
        match token.type:
            case "bullet_list_open":
                list_opened = not counters  # a nested list continues its parent item
                counters.append(0)
            case "ordered_list_open":
                list_opened = not counters
                counters.append(int(str(token.attrGet("start") or 1)) - 1)
            case "bullet_list_close" | "ordered_list_close":
                counters.pop()
            case "list_item_open":
                counters[-1] += 1
                ordered = token.markup in (".", ")")
                pending_marker = f"{counters[-1]}{token.markup} " if ordered else "- "
                prefixes.append(" " * len(pending_marker))
            case "list_item_close":
                prefixes.pop()
            case "blockquote_open":
                prefixes.append("> ")
            case "blockquote_close":
                prefixes.pop()
            case "hr":
                yield "----", False
            case "code_block" | "fence":
                yield _indent(token.content.rstrip("\n"), "    "), False
            case "inline":
                text = _inline_text(token.children or [])
                opener = tokens[index - 1]
                if opener.type == "heading_open":
                    text = f"{text}\n{'-' * min(display_width(text), 60)}"
                indent = "".join(prefixes)
                if pending_marker:
                    # The marker stands in for the item's indentation on its first line.
                    hanging = _indent(text, " " * len(pending_marker))[len(pending_marker) :]
                    text, indent = pending_marker + hanging, "".join(prefixes[:-1])
                    pending_marker = ""
                yield _indent(text, indent), opener.hidden and not list_opened
                list_opened = False


def _inline_text(children: list[Token]) -> str:
    parts: list[str] = []
    link_start, href = 0, ""
    for token in children:
        match token.type:
            case "text" | "code_inline" | "html_inline":
                parts.append(token.content)
            case "softbreak":
                parts.append(" ")
            case "hardbreak":
                parts.append("\n")
            case "link_open":
                link_start, href = len(parts), str(token.attrGet("href") or "")
            case "link_close":
                words = "".join(parts[link_start:])
                parts.append(f" <{href}>" if words != href else "")
            case "image":
                parts.append(token.content)
    return "".join(parts)


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line if line else prefix.rstrip() for line in text.split("\n"))
