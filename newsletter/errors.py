"""One exception tree for everything the newsletter reports to a person.

NewsletterError                 a problem stated in one line; the CLI prints it, exits 1
├── ConfigError                 config.toml or NEWSLETTER_* names a bad key or value
├── ContentError                lessons, a manifest or an article cannot be used;
│                               carries every Problem found, each with file and line
│                               (a Problem is an error or, for `course check`, a warning)
└── RenderError                 a message cannot be built (e.g. an unusable address)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class NewsletterError(Exception):
    """A failure to show a person as one line, without a traceback."""


class ConfigError(NewsletterError):
    pass


class Severity(StrEnum):
    ERROR = "error"  #: the course cannot be queued
    WARNING = "warning"  #: shown, but only blocks `course check --strict`


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding about a content file, located for an editor's jump-to-line."""

    path: Path
    line: int  #: 1-based; 0 when the problem concerns the whole file
    message: str
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        # `file:line: warning: message`, as compilers write it, so editors still jump there.
        where = f"{self.path}:{self.line}" if self.line else str(self.path)
        label = "warning: " if self.severity is Severity.WARNING else ""
        return f"{where}: {label}{self.message}"

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR


def errors_among(problems: list[Problem]) -> list[Problem]:
    """The problems that stop a course from being queued."""
    return [problem for problem in problems if problem.is_error]


class ContentError(NewsletterError):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


class RenderError(NewsletterError):
    pass
