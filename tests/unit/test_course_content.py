"""The shipped course keeps every fact, figure and link of the article, in its own words."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email import message_from_bytes, policy

import pytest

from newsletter.content.course import Course
from newsletter.render import LessonEmail, PersonalLinks, Recipient
from tests.conftest import ARTICLE

PUBMED = "https://www.ncbi.nlm.nih.gov/pubmed/22193841"
SCIENCEDAILY = "https://www.sciencedaily.com/releases/2012/01/120111103856.htm"
ARTICLE_CITATION = '"Leg weakness after microdiscectomy", April 25, 2024'

#: (lesson key, what must be said there, as a case-insensitive pattern)
FACTS = [
    ("the-cause", r"herniated"),
    ("the-cause", r"lumbar"),
    ("the-cause", r"outer ring"),
    ("the-cause", r"fluid"),
    ("the-cause", r"\bL4\b.*\bS3\b"),
    ("the-cause", r"sharp pain"),
    ("the-cause", r"numbness"),
    ("the-cause", r"physical therapy"),
    ("the-cause", r"chiropractic"),
    ("the-cause", r"decompression"),
    ("the-cause", r"minimally invasive"),
    ("the-cause", r"incontinence"),
    ("surgery-outcomes", r"small piece of disc"),
    ("surgery-outcomes", r"\b95%"),
    ("surgery-outcomes", r"spinal fusion"),
    ("surgery-outcomes", r"\b91 patients"),
    ("surgery-outcomes", r"paresis"),
    ("surgery-outcomes", r"mild paralysis"),
    ("surgery-outcomes", r"\b75%"),
    ("surgery-outcomes", r"one year after surgery"),
    ("surgery-outcomes", r"a quarter"),
    ("nerve-damage", r"cannot do is undo nerve damage|cannot undo"),
    ("nerve-damage", r"motor"),
    ("nerve-damage", r"sensory"),
    ("nerve-damage", r"severe"),
    ("nerve-damage", r"decompression, traction and exercise"),
    ("regeneration", r"usually permanent"),
    ("regeneration", r"no standard treatment"),
    ("regeneration", r"stem cell therapy"),
    ("regeneration", r"growth factor therapy"),
    ("regeneration", r"trial"),
    ("regeneration", r"another country"),
    ("regeneration", r"omega-3"),
    ("regeneration", r"food or as supplements"),
    ("regeneration", r"soon after an injury"),
    ("regeneration", r"rats"),
    ("regeneration", r"functional electrical stimulation"),
    ("summary", r"cost"),
    ("summary", r"recovery time"),
    ("summary", r"risks"),
    ("summary", r"often permanent"),
    ("summary", r"regenerate"),
]

#: Which links each lesson must cite (all cite the article itself).
SOURCES = {
    "welcome": {PUBMED, SCIENCEDAILY},
    "the-cause": set(),
    "surgery-outcomes": {PUBMED},
    "nerve-damage": set(),
    "regeneration": {SCIENCEDAILY},
    "summary": {PUBMED, SCIENCEDAILY},
}


def words(text: str) -> list[str]:
    text = re.sub(r"https?://\S+", " ", text.lower().replace("\u2019", "'").replace("'", ""))
    return re.findall(r"[a-z0-9%]+", text)


def test_the_course_follows_the_planned_sequence(course: Course):
    assert [lesson.key for lesson in course.lessons] == list(SOURCES)
    assert course.lessons[0].delay.total_seconds() == 0
    assert all(lesson.delay.days >= 1 for lesson in course.lessons[1:])


@pytest.mark.parametrize(("key", "pattern"), FACTS)
def test_each_fact_of_the_article_is_in_its_lesson(course: Course, key: str, pattern: str):
    assert re.search(pattern, course.lesson(key).body, re.IGNORECASE | re.DOTALL)


@pytest.mark.parametrize(("key", "links"), SOURCES.items())
def test_each_lesson_cites_its_sources(course: Course, key: str, links: set[str]):
    body = course.lesson(key).body
    sources = body[body.index("## Sources") :]
    assert ARTICLE_CITATION in sources
    cited = set(re.findall(r"\((https?://[^)]+)\)", sources))
    assert cited == links


def test_every_link_of_the_article_is_cited_somewhere_over_https(course: Course):
    article_links = set(re.findall(r"https?://\S+?(?=\.?\s)", ARTICLE.read_text()))
    cited = {
        url for lesson in course.lessons for url in re.findall(r"https?://[^)\s]+", lesson.body)
    }
    # The article links over plain http; both sites serve the same pages over https.
    upgraded = {re.sub(r"^http://", "https://", url) for url in article_links}
    assert upgraded == {PUBMED, SCIENCEDAILY}
    assert upgraded <= cited


def test_no_run_of_eight_words_is_copied_from_the_article(course: Course):
    article = words(ARTICLE.read_text())
    copied_runs = {tuple(article[i : i + 8]) for i in range(len(article) - 7)}
    for lesson in course.lessons:
        text = words(lesson.subject + " " + lesson.preheader + " " + lesson.body)
        runs = [" ".join(text[i : i + 8]) for i in range(len(text) - 7)]
        assert [run for run in runs if tuple(run.split()) in copied_runs] == [], lesson.path.name


def test_lessons_read_well_on_a_phone(course: Course):
    for lesson in course.lessons:
        assert len(lesson.subject) < 60
        assert lesson.preheader.lower() != lesson.subject.lower()
        paragraphs = [p for p in lesson.body.split("\n\n") if p and not p.startswith(("#", "-"))]
        longest = max(len(p.split()) for p in paragraphs)
        assert longest <= 60, f"{lesson.path.name}: a paragraph of {longest} words"


def test_every_email_carries_the_not_medical_advice_note(course, env, settings):
    links = PersonalLinks("https://x.example/u/1", "mailto:u@x.example", "https://x.example/p/1")
    for lesson in course.lessons:
        raw = LessonEmail(env, settings.sender, course, lesson).render(
            Recipient("r@example.com"), links, message_id="<m@x>", date=datetime.now(UTC)
        )
        message = message_from_bytes(raw, policy=policy.default)
        for part in message.iter_parts():  # type: ignore[attr-defined]
            assert "not medical advice" in part.get_content(), lesson.path.name
