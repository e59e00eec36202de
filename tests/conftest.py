"""Fixtures over the real files of the repository: config.toml, the shipped course, templates."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from jinja2 import Environment

from newsletter.config import Settings, load_settings
from newsletter.content.course import Course, load_course
from newsletter.render import make_environment
from tests.databases import (  # noqa: F401  (fixtures for every test)
    database_url,
    migrated_postgres,
    migrated_sqlite,
    postgres_url,
)
from tests.smtpd import SmtpServer

REPO = Path(__file__).resolve().parents[1]
COURSE_SLUG = "leg-weakness-after-microdiscectomy"
COURSE_DIR = REPO / "lessons" / COURSE_SLUG
#: The writer's article the shipped course retells (a copy of shared/source/article.txt).
ARTICLE = REPO / "tests" / "fixtures" / "source-article.txt"


@pytest.fixture(autouse=True)
def _no_newsletter_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see config.toml as committed, whatever the developer's shell exports."""
    import os

    for name in os.environ:
        if name.upper().startswith("NEWSLETTER_"):
            monkeypatch.delenv(name)


@pytest.fixture
def settings() -> Settings:
    return load_settings(REPO / "config.toml")


@pytest.fixture
def course() -> Course:
    return load_course(COURSE_DIR)


@pytest.fixture
def env(settings: Settings) -> Environment:
    return make_environment(settings.templates_dir)


@pytest.fixture
def smtp_server(request: pytest.FixtureRequest) -> Iterator[SmtpServer]:
    """A real SMTP server on loopback for one test; `@pytest.mark.smtp(tls=...,
    require_auth=...)` asks for TLS or AUTH."""
    marker = request.node.get_closest_marker("smtp")
    with SmtpServer(**(marker.kwargs if marker else {})) as server:
        yield server
