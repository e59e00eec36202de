"""The pages: signup, confirm, unsubscribe, preferences. Each handler reads the clock once,
parses its input (forms.py), calls the signup service in one transaction, renders a page."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from newsletter import signup
from newsletter.clock import Clock
from newsletter.config import Settings
from newsletter.db.models import Subscriber, SubscriberStatus
from newsletter.db.session import read_only, take_write_lock
from newsletter.logs import log_event
from newsletter.tokens import LinkMaker, LinkTarget, Purpose, TokenExpired, TokenInvalid
from newsletter.web import forms
from newsletter.web.security import MAX_BODY_BYTES, CsrfGuard

log = logging.getLogger(__name__)

#: The signup form posts this; the form snippet posts "snippet" (recorded with consent).
SIGNUP_FORM = "signup-page"

Course = signup.SignupCourse

#: Seconds a web process keeps the live courses before reading them again.
COURSE_CACHE_S = 5.0
#: Retry-After, in seconds, on a 429 (the signup limit counts the last hour), on "signups
#: are closed" (nobody knows when a course opens: look again in an hour) and on "busy".
RETRY_LIMIT_S = int(signup.SIGNUP_WINDOW.total_seconds())
RETRY_CLOSED_S = 3600
RETRY_BUSY_S = 10

_LOCK_TIMEOUT = text("SELECT set_config('lock_timeout', :ms, true)")


class DatabaseBusy(Exception):
    """The database's write lock did not come within [web] database_wait_s."""


