"""Two courses side by side on one database, each speaking as itself: its own signup page,
consent sentence, sender, footer, list and language, in its pages, its confirmation email
and its lessons; leaving one leaves the other running."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import timedelta
from email.message import EmailMessage

from sqlalchemy import select

from newsletter.content.course import load_course
from newsletter.content.identity import consent_version
from newsletter.db.models import Enrollment, EnrollmentStatus, Sequence, SubscriberStatus
from tests.conftest import REPO
from tests.web.site import BASE, CONSENT_TEXT, Site, csrf_of, with_site

SOURDOUGH = load_course(REPO / "tests" / "fixtures" / "courses" / "sourdough")
SPINE = "leg-weakness-after-microdiscectomy"
MEDICAL = "not medical advice"
BREAD_CONSENT = SOURDOUGH.identity.consent_text
BREAD_NOTE = "Baked with flour, water, salt and patience."
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def whole(message: EmailMessage) -> str:
    """Headers and both bodies, as text to search."""
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None
    assert html is not None
    return str(message.items()) + text.get_content() + html.get_content()


async def with_sourdough(site: Site) -> int:
    return await site.stack.queue(SOURDOUGH)


async def enrollments(site: Site, email: str) -> dict[str, str]:
    subscriber = await site.subscriber(email)
    assert subscriber is not None
    async with site.stack.sessions() as session:
        rows = await session.execute(
            select(Sequence.slug, Enrollment.status)
            .join(Sequence, Sequence.id == Enrollment.sequence_id)
            .where(Enrollment.subscriber_id == subscriber.id)
        )
        return {slug: status for slug, status in rows}


async def confirm_newest(site: Site, email: str) -> None:
    link = site.confirm_link(email)
    shown = await site.client.get(link)
    assert shown.status_code == 200
    confirmed = await site.client.post(link, data={"csrf": csrf_of(shown)})
    assert confirmed.status_code == 200, confirmed.text
    assert "you are subscribed" in confirmed.text


def test_the_home_page_lists_the_live_courses_and_each_has_its_own_page(
    settings, tmp_path, smtp_server
):
    async def scenario(site: Site) -> None:
        await with_sourdough(site)
        home = await site.client.get("/")
        assert home.status_code == 200
        assert f'href="/c/{SPINE}"' in home.text
        assert 'href="/c/sourdough"' in home.text

        bread = await site.client.get("/c/sourdough")
        assert bread.status_code == 200
        assert BREAD_CONSENT in bread.text
        assert '<html lang="en-GB">' in bread.text
        assert "The Crumb Club" in bread.text  # the site speaks as the course's sender
        assert BREAD_NOTE in bread.text
        assert 'name="course" value="sourdough"' in bread.text
        assert f'name="consent_version" value="{SOURDOUGH.identity.consent_version}"' in bread.text
        assert MEDICAL not in bread.text
        assert CONSENT_TEXT not in bread.text

        spine = await site.client.get(f"/c/{SPINE}")
        assert spine.status_code == 200
        assert CONSENT_TEXT in spine.text
        assert MEDICAL in spine.text
        assert "Crumb" not in spine.text
        assert BREAD_CONSENT not in spine.text

    with_site(settings, tmp_path, smtp_server, scenario)


def test_a_course_that_is_not_there_is_a_friendly_404(settings, tmp_path, smtp_server):
    async def scenario(site: Site) -> None:
        await with_sourdough(site)
        for path in ("/c/rye", "/c/x..y", "/c/%00", "/c/" + "a" * 500, "/c/sour%20dough"):
            page = await site.client.get(path)
            assert page.status_code == 404, path
            assert "There is no course here" in page.text
            assert 'href="/"' in page.text
        posted = await site.signup("ana@example.com", course="rye")
        assert posted.status_code == 404
        assert await site.subscriber("ana@example.com") is None

    with_site(settings, tmp_path, smtp_server, scenario)


def test_each_course_signs_up_confirms_and_teaches_as_itself(settings, tmp_path, smtp_server):
    async def scenario(site: Site) -> None:
        await with_sourdough(site)
        assert (await site.signup("ana@example.com", course="sourdough")).status_code == 303
        assert (await site.signup("ben@example.com", course=SPINE)).status_code == 303
        await site.stack.run()

        [ana_confirm] = site.stack.received("ana@example.com")
        assert ana_confirm["From"].addresses[0].addr_spec == "bread@crumb.example"
        assert ana_confirm["From"].addresses[0].display_name == "The Crumb Club"
        assert "Sourdough from scratch" in whole(ana_confirm)
        assert BREAD_NOTE in whole(ana_confirm)
        assert '<html lang="en-GB"' in whole(ana_confirm)
        assert MEDICAL not in whole(ana_confirm)

        [ben_confirm] = site.stack.received("ben@example.com")
        assert ben_confirm["From"].addresses[0].addr_spec == settings.sender.address
        assert ben_confirm["From"].addresses[0].display_name == "Spine Health Notes"
        assert MEDICAL in whole(ben_confirm)
        assert "Crumb" not in whole(ben_confirm)
        assert "Sourdough" not in whole(ben_confirm)

        await confirm_newest(site, "ana@example.com")
        await confirm_newest(site, "ben@example.com")
        await site.stack.run()

        ana_lesson = site.stack.received("ana@example.com")[-1]
        assert ana_lesson["Subject"] == "Your starter, day one"
        assert ana_lesson["From"].addresses[0].addr_spec == "bread@crumb.example"
        assert ana_lesson["Reply-To"].addresses[0].addr_spec == "baker@crumb.example"
        assert ana_lesson["List-Id"] == "Crumb Club sourdough <sourdough.crumb.example>"
        assert BREAD_NOTE in whole(ana_lesson)
        assert MEDICAL not in whole(ana_lesson)
        assert [
            envelope
            for envelope, rcpts, _ in site.stack.server.messages
            if "ana@example.com" in rcpts
        ] == ["bread@crumb.example"] * 2

        ben_lesson = site.stack.received("ben@example.com")[-1]
        assert ben_lesson["From"].addresses[0].display_name == "Spine Health Notes"
        assert ben_lesson["Reply-To"] is None
        assert MEDICAL in whole(ben_lesson)
        assert "Crumb" not in whole(ben_lesson)
        assert "crumb.example" not in whole(ben_lesson)

        ana = await site.subscriber("ana@example.com")
        ben = await site.subscriber("ben@example.com")
        assert ana is not None
        assert ben is not None
        assert ana.consent["text"] == BREAD_CONSENT
        assert ana.consent["courses"]["sourdough"]["version"] == (
            SOURDOUGH.identity.consent_version
        )
        assert ben.consent["text"] == CONSENT_TEXT
        assert set(ben.consent["courses"]) == {SPINE}

    with_site(settings, tmp_path, smtp_server, scenario)


def test_a_subscriber_takes_two_courses_and_leaves_one(settings, tmp_path, smtp_server):
    async def scenario(site: Site) -> None:
        await with_sourdough(site)
        await site.signup("ana@example.com", first_name="Ana", course="sourdough")
        await site.stack.run()
        await confirm_newest(site, "ana@example.com")
        await site.stack.run()

        # Already confirmed, she signs up for the second course: it asks her to confirm
        # that one too, in its own voice, and her first course's record stays.
        await site.signup("ana@example.com", first_name="Someone else", course=SPINE)
        await site.stack.run()
        spine_confirm = site.stack.received("ana@example.com")[-1]
        assert spine_confirm["From"].addresses[0].display_name == "Spine Health Notes"
        assert "Leg weakness after microdiscectomy" in whole(spine_confirm)
        ana = await site.subscriber("ana@example.com")
        assert ana is not None
        assert ana.first_name == "Ana"  # a stranger typing her address changes nothing
        assert "confirmed_at" not in ana.consent["courses"][SPINE]
        await confirm_newest(site, "ana@example.com")
        assert await enrollments(site, "ana@example.com") == {
            "sourdough": EnrollmentStatus.ACTIVE,
            SPINE: EnrollmentStatus.ACTIVE,
        }
        ana = await site.subscriber("ana@example.com")
        assert ana is not None
        records = ana.consent["courses"]
        assert records["sourdough"]["text"] == BREAD_CONSENT
        assert records[SPINE]["text"] == CONSENT_TEXT
        assert records["sourdough"]["confirmed_at"]
        assert records[SPINE]["confirmed_at"]

        # Her first spine lesson: its List-Unsubscribe leaves the spine course only.
        await site.stack.run()
        spine_lesson = site.stack.received("ana@example.com")[-1]
        assert spine_lesson["From"].addresses[0].display_name == "Spine Health Notes"
        header = spine_lesson["List-Unsubscribe"]
        found = re.search(re.escape(BASE) + r"(/unsubscribe/[^>]+)>", header)
        assert found is not None
        page = await site.client.get(found.group(1))
        assert "Leave Leg weakness after microdiscectomy" in page.text
        assert "Any other course you take goes on." in page.text
        left = await site.client.post(found.group(1), data=ONE_CLICK, follow_redirects=False)
        assert left.status_code == 200
        assert "You have left Leg weakness after microdiscectomy" in left.text

        assert await enrollments(site, "ana@example.com") == {
            "sourdough": EnrollmentStatus.ACTIVE,
            SPINE: EnrollmentStatus.LEFT,
        }
        ana = await site.subscriber("ana@example.com")
        assert ana is not None
        assert ana.status == SubscriberStatus.CONFIRMED

        # The sourdough lessons go on; no further spine lesson comes.
        before = len(site.stack.received("ana@example.com"))
        await site.stack.run_for(timedelta(days=8))
        later = site.stack.received("ana@example.com")[before:]
        assert [message["Subject"] for message in later] == [
            "Feeding the starter",
            "Your first loaf",
        ]

        # Signing up again brings the course back, through its confirmation email.
        await site.signup("ana@example.com", course=SPINE)
        await site.stack.run()
        await confirm_newest(site, "ana@example.com")
        assert (await enrollments(site, "ana@example.com"))[SPINE] == EnrollmentStatus.ACTIVE

    with_site(settings, tmp_path, smtp_server, scenario)


def test_the_preferences_page_pauses_and_leaves_each_course_and_everything(
    settings, tmp_path, smtp_server
):
    async def scenario(site: Site) -> None:
        bread = await with_sourdough(site)
        ana = await site.stack.subscribe("ana@example.com", sequence_id=site.sequence_id)
        async with site.stack.sessions.begin() as session:
            session.add(
                Enrollment(
                    subscriber_id=ana,
                    sequence_id=bread,
                    status=EnrollmentStatus.ACTIVE,
                    last_sent_at=site.stack.clock.now(),
                    next_check_at=site.stack.clock.now(),
                    enrolled_at=site.stack.clock.now(),
                )
            )
        _, preferences = site.personal_paths(ana)

        page = await site.client.get(preferences)
        assert "Leg weakness after microdiscectomy" in page.text
        assert "Sourdough from scratch" in page.text
        assert page.text.count('value="leave-course"') == 2
        assert 'value="leave-all"' in page.text

        async def press(action: str, course: str | None = None) -> str:
            shown = await site.client.get(preferences)
            data = {"csrf": csrf_of(shown), "action": action}
            if course:
                data["course"] = course
            answer = await site.client.post(preferences, data=data)
            assert answer.status_code == 200, answer.text
            return answer.text

        assert "“Sourdough from scratch” is paused" in await press("pause", "sourdough")
        assert await enrollments(site, "ana@example.com") == {
            SPINE: EnrollmentStatus.ACTIVE,
            "sourdough": EnrollmentStatus.STOPPED,
        }
        assert "is running again" in await press("resume", "sourdough")
        assert "Your other courses go on" in await press("leave-course", SPINE)
        assert await enrollments(site, "ana@example.com") == {
            SPINE: EnrollmentStatus.LEFT,
            "sourdough": EnrollmentStatus.ACTIVE,
        }
        # Resuming everything does not bring back a course she left.
        await press("resume")
        assert (await enrollments(site, "ana@example.com"))[SPINE] == EnrollmentStatus.LEFT

        # A course that is not hers, or not a course at all, changes nothing.
        shown = await site.client.get(preferences)
        for course in ("rye", "../x", ""):
            answer = await site.client.post(
                preferences,
                data={"csrf": csrf_of(shown), "action": "leave-course", "course": course},
            )
            assert answer.status_code == 400, course

        assert "You have left every course" in await press("leave-all")
        subscriber = await site.stack.subscriber(ana)
        assert subscriber.status == SubscriberStatus.UNSUBSCRIBED

    with_site(settings, tmp_path, smtp_server, scenario)


def test_a_form_made_before_the_consent_sentence_changed_records_the_words_it_showed(
    settings, tmp_path, smtp_server
):
    async def scenario(site: Site) -> None:
        await with_sourdough(site)
        old_page = await site.client.get("/c/sourdough")
        old_version = SOURDOUGH.identity.consent_version
        assert f'value="{old_version}"' in old_page.text

        reworded = replace(
            SOURDOUGH,
            identity=replace(
                SOURDOUGH.identity,
                consent_text="Send me the sourdough lessons.",
                consent_version=consent_version("Send me the sourdough lessons."),
            ),
        )
        await site.stack.queue(reworded)
        site_courses_expire(site)

        new_page = await site.client.get("/c/sourdough")
        assert "Send me the sourdough lessons." in new_page.text
        await site.signup("old@example.com", course="sourdough", consent_version=old_version)
        await site.signup("new@example.com", course="sourdough")
        await site.signup("odd@example.com", course="sourdough", consent_version="2026-01-1")

        old = await site.subscriber("old@example.com")
        new = await site.subscriber("new@example.com")
        odd = await site.subscriber("odd@example.com")
        assert old is not None
        assert new is not None
        assert odd is not None
        assert (old.consent["text"], old.consent["version"]) == (BREAD_CONSENT, old_version)
        assert new.consent["text"] == "Send me the sourdough lessons."
        # A version this course never had: the sentence in force is recorded.
        assert odd.consent["text"] == "Send me the sourdough lessons."

    with_site(settings, tmp_path, smtp_server, scenario)


def site_courses_expire(site: Site) -> None:
    """Let the web forget the live courses it keeps for a few seconds."""
    for route in site.app.routes:
        pages = getattr(getattr(route, "endpoint", None), "__self__", None)
        if pages is not None and hasattr(pages, "_courses_read_at"):
            pages._courses_read_at = None
