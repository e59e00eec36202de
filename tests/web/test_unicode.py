"""Names and addresses in any language, through the app: stored as typed, shown again
escaped and intact, given back in the data download; an address the sender cannot mail
gets a message at its field."""

from __future__ import annotations

import json
import re
from html import unescape

import httpx
import pytest

from tests.web.site import Site, csrf_of, with_site

NAMES = [
    "Zoë",
    "“Ana” O\u2019Brien",  # curly quotes, as phones type them
    "José-María Núñez",
    "Ana 🌷",
    "王秀英",
    "さくら",
    "김지우",
    "سارة",
    "נועה",
    "Ана Петровна",
    "Łukasz Żółć",
    'Zoë "<b>&amp;</b>',  # markup is text
]


def typed_value(page: httpx.Response, field: str) -> str:
    found = re.search(rf'id="{field}" name="{field}"[^>]*?value="([^"]*)"', page.text, re.S)
    assert found is not None, page.text
    return unescape(found.group(1))


@pytest.mark.parametrize("name", NAMES)
def test_a_name_in_any_script_is_stored_shown_and_downloaded_intact(
    settings, tmp_path, smtp_server, name
):
    async def scenario(site: Site) -> None:
        # Shown again, escaped, when another field needs fixing.
        refused = await site.client.post(
            "/subscribe", data={"email": "not an address", "first_name": name}
        )
        assert refused.status_code == 400
        assert typed_value(refused, "first_name") == name
        assert "<b>" not in refused.text

        assert (await site.signup("ana@example.com", first_name=name)).status_code == 303
        ana = await site.subscriber("ana@example.com")
        assert ana is not None
        assert ana.first_name == name

        _, preferences = site.personal_paths(ana.id)
        page = await site.client.get(preferences)
        download = await site.client.post(
            preferences, data={"csrf": csrf_of(page), "action": "export"}
        )
        assert json.loads(download.text)["subscriber"]["first_name"] == name
        assert download.headers["content-type"] == "application/json"

    with_site(settings, tmp_path, smtp_server, scenario)


@pytest.mark.parametrize(
    ("address", "stored"),
    [
        ("ana@bücher.example", "ana@xn--bcher-kva.example"),
        ("ana@例子.广告", "ana@xn--fsqu00a.xn--4rr70v"),
        ("ANA@ÉCOLE.EXAMPLE", "ana@xn--cole-9oa.example"),
    ],
)
def test_an_international_domain_is_accepted_and_stored_as_idna(
    settings, tmp_path, smtp_server, address, stored
):
    async def scenario(site: Site) -> None:
        assert (await site.signup(address)).status_code == 303
        assert await site.subscriber(stored) is not None

    with_site(settings, tmp_path, smtp_server, scenario)


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("josé@exämple.org", "accents or other scripts before the @"),
        ("用户@例子.广告", "accents or other scripts before the @"),
        ("a" * 65 + "@example.com", "part before the @ is longer than 64"),
    ],
)
def test_an_address_that_cannot_be_mailed_gets_a_message_at_its_field(
    settings, tmp_path, smtp_server, address, message
):
    async def scenario(site: Site) -> None:
        refused = await site.signup(address, first_name="José")
        assert refused.status_code == 400
        assert message in refused.text
        assert 'id="email-error"' in refused.text
        assert typed_value(refused, "email") == address
        assert typed_value(refused, "first_name") == "José"

    with_site(settings, tmp_path, smtp_server, scenario)
