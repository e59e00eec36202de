"""Whatever arrives at whichever endpoint, the answer is never a 500.

The ASGI transport re-raises any exception the app lets escape, so a crash fails the test
even where the error handler would have hidden it behind a friendly page."""

from __future__ import annotations

import asyncio
import itertools
import re
from html import unescape
from urllib.parse import quote

from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from newsletter.render import clean_name
from newsletter.tokens import Purpose
from newsletter.web.forms import HONEYPOT, MAX_NAME_LENGTH
from tests.web.site import close_site, csrf_of, start_site
from tests.web.test_unicode import NAMES

FIELDS = [
    "email",
    "first_name",
    "timezone",
    "form",
    "consent_version",
    "course",
    HONEYPOT,
    "csrf",
    "action",
    "List-Unsubscribe",
]
CONTENT_TYPES = [
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "multipart/form-data; boundary=xyz",
    "text/plain",
    "application/json",
    "",
]
ROUTES = [
    "",
    "c",
    "subscribe",
    "check-your-email",
    "confirm",
    "unsubscribe",
    "preferences",
    "static",
    "nowhere",
]

text = st.one_of(st.text(max_size=200), st.sampled_from(NAMES))
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=100)
requests = st.fixed_dictionaries(
    {
        "method": st.sampled_from(["GET", "POST", "POST", "HEAD", "PUT"]),
        "route": st.sampled_from(ROUTES),
        "token": st.one_of(st.none(), st.text(max_size=80)),
        "for_course": st.booleans(),
        "csrf": st.booleans(),
        "fields": st.dictionaries(st.one_of(st.sampled_from(FIELDS), text), text, max_size=8),
        "raw": st.one_of(st.none(), st.binary(max_size=3000)),
        "content_type": st.sampled_from(CONTENT_TYPES),
        "user_agent": header_text,
    }
)


def test_no_input_to_any_endpoint_gets_a_500(settings, tmp_path, smtp_server):
    runner = asyncio.Runner()
    site = runner.run(start_site(settings, tmp_path, smtp_server))
    ana = runner.run(site.stack.subscribe("ana@example.com", sequence_id=site.sequence_id))
    now = site.stack.clock.now()
    valid = {purpose: site.links.tokens.issue(purpose, ana, now) for purpose in Purpose}
    # Links of one course, as lessons and confirmations carry them.
    for_course = {
        purpose: site.links.tokens.issue(purpose, ana, now, site.sequence_id) for purpose in Purpose
    }

    async def send(request: dict) -> int:  # type: ignore[type-arg]
        route = request["route"]
        token = request["token"]
        if route in ("confirm", "unsubscribe", "preferences"):
            tokens = for_course if request["for_course"] else valid
            token = tokens[Purpose(route)] if token is None else quote(token, safe="")
            path = f"/{route}/{token}"
        else:
            path = f"/{route}" + (f"/{quote(token, safe='')}" if token else "")
        fields = dict(request["fields"])
        if request["csrf"] and route in ("confirm", "preferences"):
            page = await site.client.get(path)
            if 'name="csrf"' in page.text:
                fields["csrf"] = csrf_of(page)
        headers = {"user-agent": request["user_agent"]}
        if request["raw"] is not None:
            headers["content-type"] = request["content_type"]
            answer = await site.client.request(
                request["method"], path, content=request["raw"], headers=headers
            )
        else:
            answer = await site.client.request(
                request["method"],
                path,
                data=fields if request["method"] in ("POST", "PUT") else None,
                headers=headers,
            )
        return answer.status_code

    @hypothesis_settings(
        max_examples=400,
        database=None,  # no .hypothesis/ folder in the repository
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(requests)
    def never_500(request: dict) -> None:  # type: ignore[type-arg]
        status = runner.run(send(request))
        assert status < 500, request

    try:
        never_500()
    finally:
        runner.run(close_site(site))
        runner.close()


#: What the name field refuses: control characters but the tab, and line separators.
CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
names = st.one_of(
    st.text(max_size=120),
    st.text(st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"]), max_size=120),
    st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map(" ".join),
)


def test_any_name_is_stored_as_cleaned_or_refused_at_its_field_and_shown_intact(
    settings, tmp_path, smtp_server
):
    limits = settings.signup.model_copy(update={"signups_per_ip_per_hour": 1_000_000})
    runner = asyncio.Runner()
    site = runner.run(
        start_site(settings.model_copy(update={"signup": limits}), tmp_path, smtp_server)
    )
    addresses = (f"n{n}@example.com" for n in itertools.count())

    async def sign_up(name: str) -> None:
        email = next(addresses)
        answer = await site.signup(email, first_name=name)
        typed = name[:1000].strip()
        if CONTROL.search(typed) or len(typed) > MAX_NAME_LENGTH:
            assert answer.status_code == 400
            assert 'id="first_name-error"' in answer.text
            shown = re.search(r'name="first_name"[^>]*?value="([^"]*)"', answer.text, re.S)
            assert shown is not None
            assert unescape(shown.group(1)) == CONTROL.sub(" ", name[:1000])
            assert await site.subscriber(email) is None
        else:
            assert answer.status_code == 303
            subscriber = await site.subscriber(email)
            assert subscriber is not None
            assert subscriber.first_name == clean_name(typed)

    @hypothesis_settings(
        max_examples=200,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(names)
    def stored_or_refused(name: str) -> None:
        runner.run(sign_up(name))

    try:
        stored_or_refused()
    finally:
        runner.run(close_site(site))
        runner.close()
