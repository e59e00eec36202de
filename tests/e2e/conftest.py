"""The `newsletter` command run as an admin runs it: a real process on a test's own files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.fixture
def admin(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Runs `newsletter …` against a database and var/ folder of this test's own, its
    output piped (not a terminal)."""
    return admin_in(tmp_path)


def admin_in(folder: Path):  # type: ignore[no-untyped-def]
    """`newsletter …` on the database and var/ folder in `folder`."""
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith("NEWSLETTER_")}
    base |= {
        "NEWSLETTER_DATABASE__URL": f"sqlite:///{folder / 'newsletter.db'}",
        "NEWSLETTER_PATHS__VAR": str(folder / "var"),
        "NEWSLETTER_SECRET_KEY": "admin-cli-test-secret",
    }

    def newsletter(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "newsletter", *args],
            cwd=REPO,
            env=base | env,
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=120,
        )

    newsletter.env = base  # type: ignore[attr-defined]
    return newsletter


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout
