"""`newsletter form-snippet`: a form another site pastes in, which signs people up here."""

from __future__ import annotations

from html.parser import HTMLParser

from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.cli.web import signup_snippet
from newsletter.signup import CONSENT_TEXT
from newsletter.web.forms import HONEYPOT
from tests.conftest import REPO
from tests.web.site import Site, with_site


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


def test_the_snippet_is_printed_with_this_sites_address(settings):
    result = CliRunner().invoke(app, ["--config", str(REPO / "config.toml"), "form-snippet"])
    assert result.exit_code == 0, result.output
    assert 'action="http://localhost:8000/subscribe"' in result.output
    assert CONSENT_TEXT in result.output


def test_a_pasted_snippet_signs_someone_up(settings, tmp_path, smtp_server):
    form = _Form()
    form.feed(signup_snippet(settings))
    assert form.action == f"{settings.site.base}/subscribe"
    assert set(form.fields) == {
        "email",
        "first_name",
        HONEYPOT,
        "timezone",
        "form",
        "consent_version",
    }

    async def scenario(site: Site) -> None:
        fields = form.fields | {"email": "ana@example.com", "timezone": "Asia/Tokyo"}
        answer = await site.client.post(form.action.removeprefix(settings.site.base), data=fields)
        assert answer.status_code == 303
        ana = await site.subscriber("ana@example.com")
        assert ana is not None
        assert ana.consent["form"] == "snippet"
        assert ana.consent["text"] == CONSENT_TEXT
        assert ana.timezone == "Asia/Tokyo"

    with_site(settings, tmp_path, smtp_server, scenario)
