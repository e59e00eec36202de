"""[on_finish] in course.toml: what it says, and `course check` refusing a loop."""

from __future__ import annotations

import shutil
from pathlib import Path

from newsletter.content.check import check_course
from newsletter.content.course import load_course
from tests.conftest import COURSE_DIR, REPO

SOURDOUGH = REPO / "tests" / "fixtures" / "courses" / "sourdough"


def beside_each_other(tmp_path: Path) -> tuple[Path, Path]:
    """The shipped course and the sourdough course in one lessons folder."""
    first = Path(shutil.copytree(COURSE_DIR, tmp_path / "back-course"))
    second = Path(shutil.copytree(SOURDOUGH, tmp_path / "sourdough"))
    return first, second


def then(folder: Path, table: str) -> None:
    manifest = folder / "course.toml"
    manifest.write_text(manifest.read_text(encoding="utf-8") + f"\n[on_finish]\n{table}\n")


def flow_problems(folder: Path, env, settings) -> list[str]:  # type: ignore[no-untyped-def]
    _, problems = check_course(folder, env, settings.sender)
    return [str(problem) for problem in problems if "on_finish" in str(problem)]


def test_on_finish_names_a_tag_and_the_next_course(tmp_path: Path, env, settings):
    first, _ = beside_each_other(tmp_path)
    then(first, 'tag = "Finished-Back"\nstart = "sourdough"\nstart_after_days = 3')

    identity = load_course(first).identity

    assert (identity.finish_tag, identity.next_course, identity.next_after_days) == (
        "finished-back",
        "sourdough",
        3,
    )
    assert flow_problems(first, env, settings) == []


def test_a_course_that_leads_back_to_itself_is_refused(tmp_path: Path, env, settings):
    first, second = beside_each_other(tmp_path)
    then(first, 'start = "sourdough"')
    then(second, 'start = "back-course"')

    [problem] = flow_problems(first, env, settings)

    assert "on_finish.start: back-course -> sourdough -> back-course comes back round" in problem
    assert problem.startswith(f"{first / 'course.toml'}:")


def test_the_next_course_must_be_beside_this_one(tmp_path: Path, env, settings):
    first, _ = beside_each_other(tmp_path)
    then(first, 'start = "bread"')

    [problem] = flow_problems(first, env, settings)

    assert "on_finish.start: no course 'bread' beside this one" in problem


def test_the_next_course_must_be_a_folder_name(tmp_path: Path, env, settings):
    first, _ = beside_each_other(tmp_path)
    then(first, 'start = "../sourdough"')

    [problem] = flow_problems(first, env, settings)

    assert "on_finish.start: '../sourdough' is not a course's folder name" in problem


def test_a_course_may_carry_its_own_daily_cap(tmp_path: Path, env, settings):
    first, _ = beside_each_other(tmp_path)
    manifest = first / "course.toml"
    text = manifest.read_text(encoding="utf-8")
    manifest.write_text(text + "\n[sending]\nmax_per_subscriber_per_day = 3\n")
    assert load_course(first).identity.max_per_subscriber_per_day == 3

    manifest.write_text(text + "\n[sending]\nmax_per_subscriber_per_day = -1\n")
    _, problems = check_course(first, env, settings.sender)
    assert any(
        "sending.max_per_subscriber_per_day: input should be greater than or equal to 0"
        in str(problem)
        for problem in problems
    ), problems
