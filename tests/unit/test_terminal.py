"""What reaches the admin's terminal: others' text literally, no control sequences, JSON."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, time

import pytest
from rich.console import Console

from newsletter.cli.terminal import LiteralTable, literal, make_console, neutralise, to_json

HOSTILE_NAMES = [
    "[/]",
    "[link=https://evil.test]click me[/link]",
    "[bold red]ALERT[/]",
    ":skull:",
    "\x1b]8;;https://evil.test\x1b\\click\x1b]8;;\x1b\\",
    "\x1b[2J\x1b[HYou have been hacked",
    "\x9b2J",
    "Ana\u202egnp.exe",
]


def terminal_console(file: io.StringIO) -> Console:
    """The CLI's console, writing into `file` as if it were a colour terminal."""
    console = make_console()
    console.file = file
    console._force_terminal = True  # as a tty would: styles and links would be emitted
    console.width = 120
    return console


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("Ana", "Ana"),
        ("Zoë 用户 🙂", "Zoë 用户 🙂"),
        ("a\x1b[2Jb", "a\u241b[2Jb"),
        ("bell\x07", "bell\u2407"),
        ("nul\x00", "nul\u2400"),
        ("del\x7f", "del\u2421"),
        ("csi\x9b", "csi\ufffd"),
        ("rlo\u202eisolate\u2066", "rlo\ufffdisolate\ufffd"),
        ("line\u2028separator", "line\ufffdseparator"),
        ("kept\nand\ttabbed", "kept\nand\ttabbed"),
    ],
)
def test_characters_that_drive_a_terminal_get_visible_stand_ins(text, shown):
    assert neutralise(text) == shown


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_table_cell_is_printed_as_it_was_written(name):
    file = io.StringIO()
    table = LiteralTable("email", "name", title=name)
    table.add_row("ana@example.com", name)
    terminal_console(file).print(table)
    output = file.getvalue()
    assert neutralise(name) in output
    assert "\x1b]8;" not in output  # no OSC 8 hyperlink
    assert "\x1b[2J" not in output
    assert "\x9b" not in output
    assert "31m" not in output  # nothing turned red
    assert "💀" not in output


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_line_built_with_literal_is_printed_as_it_was_written(name):
    file = io.StringIO()
    terminal_console(file).print(literal(name))
    assert file.getvalue() == neutralise(name) + "\n"


def test_even_text_printed_as_markup_cannot_link_or_drive_the_terminal():
    """The render hook: a value that reached the console without literal()."""
    file = io.StringIO()
    console = terminal_console(file)
    console.print("see [link=https://evil.test]here[/link] \x1b[2J")
    output = file.getvalue()
    assert "\x1b]8;" not in output
    assert "\x1b[2J" not in output
    assert "here" in output


def test_piped_output_is_neither_wrapped_nor_cropped():
    console = make_console()
    console.file = io.StringIO()  # not a terminal: make_console widened it already
    assert console.width > 10_000
    table = LiteralTable("email", "name")
    table.add_row("a" * 64 + "@example.com", "n" * 100)
    console.print(table)
    console.print("word " * 60)
    lines = console.file.getvalue().splitlines()
    assert any("a" * 64 + "@example.com" in line and "n" * 100 in line for line in lines)
    assert ("word " * 60).rstrip() in [line.rstrip() for line in lines]


def test_json_is_one_document_with_iso_times_and_text_as_it_is():
    moment = datetime(2026, 6, 8, 8, 0, tzinfo=UTC)
    document = {
        "when": moment,
        "at": time(9, 30),
        "name": "Zoë 用户 [/] \x1b[2J \x9b \u202e \u2028",
        "none": None,
    }
    text = to_json(document)
    assert json.loads(text) == {
        "when": "2026-06-08T08:00:00+00:00",
        "at": "09:30:00",
        "name": document["name"],
        "none": None,
    }
    assert "Zoë 用户" in text  # UTF-8, not \u escapes
    for raw in ("\x1b", "\x9b", "\u202e", "\u2028"):
        assert raw not in text
