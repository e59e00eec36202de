"""What the admin's terminal shows: others' text as it is, tables whole when piped, JSON."""

from __future__ import annotations

import json
import re
import sys
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from rich.console import (
    Console,
    ConsoleOptions,
    ConsoleRenderable,
    RenderableType,
    RenderHook,
    RenderResult,
)
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

#: Width of output that does not go to a terminal: a file or a pipe is never wrapped or
#: cropped (rich would otherwise fold tables and lines at 80 columns).
PIPED_WIDTH = 100_000

# Characters that drive a terminal rather than show something: C0 controls (ESC starts
# cursor moves, colours, OSC 8 links and title changes), DEL, C1 controls (8-bit CSI and
# OSC on some terminals), bidi controls (reorder what follows) and the Unicode line and
# paragraph separators. Line feed and tab stay: rich lays them out itself.
_TERMINAL_CONTROLS = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]"
)
# The same outside the ASCII range, which json.dumps(ensure_ascii=False) leaves raw.
_JSON_UNESCAPED_CONTROLS = re.compile(
    "[\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]"
)


def neutralise(text: str) -> str:
    """`text` with each character that could drive the terminal replaced by a visible
    stand-in: C0 controls and DEL by their Unicode control pictures (ESC shows as ␛), the
    rest by �."""
    return _TERMINAL_CONTROLS.sub(_stand_in, text)


def _stand_in(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x20:
        return chr(0x2400 + code)
    return "\u2421" if code == 0x7F else "\ufffd"


def literal(value: object) -> Text:
    """A value that came from a subscriber, a file or a server, to print exactly as it is:
    never read as rich markup, never styled, never a control sequence."""
    return Text(neutralise(str(value)))


class LiteralTable(Table):
    """A rich Table whose text cells, title and caption are shown literally (see literal).
    Column headers stay markup: they are ours."""

    def __init__(self, *headers: str, title: str | None = None, **options: Any) -> None:
        super().__init__(*headers, title=literal(title) if title is not None else None, **options)

    def add_row(
        self,
        *renderables: RenderableType | None,
        style: Any = None,
        end_section: bool = False,
    ) -> None:
        cells = [literal(cell) if isinstance(cell, str) else cell for cell in renderables]
        super().add_row(*cells, style=style, end_section=end_section)


class _NeutraliseControls(RenderHook):
    """The last line of defence, for whatever reaches the console without literal(): an
    error message quoting a file, a path with markup in it. Every printed segment loses
    its control characters and any hyperlink (this program prints none of its own)."""

    def process_renderables(self, renderables: list[ConsoleRenderable]) -> list[ConsoleRenderable]:
        return [_Neutralised(renderable) for renderable in renderables]


class _Neutralised:
    def __init__(self, inner: ConsoleRenderable) -> None:
        self.inner = inner

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for segment in console.render(self.inner, options):
            text, style, control = segment
            if control:  # rich's own cursor moves (progress bars)
                yield segment
                continue
            if style is not None and style.link:
                style = style.update_link(None)
            yield Segment(neutralise(text), style)


def make_console(*, stderr: bool = False) -> Console:
    """A console that never turns text into emoji or colours parts of it by guesswork,
    does not wrap lines itself (the terminal does), and is as wide as a table needs when
    its output goes to a file or a pipe."""
    console = Console(stderr=stderr, emoji=False, highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console.width = PIPED_WIDTH
    console.push_render_hook(_NeutraliseControls())
    return console


def to_json(document: object) -> str:
    """One JSON document: times in ISO 8601, text in UTF-8 as it is, except the characters
    that could drive a terminal, which are \\u escapes (the same text once parsed)."""
    text = json.dumps(document, ensure_ascii=False, indent=2, default=_json_value)
    # Outside strings JSON is plain ASCII, so every such character is inside a string.
    return _JSON_UNESCAPED_CONTROLS.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def _json_value(value: object) -> object:
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def print_json(document: object) -> None:
    """Write `document` to stdout as JSON, in UTF-8 whatever the locale says."""
    sys.stdout.flush()
    sys.stdout.buffer.write(to_json(document).encode("utf-8") + b"\n")
    sys.stdout.buffer.flush()
