"""An article -> a draft course that load_course accepts, the same draft every time."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from newsletter.content.course import load_course
from newsletter.content.lessons import SUBJECT_MAX_CHARS
from newsletter.content.split import (
    FIRST_DELAY,
    NEXT_DELAY,
    TARGET_WORDS,
    DraftCourse,
    split_article,
)
from tests.conftest import ARTICLE

ARTICLES = Path(__file__).parents[1] / "fixtures" / "articles"
#: The writer's article (a copy of shared/source/article.txt kept with the tests).
SHARED_ARTICLE = ARTICLE
FILENAME = re.compile(r"\d\d-[a-z0-9]+(-[a-z0-9]+)*\.md")


def split_fixture(name: str) -> DraftCourse:
    return split_article((ARTICLES / name).read_text(encoding="utf-8"), "Fallback title")


def words(text: str) -> int:
    return len(text.split())


def word_list(text: str) -> list[str]:
    return re.findall(r"\w+", text.casefold())


def paragraphs(text: str) -> list[str]:
    """Blank-line separated blocks, whitespace-normalised, for order-and-loss comparisons."""
    return [" ".join(block.split()) for block in re.split(r"\n\s*\n", text) if block.strip()]


def write_draft(draft: DraftCourse, folder: Path) -> Path:
    folder.mkdir()
    (folder / "course.toml").write_text(draft.manifest(), encoding="utf-8")
    for lesson in draft.lessons:
        (folder / lesson.filename).write_text(lesson.to_markdown(), encoding="utf-8")
    return folder


# --- Markdown headings ------------------------------------------------------------------


def test_markdown_headings_give_the_title_and_one_lesson_per_section() -> None:
    draft = split_fixture("with-headings.md")

    assert draft.title == "Keeping Houseplants Alive"
    assert draft.description == (
        "Most houseplants die from kindness rather than neglect, so this short guide is "
        "about doing a little less, a little more carefully."
    )
    # The introduction before the first section opens the course under the course title.
    assert [lesson.subject for lesson in draft.lessons] == [
        "Keeping Houseplants Alive",
        "Light",
        "Water",
        "Soil and pots",
    ]
    assert [lesson.filename for lesson in draft.lessons] == [
        "01-keeping-houseplants-alive.md",
        "02-light.md",
        "03-water.md",
        "04-soil-and-pots.md",
    ]
    assert [lesson.delay for lesson in draft.lessons] == ["0 days", "2 days", "2 days", "2 days"]
    assert (FIRST_DELAY, NEXT_DELAY) == ("0 days", "2 days")


def test_section_bodies_hold_their_paragraphs_without_the_headings() -> None:
    draft = split_fixture("with-headings.md")
    water = draft.lessons[2]

    assert water.body == (
        "Water when the top few centimetres of soil feel dry to a finger, and then water "
        "until a little runs out of the bottom of the pot.\n\n"
        "Tip away whatever collects in the saucer after half an hour, because roots that sit "
        "in water cannot breathe and soon rot."
    )
    assert not any("#" in lesson.body for lesson in draft.lessons)


def test_preheader_is_the_opening_sentence_cut_at_a_word() -> None:
    draft = split_fixture("with-headings.md")

    assert draft.lessons[3].preheader == (
        "A pot needs a hole in the bottom, whatever it looks like from the outside."
    )
    assert draft.lessons[1].preheader == (
        "Nearly every common houseplant wants bright light that does not fall straight on its…"
    )


# --- no headings: cut by length -----------------------------------------------------------


def test_article_without_headings_is_cut_into_lessons_of_about_target_words() -> None:
    text = (ARTICLES / "no-headings.txt").read_text(encoding="utf-8")
    source = paragraphs(text)
    assert len(source) >= 6
    assert words(text) >= 600

    draft = split_article(text, "Garden birds")
    bodies = [paragraphs(lesson.body) for lesson in draft.lessons]

    assert draft.title == "Garden birds"
    assert len(draft.lessons) >= 3
    # Cut only between paragraphs: every paragraph is in exactly one lesson, in order.
    assert [block for body in bodies for block in body] == source
    for body, following in itertools.pairwise(bodies):
        assert words(" ".join(body)) <= TARGET_WORDS
        # ... and a lesson is only closed when the next paragraph would overfill it.
        assert words(" ".join(body)) + words(following[0]) > TARGET_WORDS
    assert words(" ".join(bodies[-1])) <= TARGET_WORDS


def test_lessons_without_headings_are_named_after_the_course_in_parts() -> None:
    draft = split_fixture("no-headings.txt")
    count = len(draft.lessons)

    assert [lesson.subject for lesson in draft.lessons] == ["Fallback title"] + [
        f"Fallback title, part {number}" for number in range(2, count + 1)
    ]
    assert [lesson.filename for lesson in draft.lessons] == ["01-fallback-title.md"] + [
        f"{number:02d}-fallback-title-part-{number}.md" for number in range(2, count + 1)
    ]


@pytest.mark.parametrize("name", ["with-headings.md", "no-headings.txt", "split-markers.md"])
def test_preheader_is_the_lessons_opening_sentence_and_not_its_subject(name: str) -> None:
    draft = split_fixture(name)

    for lesson in draft.lessons:
        opening = " ".join(lesson.body.split())
        assert opening.startswith(lesson.preheader.removesuffix("…"))
        # As `newsletter course check` asks: the preheader adds words to the subject.
        assert set(word_list(lesson.preheader)) - set(word_list(lesson.subject))
        assert FILENAME.fullmatch(lesson.filename)


# --- split markers ----------------------------------------------------------------------


def test_split_markers_cut_a_section_finer() -> None:
    text = (ARTICLES / "split-markers.md").read_text(encoding="utf-8")

    draft = split_article(text, "Fallback title")
    unmarked = split_article(re.sub(r"<!-- split -->\n", "", text), "Fallback title")

    assert draft.title == unmarked.title == "Baking Bread at Home"
    assert [lesson.subject for lesson in unmarked.lessons] == ["Flour and water", "Baking"]
    assert [lesson.body.split()[:3] for lesson in draft.lessons] == [
        ["Bread", "needs", "only"],
        ["Water", "is", "the"],
        ["Salt", "slows", "the"],
        ["Heat", "the", "oven"],
    ]
    assert [lesson.subject for lesson in draft.lessons] == [
        "Flour and water",
        "Baking Bread at Home, part 2",
        "Baking Bread at Home, part 3",
        "Baking",
    ]
    assert not any("<!--" in lesson.body for lesson in draft.lessons)
    # The markers only cut: together the lessons hold the same paragraphs, in order.
    assert [p for lesson in draft.lessons for p in paragraphs(lesson.body)] == [
        p for lesson in unmarked.lessons for p in paragraphs(lesson.body)
    ]


# --- the shared article -----------------------------------------------------------------


def test_shared_article_gives_its_title_and_the_nervous_regeneration_section() -> None:

    draft = split_article(SHARED_ARTICLE.read_text(encoding="utf-8"), "Article")

    assert draft.title == "Leg weakness after microdiscectomy"
    subjects = [lesson.subject for lesson in draft.lessons]
    assert "Nervous regeneration" in subjects
    regeneration = draft.lessons[subjects.index("Nervous regeneration")]
    assert regeneration.body.startswith("Nerve damage is usually permanent;")
    # The dateline above the title stays, at the top of the first lesson.
    assert draft.lessons[0].subject == "Leg weakness after microdiscectomy"
    assert draft.lessons[0].body.startswith("• April 25, 2024\n\nFor people with sciatica,")


# --- determinism and round trip ---------------------------------------------------------


@pytest.mark.parametrize("name", ["with-headings.md", "no-headings.txt", "split-markers.md"])
def test_same_article_gives_the_same_draft(name: str) -> None:
    first, second = split_fixture(name), split_fixture(name)

    assert first == second
    assert [lesson.to_markdown() for lesson in first.lessons] == [
        lesson.to_markdown() for lesson in second.lessons
    ]
    assert first.manifest() == second.manifest()


@pytest.mark.parametrize("name", ["with-headings.md", "no-headings.txt", "split-markers.md"])
def test_draft_written_to_disk_loads_as_a_course(tmp_path: Path, name: str) -> None:
    draft = split_fixture(name)

    course = load_course(write_draft(draft, tmp_path / "draft"))

    assert course.title == draft.title
    assert course.description == draft.description
    assert [lesson.path.name for lesson in course.lessons] == [
        lesson.filename for lesson in draft.lessons
    ]
    assert [lesson.subject for lesson in course.lessons] == [
        lesson.subject for lesson in draft.lessons
    ]
    assert [lesson.preheader for lesson in course.lessons] == [
        lesson.preheader for lesson in draft.lessons
    ]
    assert [lesson.body for lesson in course.lessons] == [
        lesson.body.strip() + "\n" for lesson in draft.lessons
    ]
    assert course.lessons[0].delay.total_seconds() == 0
    assert {lesson.delay.days for lesson in course.lessons[1:]} == {2}


def test_shared_article_draft_loads_as_a_course(tmp_path: Path) -> None:
    draft = split_article(SHARED_ARTICLE.read_text(encoding="utf-8"), "Article")

    course = load_course(write_draft(draft, tmp_path / "draft"))

    assert len(course.lessons) == len(draft.lessons)


def test_subject_with_quotes_and_a_colon_survives_the_round_trip(tmp_path: Path) -> None:
    article = (
        "# Sleep well\n\n"
        '## Why "rest": the short answer\n\n'
        "Resting is not the same as sleeping, and the body knows the difference well.\n\n"
        "## Back\\slash & 'single' quotes: #2\n\n"
        "Odd characters in a heading must reach the inbox exactly as they were written.\n"
    )
    draft = split_article(article, "Fallback title")
    assert [lesson.subject for lesson in draft.lessons] == [
        'Why "rest": the short answer',
        "Back\\slash & 'single' quotes: #2",
    ]

    course = load_course(write_draft(draft, tmp_path / "sleep"))

    assert [lesson.subject for lesson in course.lessons] == [
        'Why "rest": the short answer',
        "Back\\slash & 'single' quotes: #2",
    ]


def test_long_heading_is_shortened_to_a_subject_that_loads(tmp_path: Path) -> None:
    heading = "What every gardener should know about watering plants in the height of summer"
    draft = split_article(f"# Garden\n\n## {heading}\n\nWater early in the day.\n", "F")

    [lesson] = draft.lessons
    assert len(lesson.subject) <= SUBJECT_MAX_CHARS
    assert lesson.subject.endswith("…")
    assert heading.startswith(lesson.subject.removesuffix("…"))
    assert load_course(write_draft(draft, tmp_path / "garden")).lessons[0].subject == (
        lesson.subject
    )


#: Drafts whose file names share a key once the order prefix is dropped.
COLLIDING_DRAFTS = {
    "repeated-heading": (
        "# Notes\n\n## Example\n\nThe first example is a simple case to follow.\n\n"
        "## Example\n\nThe second example is a harder case that needs care.\n",
        "Fallback title",
    ),
    # Headings without a-z or 0-9 all slug to 'lesson'.
    "non-latin-headings": (
        "# \u041f\u0440\u043e \u0441\u043e\u043d\n\n"
        "## \u041f\u043e\u0447\u0435\u043c\u0443\n\n"
        "The first section explains why sleep matters for the body.\n\n"
        "## \u041a\u0430\u043a\n\n"
        "The second section explains how to keep a regular bedtime.\n",
        "Fallback title",
    ),
    # 'long-title-of-forty-characters-part-2' and '-part-3' agree in their first 40.
    "long-title-parts": (
        (ARTICLES / "no-headings.txt").read_text(encoding="utf-8"),
        "Watching garden birds through the seasons",
    ),
}


@pytest.mark.parametrize(
    ("article", "fallback_title"), COLLIDING_DRAFTS.values(), ids=COLLIDING_DRAFTS
)
def test_draft_lesson_keys_are_unique(tmp_path: Path, article: str, fallback_title: str) -> None:
    draft = split_article(article, fallback_title)
    assert len(draft.lessons) >= 2

    keys = [re.sub(r"^\d+-", "", lesson.filename) for lesson in draft.lessons]
    assert len(set(keys)) == len(keys), keys
    assert len(load_course(write_draft(draft, tmp_path / "draft")).lessons) == len(keys)
