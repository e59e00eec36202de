"""A real browser (Chromium, driven by Playwright) signs up, confirms from the email,
receives lesson 1, and leaves in one click; a screenshot of each page goes to
var/screenshots/. Skips where Chromium is missing, except in CI (`CI` set), where it fails."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket

import pytest

from newsletter.db.models import SubscriberStatus
from newsletter.web.app import web_server
from tests.conftest import REPO
from tests.web.site import BASE, Site, with_site

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = REPO / "var" / "screenshots"


def _listening_socket() -> socket.socket:
    """Listening before the server starts: the browser's first connection waits in the
    backlog instead of being refused, so nothing has to wait for uvicorn to be ready."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


@pytest.fixture
def chromium() -> str:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing; .ci/run installs Debian's chromium package")
        pytest.skip("Chromium is not installed here (apt-get install chromium); CI runs this")
    return CHROMIUM


def test_a_person_signs_up_confirms_reads_lesson_one_and_leaves_in_a_browser(
    settings, tmp_path, smtp_server, chromium
):
    from playwright.async_api import async_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    async def scenario(site: Site) -> None:
        sock = _listening_socket()
        origin = f"http://127.0.0.1:{sock.getsockname()[1]}"
        server = web_server(site.app)
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=chromium)
                context = await browser.new_context(timezone_id="Asia/Tokyo")
                page = await context.new_page()

                async def shot(name: str) -> None:
                    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

                await page.goto(f"{origin}/")
                await shot("1-signup")
                await page.get_by_label("Your email address").fill("ana@example.com")
                await page.get_by_label("Your first name").fill("Ana")
                await page.get_by_role("button", name="Subscribe").click()
                await page.wait_for_url(f"{origin}/check-your-email")
                await shot("2-check-your-email")

                await site.stack.run()
                await page.goto(origin + site.confirm_link("ana@example.com"))
                await shot("3-confirm")
                ana = await site.subscriber("ana@example.com")
                assert ana is not None
                assert ana.status == SubscriberStatus.PENDING
                assert ana.timezone == "Asia/Tokyo"  # filled in by static/timezone.js
                await page.get_by_role("button", name="Yes, send me the course").click()
                await page.get_by_role("heading", name="Thank you, you are subscribed").wait_for()
                await shot("4-confirmed")

                await site.stack.run()
                lesson = site.stack.received("ana@example.com")[-1]
                text = lesson.get_body(("plain",)).get_content()
                assert "Hi Ana" in text
                # The footer offers both: leave this course, or leave everything.
                leave_course = re.search(
                    "Leave this course: " + re.escape(BASE) + r"(/unsubscribe/\S+)", text
                )
                leave_all = re.search(
                    "Leave everything: " + re.escape(BASE) + r"(/unsubscribe/\S+)", text
                )
                assert leave_course is not None
                assert leave_all is not None
                await page.goto(origin + leave_course.group(1))
                await shot("5-leave-course")
                await page.get_by_role("button", name="Leave this course").click()
                await page.get_by_role(
                    "heading", name="You have left Leg weakness after microdiscectomy"
                ).wait_for()
                ana = await site.subscriber("ana@example.com")
                assert ana is not None
                assert ana.status == SubscriberStatus.CONFIRMED  # on no course, still known

                await page.goto(origin + leave_all.group(1))
                await shot("6-unsubscribe")
                await page.get_by_role("button", name="Unsubscribe me").click()
                await page.get_by_role("heading", name="You are unsubscribed").wait_for()
                await shot("7-unsubscribed")
                ana = await site.subscriber("ana@example.com")
                assert ana is not None
                assert ana.status == SubscriberStatus.UNSUBSCRIBED
                await browser.close()
        finally:
            server.should_exit = True
            await serving
            sock.close()

    with_site(settings, tmp_path, smtp_server, scenario)
    assert len(list(SCREENSHOTS.glob("*.png"))) >= 6
