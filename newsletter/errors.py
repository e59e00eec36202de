"""One exception tree for everything the newsletter reports to a person.

NewsletterError                 a problem stated in one line; the CLI prints it, exits 1
├── ConfigError                 config.toml or NEWSLETTER_* names a bad key or value
├── ContentError                lessons, a manifest or an article cannot be used;
│                               carries every Problem found, each with file and line
└── RenderError                 a message cannot be built (e.g. an unusable address)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class NewsletterError(Exception):
    """A failure to show a person as one line, without a traceback."""


class ConfigError(NewsletterError):
    pass


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding about a content file, located for an editor's jump-to-line."""

    path: Path
    line: int  #: 1-based; 0 when the problem concerns the whole file
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else str(self.path)
        return f"{where}: {self.message}"


class ContentError(NewsletterError):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


class RenderError(NewsletterError):
    pass