class Pages:
    """The handlers, sharing the app's settings, database, clock and signing keys."""

    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        links: LinkMaker,
        *,
        secret: str,
        templates_dir: Path,
        sequence_slug: str | None,
        store_ip: bool,
        writes: async_sessionmaker[AsyncSession] | None = None,
    ) -> None:
        self.settings = settings
        self._courses: list[Course] = []
        self._courses_read_at: float | None = None
        #: For pages that only read: they never wait for, nor hold up, a write.
        self.readers = read_only(sessions)
        self.writes = writes or sessions
        # SQLite takes one writer at a time: this process's writes queue here, in order,
        # and only the one at the front asks SQLite for the lock (take_write_lock), rather
        # than all of them racing for it. PostgreSQL runs them side by side.
        self.dialect = sessions.kw["bind"].dialect.name
        self._write_turn = asyncio.Lock() if self.dialect == "sqlite" else None
        self.clock = clock
        self.links = links
        self.secret = secret
        self.csrf = CsrfGuard(secret)
        self.sequence_slug = sequence_slug
        self.store_ip = store_ip
        self.env = Environment(
            loader=FileSystemLoader(templates_dir),
            autoescape=select_autoescape(["html"]),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def routes(self) -> list[Route]:
        return [
            Route("/", self.home, methods=["GET"]),
            Route("/c/{slug}", self.course_page, methods=["GET"]),
            Route("/subscribe", self.subscribe, methods=["POST"]),
            Route("/check-your-email", self.check_your_email, methods=["GET"]),
            Route("/confirm/{token}", self.confirm_page, methods=["GET"]),
            Route("/confirm/{token}", self.confirm, methods=["POST"]),
            Route("/unsubscribe/{token}", self.unsubscribe_page, methods=["GET"]),
            Route("/unsubscribe/{token}", self.unsubscribe, methods=["POST"]),
            Route("/preferences/{token}", self.preferences_page, methods=["GET"]),
            Route("/preferences/{token}", self.preferences, methods=["POST"]),
        ]

    # --- rendering -----------------------------------------------------------------------

    def render(
        self, template: str, status: int = 200, *, course: Course | None = None, **context: Any
    ) -> HTMLResponse:
        """A page; one about a course speaks as the course (its sender's name, language and
        footer note), the others as the site (config's sender)."""
        identity = course.identity if course is not None else None
        context.setdefault("site_name", (identity and identity.sender_name) or self.sender_name)
        context.setdefault("language", identity.language if identity else "en")
        context.setdefault("footer_note", identity.footer_paragraphs if identity else [])
        html = self.env.get_template(template).render(course=course, **context)
        return HTMLResponse(html, status_code=status)

    @property
    def sender_name(self) -> str:
        return self.settings.sender.name

    def message(
        self,
        status: int,
        title: str,
        *paragraphs: str,
        signup_link: bool = False,
    ) -> HTMLResponse:
        """A page that explains what happened and, where it helps, where to go next."""
        return self.render(
            "message.html", status, title=title, paragraphs=paragraphs, signup_link=signup_link
        )

    def visitor(self, request: Request) -> signup.Visitor:
        ip = request.client.host if request.client else None
        return signup.Visitor(
            ip=ip if self.store_ip else None, user_agent=request.headers.get("user-agent", "")
        )

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[AsyncSession]:
        """A write transaction, taking this process's turn first on SQLite, then the write
        lock as soon as another process lets go of it. Both together wait at most
        [web] database_wait_s; then DatabaseBusy or the database's own error (a 503 page,
        app.database_error) and nothing is written. On PostgreSQL the same wait bounds
        every lock the transaction waits for."""
        wait_s = self.settings.web.database_wait_s
        deadline = time.monotonic() + wait_s
        async with self._turn(wait_s), self.writes() as session:
            await take_write_lock(session, timeout_s=max(0.0, deadline - time.monotonic()))
            try:
                if self.dialect == "postgresql":
                    await session.execute(_LOCK_TIMEOUT, {"ms": str(int(wait_s * 1000))})
                yield session
            except BaseException:
                await session.rollback()
                raise
            await session.commit()

    @asynccontextmanager
    async def _turn(self, wait_s: float) -> AsyncIterator[None]:
        """This process's turn to write on SQLite, within `wait_s`."""
        turn = self._write_turn
        if turn is None:
            yield
            return
        if turn.locked():
            try:
                async with asyncio.timeout(wait_s):
                    await turn.acquire()
            except TimeoutError:
                raise DatabaseBusy(f"no turn to write within {wait_s:g} s") from None
        else:
            await turn.acquire()
        try:
            yield
        finally:
            turn.release()

    async def courses(self, session: AsyncSession) -> list[Course]:
        """The live courses. Kept for COURSE_CACHE_S: they change only when a course is
        queued, paused or archived, and reading them on every request was a tenth of a
        signup's cost (docs/benchmarks.md)."""
        now = time.monotonic()
        if self._courses_read_at is None or now - self._courses_read_at >= COURSE_CACHE_S:
            self._courses = await signup.live_courses(session)
            self._courses_read_at = now
        return self._courses

    async def course(self, session: AsyncSession, slug: str = "") -> Course | None:
        """The live course of that slug; "" for the site's own: the one named by --course,
        else the oldest live one."""
        courses = await self.courses(session)
        wanted = slug or self.sequence_slug
        if not wanted:
            return courses[0] if courses else None
        return next((course for course in courses if course.slug == wanted), None)

    async def course_of_link(self, session: AsyncSession, sequence_id: int | None) -> Course | None:
        """The course a link names, live or not; for links that name none, the site's own."""
        if sequence_id is None:
            return await self.course(session)
        for course in await self.courses(session):
            if course.sequence_id == sequence_id:
                return course
        return await signup.signup_course(session, sequence_id)

    def no_such_course(self) -> HTMLResponse:
        return self.message(
            404,
            "There is no course here",
            "This address names no course that is open for signups. It may have closed, or "
            "the address may be mistyped.",
            signup_link=True,
        )

    # --- signing up ----------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        """The site's course (--course) or its only live one; a list when there are more."""
        async with self.readers() as session:
            courses = await self.courses(session)
            course = await self.course(session)
        if self.sequence_slug or len(courses) <= 1:
            return self.signup_form(course, 200, values={}, errors={})
        return self.render("courses.html", courses=courses)

    async def course_page(self, request: Request) -> Response:
        slug = forms.parse_course(request.path_params["slug"])
        async with self.readers() as session:
            course = await self.course(session, slug) if slug else None
        if course is None:
            return self.no_such_course()
        return self.signup_form(course, 200, values={}, errors={})

    def signup_form(
        self,
        course: Course | None,
        status: int,
        *,
        values: dict[str, str],
        errors: dict[str, str],
        notice: str = "",
    ) -> HTMLResponse:
        if course is None:
            closed = self.message(
                503,
                "Signups are closed for now",
                "There is no course open for signups at the moment. Please come back later.",
            )
            closed.headers["retry-after"] = str(RETRY_CLOSED_S)
            return closed
        return self.render(
            "signup.html",
            status,
            course=course,
            values=values,
            errors=errors,
            notice=notice,
            form_name=SIGNUP_FORM,
            honeypot=forms.HONEYPOT,
            consent_text=course.identity.consent_text,
            consent_version=course.identity.consent_version,
            default_timezone=self.settings.schedule.timezone,
        )

    async def subscribe(self, request: Request) -> Response:
        """Open to other sites' forms (the snippet), so no CSRF token: what a forged post
        can do, anyone can do by typing an address here; the limits below are the defence."""
        now = self.clock.now()
        form = await read_form(request)
        parsed = forms.parse_signup(form)
        if isinstance(parsed, forms.Trapped):
            log_event(log, logging.INFO, "Honeypot filled; pretended success.", "signup_trapped")
            return see_check_your_email()
        asked = form.get("course", "").strip()
        slug = forms.parse_course(asked[: forms.MAX_FIELD_LENGTH]) or ""
        # Read before the write lock: "signups closed" must not wait for it.
        async with self.readers() as session:
            course = await self.course(session, slug) if slug or not asked else None
        if course is None and asked:
            return self.no_such_course()
        if isinstance(parsed, forms.Invalid):
            return self.signup_form(course, 400, values=parsed.values, errors=parsed.errors)
        if course is None:
            return self.signup_form(None, 503, values={}, errors={})
        client = signup.client_key(self.secret, request.client.host if request.client else "")
        visitor = self.visitor(request)
        limits = self.settings.signup
        async with self.writing() as session:
            if not await signup.take_signup_slot(
                session, client, now, limits.signups_per_ip_per_hour
            ):
                limited = self.signup_form(
                    course,
                    429,
                    values={"email": parsed.email, "first_name": parsed.first_name},
                    errors={},
                    notice=(
                        "Many signups have come from your network in the last hour, so we "
                        "have paused signups from it for a while. Please try again in an hour."
                    ),
                )
                limited.headers["retry-after"] = str(RETRY_LIMIT_S)
                return limited
            outcome = await signup.subscribe(
                session,
                parsed,
                visitor,
                sequence_id=course.sequence_id,
                sender_domain=self.settings.sender.domain,
                now=now,
                confirmation_interval=timedelta(seconds=limits.confirmation_interval_s),
                confirmations_per_day=limits.confirmations_per_address_per_day,
                course=course,
            )
        log_event(log, logging.INFO, f"Signup: {outcome}.", "signup")
        return see_check_your_email()

    async def check_your_email(self, request: Request) -> Response:
        return self.render("check_email.html", how_often=self.how_often)

    @property
    def how_often(self) -> str:
        """How many confirmation emails one address may get, in words."""
        limits = self.settings.signup
        per_day = f"{limits.confirmations_per_address_per_day} a day"
        minutes = round(limits.confirmation_interval_s / 60)
        if minutes < 1:
            return f"at most {per_day} to one address"
        every = "every minute" if minutes == 1 else f"every {minutes} minutes"
        return f"at most one confirmation email {every}, and {per_day}"

    # --- confirming ----------------------------------------------------------------------

    def read_token(self, purpose: Purpose, token: str, now: datetime) -> int | HTMLResponse:
        target = self.read_target(purpose, token, now)
        return target if isinstance(target, HTMLResponse) else target.subscriber_id

    def read_target(self, purpose: Purpose, token: str, now: datetime) -> LinkTarget | HTMLResponse:
        try:
            return self.links.tokens.read_target(purpose, token, now)
        except TokenExpired:
            return self.message(
                410,
                "This confirmation link has expired",
                "Confirmation links work for 7 days, and this one is older. Nothing was "
                "signed up. If you still want the course, sign up again and we will send "
                "you a fresh link.",
                signup_link=True,
            )
        except TokenInvalid:
            return self.message(
                400,
                "This link is not complete",
                "Part of the link seems to be missing or changed. Please open it again from "
                "the email. If your email program split it over two lines, copy the whole "
                "link into the address bar of your browser.",
            )

    def unknown_subscriber(self) -> HTMLResponse:
        return self.message(
            404,
            "We hold nothing for this link any more",
            "The address this link was for has been deleted: by its owner, or because the "
            "signup was not confirmed within 7 days. No email will be sent to it.",
            signup_link=True,
        )

    def confirm_form(self, token: str, subscriber_id: int, now: datetime, **extra: Any) -> Any:
        return {
            "token": token,
            "csrf": self.csrf.issue(f"confirm:{subscriber_id}", now),
            **extra,
        }

    async def confirm_page(self, request: Request) -> Response:
        """Shows a button and changes nothing: mail scanners open every link in an email,
        and opening must not sign anyone up."""
        now = self.clock.now()
        token = request.path_params["token"]
        target = self.read_target(Purpose.CONFIRM, token, now)
        if isinstance(target, Response):
            return target
        async with self.readers() as session:
            subscriber = await session.get(Subscriber, target.subscriber_id)
            course = await self.course_of_link(session, target.sequence_id)
            on_course = target.sequence_id is not None and any(
                item.sequence_id == target.sequence_id and item.state != signup.CourseState.LEFT
                for item in await signup.courses_of(session, target.subscriber_id)
            )
        if subscriber is None:
            return self.unknown_subscriber()
        confirmed = subscriber.status == SubscriberStatus.CONFIRMED
        if confirmed and (target.sequence_id is None or on_course):
            return self.render("confirmed.html", course=course, already=True)
        if not confirmed and subscriber.status != SubscriberStatus.PENDING:
            return self.left_page()
        return self.render(
            "confirm.html",
            course=course,
            **self.confirm_form(token, target.subscriber_id, now, notice=""),
        )

    def left_page(self) -> HTMLResponse:
        return self.message(
            409,
            "This address is no longer subscribed",
            "It was unsubscribed after this link was sent, so we did not sign it up again. "
            "If you want the course after all, sign up again and confirm from the new email.",
            signup_link=True,
        )

    async def confirm(self, request: Request) -> Response:
        now = self.clock.now()
        token = request.path_params["token"]
        target = self.read_target(Purpose.CONFIRM, token, now)
        if isinstance(target, Response):
            return target
        subscriber_id = target.subscriber_id
        form = await read_form(request)
        if not self.csrf.is_valid(form.get("csrf", ""), f"confirm:{subscriber_id}", now):
            async with self.readers() as session:
                course = await self.course_of_link(session, target.sequence_id)
            return self.render(
                "confirm.html",
                403,
                course=course,
                **self.confirm_form(token, subscriber_id, now, notice=STALE_FORM),
            )
        async with self.writing() as session:
            course = await self.course_of_link(session, target.sequence_id)
            fallback = await self.course(session)
            outcome = await signup.confirm(
                session,
                subscriber_id,
                self.visitor(request),
                sequence_id=target.sequence_id,
                fallback_sequence_id=fallback.sequence_id if fallback else None,
                now=now,
            )
        log_event(log, logging.INFO, f"Confirm: {outcome}.", "confirm")
        match outcome:
            case signup.ConfirmOutcome.UNKNOWN:
                return self.unknown_subscriber()
            case signup.ConfirmOutcome.LEFT:
                return self.left_page()
        return self.render(
            "confirmed.html",
            course=course,
            already=outcome == signup.ConfirmOutcome.ALREADY_CONFIRMED,
        )

    # --- leaving -------------------------------------------------------------------------

    async def unsubscribe_page(self, request: Request) -> Response:
        now = self.clock.now()
        token = request.path_params["token"]
        target = self.read_target(Purpose.UNSUBSCRIBE, token, now)
        if isinstance(target, Response):
            return target
        course = None
        if target.sequence_id is not None:
            async with self.readers() as session:
                course = await signup.signup_course(session, target.sequence_id)
        return self.render(
            "unsubscribe.html", course=course, token=token, one_course=course is not None
        )

    async def unsubscribe(self, request: Request) -> Response:
        """RFC 8058 one-click: a mailbox provider POSTs `List-Unsubscribe=One-Click` with no
        cookie, no CSRF token and no redirects followed, so none is asked for: the signed
        token in the URL is the authority. Repeating it is harmless and answers 200. A link
        from a lesson leaves that lesson's course only; one without a course, everything."""
        now = self.clock.now()
        target = self.read_target(Purpose.UNSUBSCRIBE, request.path_params["token"], now)
        if isinstance(target, Response):
            return target
        course = None
        async with self.writing() as session:
            if target.sequence_id is not None:
                course = await signup.signup_course(session, target.sequence_id)
            if course is not None:
                await signup.leave_course(session, target.subscriber_id, course.sequence_id)
            else:
                await signup.leave(session, target.subscriber_id, now)
        log_event(
            log,
            logging.INFO,
            "Left a course via the web." if course else "Unsubscribed via the web.",
            "left_course" if course else "unsubscribed",
        )
        return self.render("unsubscribed.html", course=course, one_course=course is not None)

    # --- preferences ---------------------------------------------------------------------

    async def preferences_page(self, request: Request) -> Response:
        now = self.clock.now()
        token = request.path_params["token"]
        subscriber_id = self.read_token(Purpose.PREFERENCES, token, now)
        if isinstance(subscriber_id, Response):
            return subscriber_id
        return await self.preferences_form(token, subscriber_id, now)

    async def preferences_form(
        self,
        token: str,
        subscriber_id: int,
        now: datetime,
        status: int = 200,
        *,
        notice: str = "",
        errors: dict[str, str] | None = None,
        values: dict[str, str] | None = None,
    ) -> Response:
        async with self.readers() as session:
            subscriber = await session.get(Subscriber, subscriber_id)
            if subscriber is None:
                return self.unknown_subscriber()
            courses = await signup.courses_of(session, subscriber_id)
        return self.render(
            "preferences.html",
            status,
            token=token,
            csrf=self.csrf.issue(f"preferences:{subscriber_id}", now),
            subscriber=subscriber,
            subscribed=subscriber.status == SubscriberStatus.CONFIRMED,
            courses=courses,
            notice=notice,
            errors=errors or {},
            values=values or {},
            timezones=forms.sorted_timezones(),
            default_zone=forms.DEFAULT_ZONE,
            default_timezone=self.settings.schedule.timezone,
        )

    async def preferences(self, request: Request) -> Response:
        now = self.clock.now()
        token = request.path_params["token"]
        subscriber_id = self.read_token(Purpose.PREFERENCES, token, now)
        if isinstance(subscriber_id, Response):
            return subscriber_id
        form = await read_form(request)
        if not self.csrf.is_valid(form.get("csrf", ""), f"preferences:{subscriber_id}", now):
            return await self.preferences_form(token, subscriber_id, now, 403, notice=STALE_FORM)
        parsed = forms.parse_preferences(form)
        if isinstance(parsed, forms.Invalid):
            return await self.preferences_form(
                token, subscriber_id, now, 400, errors=parsed.errors, values=parsed.values
            )
        async with self.writing() as session:
            if await session.get(Subscriber, subscriber_id) is None:
                return self.unknown_subscriber()
            course: signup.CourseOfSubscriber | None = None
            if parsed.course is not None:
                courses = await signup.courses_of(session, subscriber_id)
                course = next((c for c in courses if c.slug == parsed.course), None)
                if course is None:
                    problem = {"action": "That course is not one of yours. Nothing was changed."}
                    return await self.preferences_form(
                        token, subscriber_id, now, 400, errors=problem
                    )
            sequence_id = course.sequence_id if course else None
            named = f"“{course.title}”" if course else "Your course"
            match parsed.action:
                case forms.Action.EXPORT:
                    data = await signup.export_data(session, subscriber_id, now)
                    return Response(
                        json.dumps(data, indent=2, ensure_ascii=False),
                        media_type="application/json",
                        headers={"content-disposition": 'attachment; filename="my-data.json"'},
                    )
                case forms.Action.DELETE:
                    await signup.delete_subscriber(session, subscriber_id)
                    notice = ""
                case forms.Action.PAUSE:
                    await signup.pause_course(session, subscriber_id, sequence_id)
                    notice = f"{named} is paused. No more lessons until you resume it."
                case forms.Action.RESUME:
                    await signup.resume_course(session, subscriber_id, now, sequence_id)
                    notice = f"{named} is running again. The next lesson follows soon."
                case forms.Action.LEAVE_COURSE:
                    assert sequence_id is not None  # parse_preferences asks for the course
                    await signup.leave_course(session, subscriber_id, sequence_id)
                    notice = f"You have left {named}. Your other courses go on."
                case forms.Action.LEAVE_ALL:
                    await signup.leave(session, subscriber_id, now)
                    notice = "You have left every course. We will send you no more emails."
                case forms.Action.TIMEZONE:
                    await signup.set_timezone(session, subscriber_id, parsed.timezone, now)
                    zone = parsed.timezone or self.settings.schedule.timezone
                    notice = f"Saved. Lessons now arrive by the clock of {zone}."
        if parsed.action == forms.Action.DELETE:
            log_event(log, logging.INFO, "Subscriber deleted themselves.", "self_deleted")
            return self.render("deleted.html")
        return await self.preferences_form(token, subscriber_id, now, notice=notice)


STALE_FORM = (
    "For your safety, this page's buttons stop working after 12 hours, and this one had "
    "been open longer (or came from somewhere else). Nothing was changed. Please press the "
    "button again."
)


async def read_form(request: Request) -> dict[str, str]:
    """The form's text fields; file uploads are refused, and an unreadable body is a 400
    (raised by Starlette, rendered by the app's handler)."""
    data = await request.form(max_files=0, max_fields=20, max_part_size=MAX_BODY_BYTES)
    return {name: value for name, value in data.items() if isinstance(value, str)}


def see_check_your_email() -> Response:
    # 303: the browser follows with a GET, so reloading the next page posts nothing again.
    return RedirectResponse("/check-your-email", status_code=303)
