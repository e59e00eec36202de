"""Subscribers in CSV files: rows read as RFC 4180 means them, cells no spreadsheet runs."""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from newsletter.addresses import normalize_address
from newsletter.errors import NewsletterError, Problem
from newsletter.subscribers import NewSubscriber

#: A row longer than this is not a subscriber but a broken or hostile file.
MAX_ROW_CHARS = 10_000
#: A cell starting with one of these is a formula to Excel, LibreOffice and Google Sheets
#: (OWASP, "CSV Injection"); tab and CR too, as some of them drop a leading one first.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
#: The columns an import reads; any others (such as those of an export) are ignored.
NAME_COLUMNS = ("first_name", "name")


class CsvUnreadable(NewsletterError):
    """The file is not CSV we can trust past some line: nothing of it is imported."""


@dataclass(frozen=True, slots=True)
class ImportRow:
    line: int  #: where the row starts in the file (1-based)
    person: NewSubscriber


@dataclass(slots=True)
class ImportPlan:
    """What a file holds: the people to import, one row each, and the rows refused."""

    people: list[ImportRow] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    rows: int = 0  #: rows read, blank ones aside


def spreadsheet_safe(cell: str) -> str:
    """A cell a spreadsheet shows as text: one that would start a formula gets a leading
    single quote, which spreadsheets hide and read_import takes off again."""
    return "'" + cell if cell.startswith(FORMULA_STARTS) else cell


def _unquote(cell: str) -> str:
    """Undo spreadsheet_safe, so an export imports as it was."""
    return cell[1:] if cell.startswith("'") and cell[1:].startswith(FORMULA_STARTS) else cell


def read_import(handle: TextIO, path: Path) -> ImportPlan:
    """Read `handle` (opened with newline="", as the csv module requires) row by row.

    Rows are records, not lines: a quoted cell may hold a line break or a Unicode line
    separator, and problems name the line where their row starts. A row that cannot be
    used is refused with its line; so are all rows giving the same address (whatever its
    case), since which of them is right is for the admin to say. Broken CSV (a quote left
    open, a cell over the csv module's size limit) raises CsvUnreadable: past it no row
    can be trusted."""
    plan = ImportPlan()
    records = _records(handle, path)
    header_line, header = next(records, (1, []))
    columns = _columns(header, path, header_line)
    candidates: list[tuple[int, str | None, NewSubscriber | None]] = []
    for line, cells in records:
        plan.rows += 1
        address, person, problem = _read_row(cells, columns, len(header))
        candidates.append((line, address, person))
        if problem:
            plan.problems.append(Problem(path, line, problem))
    lines_of: dict[str, list[int]] = defaultdict(list)
    for line, address, _ in candidates:
        if address is not None:
            lines_of[address].append(line)
    for line, address, person in candidates:
        if address is None or person is None:
            continue
        others = [other for other in lines_of[address] if other != line]
        if others:
            message = (
                f"{address} is also on line{'s' if len(others) > 1 else ''} "
                f"{', '.join(map(str, others))}; keep one of these rows and import again"
            )
            plan.problems.append(Problem(path, line, message))
        else:
            plan.people.append(ImportRow(line, person))
    plan.problems.sort(key=lambda problem: problem.line)
    return plan


def _records(handle: TextIO, path: Path) -> Iterator[tuple[int, list[str]]]:
    """(first line, cells) of each row that is not blank."""
    reader = csv.reader(handle, strict=True)
    while True:
        line = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise CsvUnreadable(f"{path}:{line}: {_explain(exc)}; nothing was imported") from None
        if any(cell.strip() for cell in cells):
            yield line, cells


def _explain(exc: csv.Error) -> str:
    message = str(exc)
    if message.startswith("field larger than field limit"):
        limit = csv.field_size_limit()
        return f"a cell longer than {limit} characters (is a closing quote missing?)"
    if message == "unexpected end of data":
        return "a quoted cell runs to the end of the file (is its closing quote missing?)"
    return f"not valid CSV ({message})"


def _columns(header: list[str], path: Path, line: int) -> dict[str, int]:
    names = [cell.strip().lower() for cell in header]
    if "email" not in names:
        raise CsvUnreadable(f"{path}:{line}: the header must name an 'email' column")
    columns: dict[str, int] = {}
    for index, name in enumerate(names):
        if name in columns:
            raise CsvUnreadable(f"{path}:{line}: the header names '{name}' twice")
        columns[name] = index
    return columns


def _read_row(
    cells: list[str], columns: dict[str, int], width: int
) -> tuple[str | None, NewSubscriber | None, str | None]:
    """(normalised address or None, the person or None, the problem or None)."""
    if sum(map(len, cells)) > MAX_ROW_CHARS:
        return None, None, f"longer than {MAX_ROW_CHARS} characters; is this a subscriber?"
    if len(cells) > width:
        return (
            None,
            None,
            (
                f"{len(cells)} cells where the header names {width}; "
                "is a comma inside a name not quoted?"
            ),
        )

    def cell(name: str) -> str:
        index = columns.get(name)
        return _unquote(cells[index]) if index is not None and index < len(cells) else ""

    try:
        address = normalize_address(cell("email"))
    except NewsletterError as exc:
        return None, None, str(exc)
    name = next((cell(column) for column in NAME_COLUMNS if cell(column)), "")
    try:
        person = NewSubscriber.parse(address, name, cell("timezone").strip() or None, cell("tags"))
    except NewsletterError as exc:
        return address, None, str(exc)
    return address, person, None
