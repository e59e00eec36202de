"""What attackers and accidents try: probing who is subscribed, inbox bombing, bots, forged
forms, broken links, huge bodies. Each gets its 4xx page, never a 500."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select

from newsletter.db.models import Subscriber, SubscriberStatus
from newsletter.db.session import create_engine, make_sessionmaker
from newsletter.signup import (
    CONFIRMATION_DAY,
    CONFIRMATION_INTERVAL,
    CONFIRMATIONS_PER_DAY,
    SIGNUP_WINDOW,
    SIGNUPS_PER_CLIENT,
)
from newsletter.tokens import Purpose
from newsletter.web.app import create_app
from newsletter.web.forms import HONEYPOT
from newsletter.web.security import MAX_BODY_BYTES, MAX_HEADER_BYTES
from tests.web.site import Site, client_for, csrf_of, with_site


async def answer_for(site: Site, email: str) -> tuple[int, str | None, str]:
    answer = await site.signup(email, first_name="X")
    follow = await site.client.get(answer.headers.get("location", "/"))
    return answer.status_code, answer.headers.get("location"), follow.text


def test_new_pending_confirmed_and_unsubscribed_addresses_get_the_same_answer(
    settings, tmp_path, smtp_server
):
    async def scenario(site: Site) -> None:
        confirmed = await site.stack.subscribe("conf@example.com", sequence_id=site.sequence_id)
        gone = await site.stack.subscribe("gone@example.com", sequence_id=site.sequence_id)
        unsubscribe, _ = site.personal_paths(gone)
        await site.client.post(unsubscribe)
        await site.signup("pend@example.com")

        answers = {
            email: await answer_for(site, email)
            for email in ("new@example.com", "pend@example.com", "conf@example.com")
        }
        answers["gone@example.com"] = await answer_for(site, "gone@example.com")
        assert len(set(answers.values())) == 1
        assert answers["new@example.com"][:2] == (303, "/check-your-email")

        # Nobody's state was changed by a stranger typing their address, except that the
        # one who left may confirm again; the confirmed one is not mailed at all.
        conf = await site.stack.subscriber(confirmed)
        assert conf.status == SubscriberStatus.CONFIRMED
        assert await site.confirmations("conf@example.com") == 0

    with_site(settings, tmp_path, smtp_server, scenario)


def test_an_address_gets_at_most_one_confirmation_email_per_window(settings, tmp_path, smtp_server):
    async def scenario(site: Site) -> None:
        for _ in range(5):
            assert (await site.signup("ana@example.com")).status_code == 303
        assert await site.confirmations("ana@example.com") == 1
        site.stack.clock.advance(CONFIRMATION_INTERVAL - timedelta(seconds=1))
        await site.signup("ana@example.com")
        assert await site.confirmations("ana@example.com") == 1
        site.stack.clock.advance(timedelta(seconds=1))
        await site.signup("ana@example.com")
        assert await site.confirmations("ana@example.com") == 2
        await site.stack.run()
        assert len(site.stack.received("ana@example.com")) == 2

    with_site(settings, tmp_path, smtp_server, scenario)


def test_an_address_gets_at_most_three_confirmation_emails_a_day_from_any_number_of_clients(
    settings, tmp_path, smtp_server
):
    async def scenario(site: Site) -> None:
        first = site.stack.clock.now()
        answers = set()
        for n in range(50):  # a new client every time, each after the interval
            client = site.client_from(f"198.51.100.{n}")
            answer = await site.signup("ana@example.com", client=client)
            answers.add((answer.status_code, answer.headers["location"]))
            await client.aclose()
            site.stack.clock.advance(CONFIRMATION_INTERVAL)
        assert answers == {(303, "/check-your-email")}  # the same answer every time
        page = await site.client.get("/check-your-email")
        assert "at most one confirmation email every 10 minutes, and 3 a day" in page.text
        assert await site.confirmations("ana@example.com") == CONFIRMATIONS_PER_DAY
        await site.stack.run()
        assert len(site.stack.received("ana@example.com")) == CONFIRMATIONS_PER_DAY

        # A day after the first, a fourth may go.
        site.stack.clock.set(first + CONFIRMATION_DAY + timedelta(seconds=1))
        await site.signup("ana@example.com")
        assert await site.confirmations("ana@example.com") == CONFIRMATIONS_PER_DAY + 1

    with_site(settings, tmp_path, smtp_server, scenario)


def test_the_daily_cap_comes_from_the_configuration(settings, tmp_path, smtp_server):
    limits = settings.signup.model_copy(
        update={"confirmations_per_address_per_day": 1, "confirmation_interval_s": 0}
    )
    configured = settings.model_copy(update={"signup": limits})

    async def scenario(site: Site) -> None:
        for n in range(3):
            client = site.client_from(f"198.51.100.{n}")
            assert (await site.signup("ana@example.com", client=client)).status_code == 303
            await client.aclose()
        assert await site.confirmations("ana@example.com") == 1
        page = await site.client.get("/check-your-email")
        assert "we send at most 1 a day to one address." in page.text

    with_site(configured, tmp_path, smtp_server, scenario)


def test_one_network_may_sign_up_only_so_many_addresses_an_hour(settings, tmp_path, smtp_server):
    async def scenario(site: Site) -> None:
        for n in range(SIGNUPS_PER_CLIENT):
            assert (await site.signup(f"victim{n}@example.com")).status_code == 303
        refused = await site.signup("one-more@example.com", first_name="Ana")
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == str(int(SIGNUP_WINDOW.total_seconds()))
        assert "try again in an hour" in refused.text
        assert 'value="one-more@example.com"' in refused.text  # what they typed is kept
        assert await site.subscriber("one-more@example.com") is None

        elsewhere = site.client_from("198.51.100.7")
        assert (await site.signup("other@example.com", client=elsewhere)).status_code == 303
        await elsewhere.aclose()

        site.stack.clock.advance(SIGNUP_WINDOW)
        assert (await site.signup("one-more@example.com")).status_code == 303

    with_site(settings, tmp_path, smtp_server, scenario)


def test_a_filled_honeypot_looks_like_success_and_does_nothing(settings, tmp_path, smtp_server):
    async def scenario(site: Site) -> None:
        answer = await site.signup("bot@example.com", **{HONEYPOT: "http://spam.example"})
        assert answer.status_code == 303
        assert answer.headers["location"] == "/check-your-email"
        async with site.stack.sessions() as session:
            assert await session.scalar(select(func.count()).select_from(Subscriber)) == 0

    with_site(settings, tmp_path, smtp_server, scenario)


BAD_SIGNUPS = [
    ({"email": ""}, "Please enter your email address."),
    ({"email": "ana.example.com"}, "needs an @ sign"),
    ({"email": "ana@@example.com"}, "does not look like an email address"),
    ({"email": "ana@localhost"}, "does not look like an email address"),
    ({"email": "a" * 250 + "@example.com"}, "longer than 254 characters"),
    ({"email": "ana@example.com", "first_name": "N" * 101}, "shorten your name"),
    ({"email": "<script>alert(1)</script>@x"}, "does not look like an email address"),
]


@pytest.mark.parametrize(("fields", "message"), BAD_SIGNUPS)
def test_a_bad_signup_gets_a_400_that_says_what_to_fix_and_keeps_what_was_typed(
    settings, tmp_path, smtp_server, fields, message
):
    async def scenario(site: Site) -> None:
        answer = await site.client.post("/subscribe", data={"first_name": "Ana", **fields})
        assert answer.status_code == 400
        assert message in answer.text
        assert 'aria-invalid="true"' in answer.text
        assert "<script>" not in answer.text
        typed = fields["email"]
        if typed and "<" not in typed:
            assert f'value="{typed}"' in answer.text
        async with site.stack.sessions() as session:
            assert await session.scalar(select(func.count()).select_from(Subscriber)) == 0

    with_site(settings, tmp_path, smtp_server, scenario)


def test_a_name_with_control_characters_gets_a_400_at_its_field_and_nothing_is_stored(
    settings, tmp_path, smtp_server
):
    async def scenario(site: Site) -> None:
        refused = await site.signup("ana@example.com", first_name="Ana\r\nBcc: x@evil\x00")
        assert refused.status_code == 400
        assert 'id="first_name-error"' in refused.text
        assert "line break or an invisible control character" in refused.text
        assert 'value="Ana  Bcc: x@evil "' in refused.text  # kept, less the characters
        assert "\x00" not in refused.text
        assert "\r" not in refused.text
        assert await site.subscriber("ana@example.com") is None

        await site.signup("  Ana@BÜCHER.example ", first_name="  Ana\tMaria ")
        ana = await site.subscriber("ana@xn--bcher-kva.example")
        assert ana is not None
        assert ana.first_name == "Ana Maria"

    with_site(settings, tmp_path, smtp_server, scenario)


def test_broken_expired_and_stale_links_get_friendly_pages(settings, tmp_path, smtp_server):
    async def scenario(site: Site) -> None:
        ana = await site.stack.subscribe("ana@example.com", sequence_id=site.sequence_id)
        unsubscribe, preferences = site.personal_paths(ana)
        for path in (unsubscribe, preferences, "/confirm/1.123.abc"):
            tampered = path[:-3] + ("aaa" if not path.endswith("aaa") else "bbb")
            for method in ("GET", "POST"):
                answer = await site.client.request(method, tampered)
                assert answer.status_code == 400, (method, tampered)
                assert "open it again from the email" in answer.text
        # A token for one purpose does not work for another.
        assert (
            await site.client.get(unsubscribe.replace("unsubscribe", "preferences"))
        ).status_code == 400

        await site.signup("ben@example.com")
        await site.stack.run()
        link = site.confirm_link("ben@example.com")
        site.stack.clock.advance(timedelta(days=7, seconds=1))
        for method in ("GET", "POST"):
            expired = await site.client.request(method, link)
            assert expired.status_code == 410
            assert "sign up again" in expired.text

        # A valid link for someone who is no longer there.
        token = site.links.tokens.issue(Purpose.PREFERENCES, 9999, site.stack.clock.now())
        gone = await site.client.get(f"/preferences/{token}")
        assert gone.status_code == 404

    with_site(settings, tmp_path, smtp_server, scenario)


def test_forms_without_a_valid_csrf_token_get_403_and_change_nothing(
    settings, tmp_path, smtp_server
):
    async def scenario(site: Site) -> None:
        await site.signup("ben@example.com")
        await site.signup("cat@example.com")
        await site.stack.run()
        ben_link = site.confirm_link("ben@example.com")
        cat_page = await site.client.get(site.confirm_link("cat@example.com"))
        ben_page = await site.client.get(ben_link)

        missing = await site.client.post(ben_link)
        assert missing.status_code == 403
        assert "press the button again" in missing.text
        assert 'name="csrf"' in missing.text  # with a fresh token to press it again
        other = await site.client.post(ben_link, data={"csrf": csrf_of(cat_page)})
        assert other.status_code == 403
        site.stack.clock.advance(timedelta(hours=12, seconds=1))
        stale = await site.client.post(ben_link, data={"csrf": csrf_of(ben_page)})
        assert stale.status_code == 403
        ben = await site.subscriber("ben@example.com")
        assert ben is not None
        assert ben.status == SubscriberStatus.PENDING

        fresh = await site.client.post(ben_link, data={"csrf": csrf_of(stale)})
        assert fresh.status_code == 200

        ana = await site.stack.subscribe("ana@example.com", sequence_id=site.sequence_id)
        _, preferences = site.personal_paths(ana)
        forged = await site.client.post(preferences, data={"action": "delete"})
        assert forged.status_code == 403
        assert await site.subscriber("ana@example.com") is not None

    with_site(settings, tmp_path, smtp_server, scenario)


def test_headers_over_the_limit_get_a_431_page(settings, tmp_path, smtp_server):
    async def scenario(site: Site) -> None:
        answer = await site.client.get("/", headers={"cookie": "x" * MAX_HEADER_BYTES})
        assert answer.status_code == 431
        assert "clear the cookies of this site" in answer.text
        assert answer.headers["connection"] == "close"
        fits = await site.client.get("/", headers={"cookie": "x" * (MAX_HEADER_BYTES // 2)})
        assert fits.status_code == 200

    with_site(settings, tmp_path, smtp_server, scenario)


def test_a_body_over_the_limit_gets_a_413_page(settings, tmp_path, smtp_server):
    async def scenario(site: Site) -> None:
        big = {"email": "ana@example.com", "first_name": "x" * MAX_BODY_BYTES}
        declared = await site.client.post("/subscribe", data=big)
        assert declared.status_code == 413
        assert "16 KiB" in declared.text

        async def chunks():  # no Content-Length: counted as it arrives
            for _ in range(20):
                yield b"x" * 1024

        streamed = await site.client.post(
            "/subscribe",
            content=chunks(),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert streamed.status_code == 413
        assert await site.subscriber("ana@example.com") is None

    with_site(settings, tmp_path, smtp_server, scenario)


def test_uploads_and_unknown_routes_and_methods_get_friendly_4xx_pages(
    settings, tmp_path, smtp_server
):
    async def scenario(site: Site) -> None:
        upload = await site.client.post(
            "/subscribe", data={"email": "a@example.com"}, files={"f": ("a.txt", b"hi")}
        )
        assert upload.status_code == 400
        missing = await site.client.get("/wp-login.php")
        assert missing.status_code == 404
        assert "There is no page here" in missing.text
        wrong = await site.client.delete("/subscribe")
        assert wrong.status_code == 405
        assert "<h1>" in wrong.text

    with_site(settings, tmp_path, smtp_server, scenario)


def test_every_response_carries_the_security_headers(settings, tmp_path, smtp_server):
    async def scenario(site: Site) -> None:
        for path in ("/", "/check-your-email", "/nowhere", "/static/site.css"):
            answer = await site.client.get(path)
            csp = answer.headers["content-security-policy"]
            assert "frame-ancestors 'none'" in csp
            assert "unsafe-inline" not in csp
            assert "script-src 'self'" in csp
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert answer.headers["referrer-policy"] == "no-referrer"
            assert answer.headers["x-frame-options"] == "DENY"
        page = await site.client.get("/")
        assert page.headers["cache-control"] == "no-store"
        assert "<script>" not in page.text  # the one script is a file: no inline code
        assert 'src="/static/timezone.js"' in page.text
        assert (await site.client.get("/static/timezone.js")).status_code == 200
        assert "set-cookie" not in page.headers

    with_site(settings, tmp_path, smtp_server, scenario)


def test_an_error_on_our_side_shows_a_500_page_without_details(settings, tmp_path, smtp_server):
    async def scenario(site: Site) -> None:
        # A database that cannot be opened: its path holds the "secret" that must not leak.
        engine = create_engine(f"sqlite:///{tmp_path}/no-such-folder/hunter2.db")
        app = create_app(
            site.stack.settings,
            make_sessionmaker(engine),
            site.stack.clock,
            site.links,
            secret="web-test-secret-0123456789",
        )
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
            base_url="http://localhost:8000",
        )
        answer = await client.get("/")
        await client.aclose()
        await engine.dispose()
        assert answer.status_code == 500
        assert "Something went wrong on our side" in answer.text
        assert "hunter2" not in answer.text
        assert "Traceback" not in answer.text
        assert answer.headers["x-content-type-options"] == "nosniff"

    with_site(settings, tmp_path, smtp_server, scenario)


def test_signups_from_unknown_clients_still_count_against_a_limit(settings, tmp_path, smtp_server):
    async def scenario(site: Site) -> None:
        client = client_for(site.app, "")
        for n in range(SIGNUPS_PER_CLIENT):
            await site.signup(f"n{n}@example.com", client=client)
        assert (await site.signup("last@example.com", client=client)).status_code == 429
        await client.aclose()

    with_site(settings, tmp_path, smtp_server, scenario)


def test_the_signup_limits_come_from_the_configuration(settings, tmp_path, smtp_server):
    limits = settings.signup.model_copy(
        update={"signups_per_ip_per_hour": 2, "confirmation_interval_s": 60}
    )
    configured = settings.model_copy(update={"signup": limits})

    async def scenario(site: Site) -> None:
        assert (await site.signup("a@example.com")).status_code == 303
        assert (await site.signup("b@example.com")).status_code == 303
        assert (await site.signup("c@example.com")).status_code == 429

        again = site.client_from("198.51.100.9")
        site.stack.clock.advance(timedelta(seconds=61))
        assert (await site.signup("a@example.com", client=again)).status_code == 303
        await again.aclose()
        await site.stack.worker.dispatch_once(site.stack.clock.now())
        # A minute apart: the configured interval, not the default ten minutes, applies.
        assert len(site.stack.received("a@example.com")) == 2

    with_site(configured, tmp_path, smtp_server, scenario)
