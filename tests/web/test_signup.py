"""Double opt-in over HTTP: sign up, the confirmation email, the button, lesson 1."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from newsletter.db.models import Enrollment, EnrollmentStatus, SubscriberStatus
from tests.web.site import (
    CLIENT_IP,
    CONSENT_TEXT,
    CONSENT_VERSION,
    USER_AGENT,
    Site,
    csrf_of,
    with_site,
)


def test_a_person_signs_up_confirms_with_the_button_and_gets_lesson_one(
    settings, tmp_path, smtp_server
):
    async def scenario(site: Site) -> None:
        page = await site.client.get("/")
        assert page.status_code == 200
        assert "Leg weakness after microdiscectomy" in page.text
        assert CONSENT_TEXT in page.text

        answer = await site.signup("Ana@Example.COM", first_name="Ana", timezone="Europe/Paris")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/check-your-email"
        assert (await site.client.get("/check-your-email")).status_code == 200

        await site.stack.run()
        [confirmation] = site.stack.received("ana@example.com")
        assert "Ana" not in confirmation.get_body(("plain",)).get_content()  # only the address
        link = site.confirm_link("ana@example.com")

        # Opening the link (as a mail scanner would) shows a button and confirms nothing.
        shown = await site.client.get(link)
        assert shown.status_code == 200
        assert "<button" in shown.text
        ana = await site.subscriber("ana@example.com")
        assert ana is not None
        assert ana.status == SubscriberStatus.PENDING

        confirmed = await site.client.post(link, data={"csrf": csrf_of(shown)})
        assert confirmed.status_code == 200
        assert "you are subscribed" in confirmed.text
        ana = await site.subscriber("ana@example.com")
        assert ana is not None
        assert ana.status == SubscriberStatus.CONFIRMED
        assert ana.confirmed_at == site.stack.clock.now()
        assert ana.first_name == "Ana"
        assert ana.timezone == "Europe/Paris"
        record = {
            "form": "signup-page",
            "course": "leg-weakness-after-microdiscectomy",
            "text": CONSENT_TEXT,
            "version": CONSENT_VERSION,
            "given_at": site.stack.clock.now().isoformat(),
            "ip": CLIENT_IP,
            "user_agent": USER_AGENT,
            "confirmed_at": site.stack.clock.now().isoformat(),
            "confirmed_ip": CLIENT_IP,
            "confirmed_user_agent": USER_AGENT,
        }
        # The latest signup's record, and each course's under its slug.
        assert ana.consent == record | {"courses": {"leg-weakness-after-microdiscectomy": record}}

        site.stack.clock.advance(timedelta(minutes=1))
        await site.stack.run()
        messages = site.stack.received("ana@example.com")
        assert len(messages) == 2
        assert messages[1]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

        # Pressing the button again changes nothing and says so.
        again = await site.client.post(link, data={"csrf": csrf_of(shown)})
        assert again.status_code == 200
        assert "already subscribed" in again.text
        async with site.stack.sessions() as session:
            enrollments = list(await session.scalars(select(Enrollment)))
        assert [e.status for e in enrollments] == [EnrollmentStatus.ACTIVE]

    with_site(settings, tmp_path, smtp_server, scenario)


def test_the_ip_address_is_left_out_of_the_consent_record_when_told(
    settings, tmp_path, smtp_server
):
    async def scenario(site: Site) -> None:
        await site.signup("ana@example.com")
        ana = await site.subscriber("ana@example.com")
        assert ana is not None
        assert ana.consent["ip"] is None
        assert ana.consent["user_agent"] == USER_AGENT

    with_site(settings, tmp_path, smtp_server, scenario, store_ip=False)


def test_the_form_snippet_posts_from_another_site_without_a_csrf_token(
    settings, tmp_path, smtp_server
):
    async def scenario(site: Site) -> None:
        answer = await site.client.post(
            "/subscribe",
            data={"email": "ben@example.com", "form": "snippet", "consent_version": "9999"},
            headers={"origin": "https://blog.example.net"},
        )
        assert answer.status_code == 303
        ben = await site.subscriber("ben@example.com")
        assert ben is not None
        assert ben.consent["form"] == "snippet"
        # An unknown version is recorded as the sentence actually in force.
        assert ben.consent["version"] == CONSENT_VERSION

    with_site(settings, tmp_path, smtp_server, scenario)


def test_someone_who_left_can_sign_up_again_and_continue_the_course(
    settings, tmp_path, smtp_server
):
    async def scenario(site: Site) -> None:
        ana_id = await site.stack.subscribe("ana@example.com", sequence_id=site.sequence_id)
        await site.stack.run()  # lesson 1
        unsubscribe, _ = site.personal_paths(ana_id)
        await site.client.post(unsubscribe, data={"List-Unsubscribe": "One-Click"})

        await site.signup("ana@example.com")
        await site.stack.run()
        link = site.confirm_link("ana@example.com")
        shown = await site.client.get(link)
        await site.client.post(link, data={"csrf": csrf_of(shown)})

        site.stack.clock.advance(timedelta(days=3))
        await site.stack.run()
        subjects = [m["Subject"] for m in site.stack.received("ana@example.com")]
        assert len(subjects) == 3  # lesson 1, the confirmation, then lesson 2 (not 1 again)
        assert subjects[0] != subjects[2]

    with_site(settings, tmp_path, smtp_server, scenario)


def test_the_signup_page_says_so_when_no_course_is_open(settings, tmp_path, smtp_server):
    async def scenario(site: Site) -> None:
        page = await site.client.get("/")
        assert page.status_code == 503
        assert page.headers["retry-after"] == "3600"
        assert "closed" in page.text
        refused = await site.signup("ana@example.com")
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "3600"

    with_site(settings, tmp_path, smtp_server, scenario, sequence_slug="no-such-course")
