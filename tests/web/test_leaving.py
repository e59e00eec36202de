"""Leaving in one click, and the preferences page: pause, time zone, data, delete."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy import func, select

from newsletter.db.models import (
    Delivery,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Subscriber,
    SubscriberStatus,
)
from newsletter.db.web_models import SignupAttempt
from newsletter.signup import PENDING_MAX_AGE, purge_stale_signups
from tests.web.site import CONSENT_TEXT, Site, csrf_of, with_site

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def test_one_click_unsubscribe_works_twice_and_stops_a_lesson_already_queued(
    settings, tmp_path, smtp_server
):
    async def scenario(site: Site) -> None:
        ana = await site.stack.subscribe("ana@example.com", sequence_id=site.sequence_id)
        await site.stack.worker.plan_once(site.stack.clock.now())  # lesson 1 is queued
        unsubscribe, _ = site.personal_paths(ana)

        # As a mailbox provider sends it: no cookie, no CSRF token, redirects not followed.
        first = await site.client.post(unsubscribe, data=ONE_CLICK, follow_redirects=False)
        assert first.status_code == 200
        assert "You are unsubscribed" in first.text
        again = await site.client.post(unsubscribe, data=ONE_CLICK, follow_redirects=False)
        assert again.status_code == 200

        report = await site.stack.run()
        assert report["cancelled"] == 1
        assert site.stack.received("ana@example.com") == []
        subscriber = await site.stack.subscriber(ana)
        assert subscriber.status == SubscriberStatus.UNSUBSCRIBED
        assert subscriber.unsubscribed_at == site.stack.clock.now()

    with_site(settings, tmp_path, smtp_server, scenario)


def test_the_unsubscribe_link_shows_one_button_and_opening_it_changes_nothing(
    settings, tmp_path, smtp_server
):
    async def scenario(site: Site) -> None:
        ana = await site.stack.subscribe("ana@example.com", sequence_id=site.sequence_id)
        unsubscribe, _ = site.personal_paths(ana)
        site.stack.clock.advance(timedelta(days=3650))  # unsubscribe links never expire
        page = await site.client.get(unsubscribe)
        assert page.status_code == 200
        assert page.text.count("<button") == 1
        assert f'action="{unsubscribe}"' in page.text
        assert (await site.stack.subscriber(ana)).status == SubscriberStatus.CONFIRMED
        # The button posts the one-click body, without any other field.
        assert (await site.client.post(unsubscribe, data=ONE_CLICK)).status_code == 200
        assert (await site.stack.subscriber(ana)).status == SubscriberStatus.UNSUBSCRIBED

    with_site(settings, tmp_path, smtp_server, scenario)


async def press(site: Site, path: str, action: str, **fields: str):  # type: ignore[no-untyped-def]
    page = await site.client.get(path)
    return await site.client.post(path, data={"csrf": csrf_of(page), "action": action, **fields})


async def enrollment_status(site: Site) -> list[str]:
    async with site.stack.sessions() as session:
        return list(await session.scalars(select(Enrollment.status)))


def test_pausing_holds_even_a_queued_lesson_and_resuming_sends_it(settings, tmp_path, smtp_server):
    async def scenario(site: Site) -> None:
        ana = await site.stack.subscribe("ana@example.com", sequence_id=site.sequence_id)
        await site.stack.run()  # lesson 1
        _, preferences = site.personal_paths(ana)
        site.stack.clock.advance(timedelta(days=2))
        await site.stack.worker.plan_once(site.stack.clock.now())  # lesson 2 is queued

        paused = await press(site, preferences, "pause")
        assert paused.status_code == 200
        assert "paused" in paused.text
        assert "Resume the course" in paused.text
        assert await enrollment_status(site) == [EnrollmentStatus.STOPPED]
        site.stack.clock.advance(timedelta(days=5))
        await site.stack.run()
        assert len(site.stack.received("ana@example.com")) == 1

        resumed = await press(site, preferences, "resume")
        assert "Pause the course" in resumed.text
        assert await enrollment_status(site) == [EnrollmentStatus.ACTIVE]
        await site.stack.run()
        received = site.stack.received("ana@example.com")
        assert len(received) == 2
        assert received[1]["Subject"] == "Where sciatica often starts"

    with_site(settings, tmp_path, smtp_server, scenario)


def test_the_time_zone_can_be_changed_to_a_known_zone_only(settings, tmp_path, smtp_server):
    async def scenario(site: Site) -> None:
        ana = await site.stack.subscribe("ana@example.com", sequence_id=site.sequence_id)
        _, preferences = site.personal_paths(ana)

        saved = await press(site, preferences, "timezone", timezone="America/New_York")
        assert saved.status_code == 200
        assert "America/New_York" in saved.text
        assert (await site.stack.subscriber(ana)).timezone == "America/New_York"

        for bad in ("Mars/Olympus", "../../etc/passwd", "", "utc+2"):
            refused = await press(site, preferences, "timezone", timezone=bad)
            assert refused.status_code == 400
            assert "choose your time zone from the list" in refused.text
        assert (await site.stack.subscriber(ana)).timezone == "America/New_York"

        back = await press(site, preferences, "timezone", timezone="default")
        assert back.status_code == 200
        assert (await site.stack.subscriber(ana)).timezone is None

        unknown = await press(site, preferences, "explode")
        assert unknown.status_code == 400

    with_site(settings, tmp_path, smtp_server, scenario)


def test_a_subscriber_downloads_their_data_with_the_consent_record(settings, tmp_path, smtp_server):
    async def scenario(site: Site) -> None:
        await site.signup("ana@example.com", first_name="Ana")
        await site.stack.run()
        link = site.confirm_link("ana@example.com")
        await site.client.post(link, data={"csrf": csrf_of(await site.client.get(link))})
        await site.stack.run()
        ana = await site.subscriber("ana@example.com")
        assert ana is not None
        _, preferences = site.personal_paths(ana.id)

        download = await press(site, preferences, "export")
        assert download.status_code == 200
        assert download.headers["content-type"] == "application/json"
        assert "attachment" in download.headers["content-disposition"]
        data = json.loads(download.text)
        assert data["subscriber"]["email"] == "ana@example.com"
        assert data["subscriber"]["first_name"] == "Ana"
        assert data["consent"]["text"] == CONSENT_TEXT
        assert data["consent"]["ip"] == "203.0.113.5"
        assert data["consent"]["confirmed_at"]
        assert [e["kind"] for e in data["emails"]] == ["confirmation", "lesson"]
        assert data["courses"][0]["course"] == "leg-weakness-after-microdiscectomy"

    with_site(settings, tmp_path, smtp_server, scenario)


def test_delete_me_removes_the_person_and_their_history(settings, tmp_path, smtp_server):
    async def scenario(site: Site) -> None:
        ana = await site.stack.subscribe("ana@example.com", sequence_id=site.sequence_id)
        await site.stack.run()
        _, preferences = site.personal_paths(ana)

        deleted = await press(site, preferences, "delete")
        assert deleted.status_code == 200
        assert "deleted" in deleted.text
        async with site.stack.sessions() as session:
            assert await session.get(Subscriber, ana) is None
            assert await session.scalar(select(func.count()).select_from(Delivery)) == 0
        assert (await site.client.get(preferences)).status_code == 404
        site.stack.clock.advance(timedelta(days=10))
        await site.stack.run()
        assert len(site.stack.received("ana@example.com")) == 1

    with_site(settings, tmp_path, smtp_server, scenario)


def test_pending_signups_never_confirmed_are_purged_after_seven_days(
    settings, tmp_path, smtp_server
):
    async def scenario(site: Site) -> None:
        await site.signup("old@example.com")
        await site.stack.subscribe("kept@example.com", sequence_id=site.sequence_id)
        await site.stack.run()
        site.stack.clock.advance(PENDING_MAX_AGE - timedelta(minutes=30))
        await site.signup("recent@example.com")
        site.stack.clock.advance(timedelta(minutes=30, seconds=1))

        async with site.stack.sessions.begin() as session:
            purged = await purge_stale_signups(session, site.stack.clock.now())
        assert purged == 1
        assert await site.subscriber("old@example.com") is None
        assert await site.subscriber("recent@example.com") is not None
        assert await site.subscriber("kept@example.com") is not None
        async with site.stack.sessions() as session:
            # The old signup's attempt row is gone; the recent one still counts.
            assert await session.scalar(select(func.count()).select_from(SignupAttempt)) == 1
            statuses = set(await session.scalars(select(Delivery.status)))
            assert DeliveryStatus.SENT in statuses  # kept@'s lesson 1 stays

    with_site(settings, tmp_path, smtp_server, scenario)
