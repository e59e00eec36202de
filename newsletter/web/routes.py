"""The pages: signup, confirm, unsubscribe, preferences. Each handler reads the clock once,
parses its input (forms.py), calls the signup service in one transaction, renders a page."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
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
from newsletter.db import queries
from newsletter.db.models import Subscriber, SubscriberStatus
from newsletter.db.session import read_only, take_write_lock
from newsletter.logs import log_event
from newsletter.tokens import LinkMaker, Purpose, TokenExpired, TokenInvalid
from newsletter.web import forms
from newsletter.web.security import MAX_BODY_BYTES, CsrfGuard

log = logging.getLogger(__name__)

#: The signup form posts this; the form snippet posts "snippet" (recorded with consent).
SIGNUP_FORM = "signup-page"


@dataclass(frozen=True, slots=True)
class Course:
    sequence_id: int
    title: str
    description: str


#: Seconds a web process keeps the course it signs people up for before reading it again.
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
        self._course: Course | None = None
        self._course_read_at: float | None = None
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
            Route("/", self.signup_page, methods=["GET"]),
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

    def render(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("site_name", self.settings.sender.name)
        html = self.env.get_template(template).render(**context)
        return HTMLResponse(html, status_code=status)

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

    async def course(self, session: AsyncSession) -> Course | None:
        """The course this site signs people up for. Kept for COURSE_CACHE_S: it changes
        only when a course is queued, paused or archived, and reading it on every request
        was a tenth of a signup's cost (docs/benchmarks.md)."""
        now = time.monotonic()
        if self._course_read_at is not None and now - self._course_read_at < COURSE_CACHE_S:
            return self._course
        sequence = await signup.course_sequence(session, self.sequence_slug)
        version = await queries.current_version(session, sequence.id) if sequence else None
        self._course = (
            Course(sequence.id, version.title, version.description)
            if sequence is not None and version is not None
            else None
        )
        self._course_read_at = now
        return self._course

    # --- signing up ----------------------------------------------------------------------

    async def signup_page(self, request: Request) -> Response:
        async with self.readers() as session:
            course = await self.course(session)
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
            consent_text=signup.CONSENT_TEXT,
            consent_version=signup.CONSENT_VERSION,
            default_timezone=self.settings.schedule.timezone,
        )

    async def subscribe(self, request: Request) -> Response:
        """Open to other sites' forms (the snippet), so no CSRF token: what a forged post
        can do, anyone can do by typing an address here; the limits below are the defence."""
        now = self.clock.now()
        parsed = forms.parse_signup(await read_form(request))
        if isinstance(parsed, forms.Trapped):
            log_event(log, logging.INFO, "Honeypot filled; pretended success.", "signup_trapped")
            return see_check_your_email()
        # Read before the write lock: "signups closed" must not wait for it.
        async with self.readers() as session:
            course = await self.course(session)
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
        try:
            return self.links.tokens.read(purpose, token, now)
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
        subscriber_id = self.read_token(Purpose.CONFIRM, token, now)
        if isinstance(subscriber_id, Response):
            return subscriber_id
        async with self.readers() as session:
            subscriber = await session.get(Subscriber, subscriber_id)
            course = await self.course(session)
        if subscriber is None:
            return self.unknown_subscriber()
        if subscriber.status == SubscriberStatus.CONFIRMED:
            return self.render("confirmed.html", course=course, already=True)
        if subscriber.status != SubscriberStatus.PENDING:
            return self.left_page()
        return self.render(
            "confirm.html",
            **self.confirm_form(token, subscriber_id, now, course=course, notice=""),
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
        subscriber_id = self.read_token(Purpose.CONFIRM, token, now)
        if isinstance(subscriber_id, Response):
            return subscriber_id
        form = await read_form(request)
        if not self.csrf.is_valid(form.get("csrf", ""), f"confirm:{subscriber_id}", now):
            async with self.readers() as session:
                course = await self.course(session)
            return self.render(
                "confirm.html",
                403,
                **self.confirm_form(token, subscriber_id, now, course=course, notice=STALE_FORM),
            )
        async with self.writing() as session:
            course = await self.course(session)
            outcome = await signup.confirm(
                session,
                subscriber_id,
                self.visitor(request),
                fallback_sequence_id=course.sequence_id if course else None,
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
        subscriber_id = self.read_token(Purpose.UNSUBSCRIBE, token, now)
        if isinstance(subscriber_id, Response):
            return subscriber_id
        return self.render("unsubscribe.html", token=token)

    async def unsubscribe(self, request: Request) -> Response:
        """RFC 8058 one-click: a mailbox provider POSTs `List-Unsubscribe=One-Click` with no
        cookie, no CSRF token and no redirects followed, so none is asked for: the signed
        token in the URL is the authority. Repeating it is harmless and answers 200."""
        now = self.clock.now()
        subscriber_id = self.read_token(Purpose.UNSUBSCRIBE, request.path_params["token"], now)
        if isinstance(subscriber_id, Response):
            return subscriber_id
        async with self.writing() as session:
            await signup.leave(session, subscriber_id, now)
        log_event(log, logging.INFO, "Unsubscribed via the web.", "unsubscribed")
        return self.render("unsubscribed.html")

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
            state = await signup.course_state(session, subscriber_id)
        return self.render(
            "preferences.html",
            status,
            token=token,
            csrf=self.csrf.issue(f"preferences:{subscriber_id}", now),
            subscriber=subscriber,
            subscribed=subscriber.status == SubscriberStatus.CONFIRMED,
            state=state,
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
                    await signup.pause_course(session, subscriber_id)
                    notice = "Your course is paused. No more lessons until you resume it."
                case forms.Action.RESUME:
                    await signup.resume_course(session, subscriber_id, now)
                    notice = "Your course is running again. The next lesson follows soon."
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
