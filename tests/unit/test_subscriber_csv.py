"""CSV files of subscribers: records as RFC 4180 means them, refusals by line, safe cells."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from newsletter.subscriber_csv import (
    MAX_ROW_CHARS,
    CsvUnreadable,
    ImportPlan,
    read_import,
    spreadsheet_safe,
)
from newsletter.subscribers import NewSubscriber

FILE = Path("people.csv")


def read(text: str) -> ImportPlan:
    return read_import(io.StringIO(text, newline=""), FILE)


def problems(plan: ImportPlan) -> list[str]:
    return [str(problem) for problem in plan.problems]


def imported(plan: ImportPlan) -> list[tuple[int, str, str]]:
    return [(row.line, row.person.email, row.person.first_name) for row in plan.people]


def test_a_plain_file_imports_every_row_with_its_line():
    plan = read(
        "email,first_name,timezone\r\n"
        "ana@example.com,Ana,Europe/Paris\r\n"
        "bo@example.com,,\r\n"
        "\r\n"
        "cy@example.com,Cy\r\n"
    )
    assert imported(plan) == [
        (2, "ana@example.com", "Ana"),
        (3, "bo@example.com", ""),
        (5, "cy@example.com", "Cy"),
    ]
    assert plan.people[0].person.timezone == "Europe/Paris"
    assert plan.rows == 3
    assert plan.problems == []


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85"])
def test_a_unicode_line_separator_stays_inside_its_cell(separator):
    """str.splitlines() used to split here, and the rest of the cell became a new row."""
    plan = read(
        "email,first_name\n"
        f'ana@example.com,"Ana{separator}evil@example.com,Evil"\n'
        "bo@example.com,Bo\n"
    )
    assert [row.person.email for row in plan.people] == ["bo@example.com"]
    assert plan.rows == 2
    assert problems(plan) == [
        f"people.csv:2: first name {f'Ana{separator}evil@example.com,Evil'!r}: holds a control "
        f"character (U+{ord(separator):04X}) such as a line break or a tab; a name is one "
        "line of text"
    ]


def test_a_quoted_line_break_is_refused_naming_the_line_its_row_starts_on():
    plan = read(
        'email,first_name\nana@example.com,"Ana\nMaria"\nbo@example.com,Bo\nnot-an-address,X\n'
    )
    assert imported(plan) == [(4, "bo@example.com", "Bo")]
    assert problems(plan)[0].startswith("people.csv:2: first name 'Ana\\nMaria': holds a control")
    # The lines after a two-line row are still counted right.
    assert problems(plan)[1].startswith("people.csv:5: 'not-an-address': ")


def test_rows_giving_the_same_address_in_any_case_are_all_refused_naming_each_other():
    plan = read(
        "email,first_name,timezone\n"
        "cy@example.com,Cy,Europe/Paris\n"
        "ed@example.com,Ed,\n"
        "CY@Example.com,Cy again,\n"
        "Cy@example.COM,Cy thrice,\n"
    )
    assert imported(plan) == [(3, "ed@example.com", "Ed")]
    assert problems(plan) == [
        "people.csv:2: cy@example.com is also on lines 4, 5; keep one of these rows and "
        "import again",
        "people.csv:4: cy@example.com is also on lines 2, 5; keep one of these rows and "
        "import again",
        "people.csv:5: cy@example.com is also on lines 2, 4; keep one of these rows and "
        "import again",
    ]


def test_a_duplicate_of_a_refused_row_is_refused_too():
    """Importing the good one would leave the corrected row to be skipped next time."""
    plan = read("email,timezone\ncy@example.com,Mars/Base\ncy@example.com,Europe/Paris\n")
    assert plan.people == []
    assert problems(plan) == [
        "people.csv:2: 'Mars/Base' is not a known time zone",
        "people.csv:3: cy@example.com is also on line 2; keep one of these rows and import again",
    ]


def test_a_cell_over_the_csv_size_limit_stops_the_import_naming_its_line():
    with pytest.raises(CsvUnreadable) as caught:
        read(f'email,first_name\nana@example.com,Ana\nbo@example.com,"{"x" * 200_000}"\n')
    assert str(caught.value) == (
        f"people.csv:3: a cell longer than {csv.field_size_limit()} characters (is a closing "
        "quote missing?); nothing was imported"
    )


def test_a_quote_left_open_stops_the_import_naming_the_line_it_opened_on():
    with pytest.raises(CsvUnreadable, match=r"^people.csv:3: a quoted cell runs to the end"):
        read('email,first_name\nana@example.com,Ana\nbo@example.com,"Bo\ncy@example.com,Cy\n')


def test_text_after_a_closing_quote_stops_the_import():
    with pytest.raises(CsvUnreadable, match=r"^people.csv:2: not valid CSV"):
        read('email,first_name\nana@example.com,"Ana"x\n')


def test_an_absurdly_long_row_is_refused_in_one_line():
    plan = read("email,first_name\n" + "ana@example.com" + ",x" * MAX_ROW_CHARS + "\n")
    assert problems(plan) == [
        f"people.csv:2: longer than {MAX_ROW_CHARS} characters; is this a subscriber?"
    ]


def test_more_cells_than_the_header_names_is_refused():
    plan = read("email,first_name\nana@example.com,Smith, Ana\n")
    assert problems(plan) == [
        "people.csv:2: 3 cells where the header names 2; is a comma inside a name not quoted?"
    ]


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("address,name\n", "people.csv:1: the header must name an 'email' column"),
        ("", "people.csv:1: the header must name an 'email' column"),
        ("email,name,Email\n", "people.csv:1: the header names 'email' twice"),
    ],
)
def test_a_header_without_one_email_column_is_refused(header, message):
    with pytest.raises(CsvUnreadable, match=f"^{message}$"):
        read(header + "ana@example.com,Ana\n")


def test_the_header_is_read_whatever_its_case_and_spacing():
    plan = read(" Email , First_Name \nana@example.com,Ana\n")
    assert imported(plan) == [(2, "ana@example.com", "Ana")]


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ('=HYPERLINK("https://evil.test","click")', '\'=HYPERLINK("https://evil.test","click")'),
        ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),
        ("+1+1", "'+1+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("Ana", "Ana"),
        ("a=b", "a=b"),
        ("2026-06-08T08:00:00+00:00", "2026-06-08T08:00:00+00:00"),
        ("", ""),
    ],
)
def test_a_cell_a_spreadsheet_would_run_is_written_as_text(cell, written):
    assert spreadsheet_safe(cell) == written


def test_an_exported_formula_like_address_and_name_import_as_they_were():
    exported = io.StringIO(newline="")
    writer = csv.writer(exported)
    writer.writerow(["email", "first_name"])
    writer.writerow([spreadsheet_safe("-dash@example.com"), spreadsheet_safe("=Ana")])
    plan = read(exported.getvalue())
    assert [row.person for row in plan.people] == [NewSubscriber("-dash@example.com", "=Ana")]
