"""`newsletter form-snippet`: a form another site pastes in, which signs people up here."""

from __future__ import annotations

from html.parser import HTMLParser

from typer.testing import CliRunner, Result

from newsletter.cli import load_commands
from newsletter.cli.web import signup_snippet
from newsletter.signup import live_courses
from newsletter.subscribers import tags_of
from newsletter.web.forms import HONEYPOT
from tests.conftest import COURSE_DIR, REPO
from tests.web.site import CONSENT_TEXT, Site, with_site

SOURDOUGH = REPO / "tests" / "fixtures" / "courses" / "sourdough"


class _Form(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action = ""
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.action = values["action"]
        elif tag == "input":
            self.fields[values["name"]] = values.get("value", "")


def test_the_snippet_is_printed_for_the_course_asked_for(tmp_path):
    runner = CliRunner(
        env={
            "NEWSLETTER_DATABASE__URL": f"sqlite:///{tmp_path / 'newsletter.db'}",
            "NEWSLETTER_PATHS__VAR": str(tmp_path / "var"),
        }
    )

    def cli(*args: str) -> Result:
        return runner.invoke(load_commands(), ["--config", str(REPO / "config.toml"), *args])

    closed = cli("form-snippet")
    assert closed.exit_code != 0
    assert "no live course" in str(closed.exception)
    for folder in (COURSE_DIR, SOURDOUGH):
        queued = cli("sequences", "queue", str(folder))
        assert queued.exit_code == 0, queued.output

    oldest = cli("form-snippet")
    assert oldest.exit_code == 0, oldest.output
    assert 'action="http://localhost:8000/subscribe"' in oldest.output
    assert 'name="course" value="leg-weakness-after-microdiscectomy"' in oldest.output
    assert CONSENT_TEXT in oldest.output

    sourdough = cli("form-snippet", "--course", "sourdough")
    assert sourdough.exit_code == 0, sourdough.output
    assert 'name="course" value="sourdough"' in sourdough.output
    assert "Yes, send me the three sourdough lessons." in sourdough.output
    assert CONSENT_TEXT not in sourdough.output

    unknown = cli("form-snippet", "--course", "rye")
    assert unknown.exit_code != 0
    assert "no live course 'rye'" in str(unknown.exception)


def test_a_pasted_snippet_signs_someone_up(settings, tmp_path, smtp_server):
    async def scenario(site: Site) -> None:
        async with site.stack.sessions() as session:
            [course] = await live_courses(session)
        form = _Form()
        form.feed(signup_snippet(settings, course))
        assert form.action == f"{settings.site.base}/subscribe"
        assert set(form.fields) == {
            "email",
            "first_name",
            HONEYPOT,
            "timezone",
            "form",
            "course",
            "consent_version",
            "tags",
        }
        fields = form.fields | {"email": "ana@example.com", "timezone": "Asia/Tokyo"}
        answer = await site.client.post(form.action.removeprefix(settings.site.base), data=fields)
        assert answer.status_code == 303
        ana = await site.subscriber("ana@example.com")
        assert ana is not None
        assert ana.consent["form"] == "snippet"
        assert ana.consent["text"] == CONSENT_TEXT
        assert ana.timezone == "Asia/Tokyo"

    with_site(settings, tmp_path, smtp_server, scenario)


def test_a_snippet_with_tags_tags_whoever_signs_up_with_it(settings, tmp_path, smtp_server):
    async def scenario(site: Site) -> None:
        async with site.stack.sessions() as session:
            [course] = await live_courses(session)
        form = _Form()
        form.feed(signup_snippet(settings, course, ["spring-fair", "print"]))
        assert form.fields["tags"] == "spring-fair print"
        path = form.action.removeprefix(settings.site.base)

        tagged = form.fields | {"email": "ana@example.com"}
        # Edited by hand: what is no tag is left out, and the signup still goes through.
        edited = form.fields | {"email": "ben@example.com", "tags": "<b>bold</b> ok " + "x " * 50}
        assert (await site.client.post(path, data=tagged)).status_code == 303
        assert (await site.client.post(path, data=edited)).status_code == 303

        async with site.stack.sessions() as session:
            ana = await site.subscriber("ana@example.com")
            ben = await site.subscriber("ben@example.com")
            assert ana is not None
            assert ben is not None
            assert await tags_of(session, ana.id) == ["print", "spring-fair"]
            assert await tags_of(session, ben.id) == ["ok", "x"]

    with_site(settings, tmp_path, smtp_server, scenario)
