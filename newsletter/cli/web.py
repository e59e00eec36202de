"""`newsletter web` (the web app alone) and `newsletter form-snippet` (a form for other sites)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from html import escape
from typing import Annotated

import typer

from newsletter.cli.admin import database
from newsletter.cli.app import app, out, run, settings
from newsletter.cli.lifecycle import StopSignals, configure_logging, supervise
from newsletter.cli.running import build_links, serve_until_stopped
from newsletter.clock import SystemClock
from newsletter.config import Settings
from newsletter.db.session import prompt_writes
from newsletter.errors import NewsletterError
from newsletter.logs import log_event
from newsletter.signup import SignupCourse, live_courses
from newsletter.tags import normalize_tag
from newsletter.web.forms import HONEYPOT

log = logging.getLogger(__name__)


@app.command()
def web(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
    course: Annotated[
        str | None,
        typer.Option(help="Sequence slug to sign people up for [default: the oldest live one]"),
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Processes answering requests: one per core")
    ] = 1,
) -> None:
    """Run the web app alone: signup, confirmation, unsubscribe and preference pages."""
    config = settings()
    if workers == 1:
        run(lambda: _serve(config, host, port, course))
        return
    configure_logging()
    listening = _listen(host, port)
    out.print(
        f"Serving the signup pages on http://{host}:{port}/ from {workers} processes. Ctrl-C stops."
    )
    code = supervise(
        workers, lambda: run(lambda: _serve(config, host, port, course, listening, quiet=True))
    )
    if code:
        raise typer.Exit(code)


async def _serve(
    config: Settings,
    host: str,
    port: int,
    course: str | None,
    listening: socket.socket | None = None,
    *,
    quiet: bool = False,
) -> None:
    """The web app in this process until SIGTERM or SIGINT; on `listening` when given (a
    socket the processes of `--workers` share), else on host and port."""
    from newsletter.web.app import create_app, web_server  # imported by the commands that serve

    configure_logging()
    async with database(config) as sessions, prompt_writes(sessions) as writes:
        links = build_links(config)
        application = create_app(
            config, sessions, SystemClock(), links, sequence_slug=course, writes=writes
        )
        server = web_server(application, host, port, grace_s=config.sending.shutdown_grace_s)
        if not quiet:
            out.print(f"Serving the signup pages on http://{host}:{port}/. Ctrl-C stops.")
        # A process of --workers hears its stop from the one that started it: Ctrl-C's
        # SIGINT reaches the whole process group, and would otherwise count twice.
        with StopSignals(only_sigterm=listening is not None) as signals:
            if quiet:
                log_event(log, logging.INFO, f"Process {os.getpid()} answers.", "web_started")
            sockets = [listening] if listening is not None else None
            serving = asyncio.ensure_future(serve_until_stopped(server, sockets))
            stopping = asyncio.ensure_future(signals.requested.wait())
            await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
            server.should_exit = True
            forcing = asyncio.ensure_future(signals.forced.wait())
            await asyncio.wait({serving, forcing}, return_when=asyncio.FIRST_COMPLETED)
            if forcing.done():
                server.force_exit = True
            forcing.cancel()
            stopping.cancel()
            await serving
    answered = "were cut off" if signals.forced.is_set() else "were answered"
    log_event(
        log,
        logging.INFO,
        f"Stopped{f' on {signals.name}' if signals.name else ''}: "
        f"the requests under way {answered}.",
        "stopped",
    )


def _listen(host: str, port: int) -> socket.socket:
    """The socket every process of --workers accepts on, bound before any is started so
    that a port in use is said once, here."""
    try:
        listening = socket.create_server((host, port), backlog=2048, reuse_port=False)
    except OSError as exc:
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        raise NewsletterError(f"cannot listen on {host}:{port}: {why}") from None
    listening.set_inheritable(True)
    return listening


@app.command("form-snippet")
def form_snippet(
    course: Annotated[
        str | None,
        typer.Option(help="Slug of the live course it signs people up for [default: the oldest]"),
    ] = None,
    tag: Annotated[
        list[str] | None,
        typer.Option(help="A tag for whoever signs up with it (docs/segments.md); repeatable"),
    ] = None,
) -> None:
    """Print an HTML signup form for one course that another website can paste in; it posts
    here, with the course's consent sentence as queued."""
    config = settings()
    tags = [normalize_tag(word) for word in tag or []]

    async def work() -> None:
        async with database(config, read_only=True) as sessions, sessions() as session:
            courses = await live_courses(session)
        chosen = next((c for c in courses if c.slug == course), None) if course else None
        if course and chosen is None:
            live = ", ".join(c.slug for c in courses) or "none"
            raise NewsletterError(f"no live course '{course}' (live: {live})")
        if not courses:
            raise NewsletterError("no live course; queue one first (newsletter sequences queue)")
        out.print(
            signup_snippet(config, chosen or courses[0], tags),
            markup=False,
            highlight=False,
            soft_wrap=True,
        )

    run(work)


def signup_snippet(config: Settings, course: SignupCourse, tags: list[str] | None = None) -> str:
    action = escape(f"{config.site.base}/subscribe")
    identity = course.identity
    return f"""<!-- Signup form for {escape(course.title)}: it posts to {action}.
     Style it as you like; keep the field names, the consent sentence and the hidden fields. -->
<form method="post" action="{action}" class="newsletter-signup" lang="{escape(identity.language)}">
  <p>
    <label for="newsletter-email">Your email address</label><br>
    <input id="newsletter-email" name="email" type="email" autocomplete="email"
           required maxlength="254">
  </p>
  <p>
    <label for="newsletter-first-name">Your first name (optional)</label><br>
    <input id="newsletter-first-name" name="first_name" type="text"
           autocomplete="given-name" maxlength="100">
  </p>
  <!-- A trap for bots: people never see it, so it must stay empty. -->
  <p style="position:absolute;left:-10000px" aria-hidden="true">
    <label for="newsletter-{HONEYPOT}">Leave this field empty</label>
    <input id="newsletter-{HONEYPOT}" name="{HONEYPOT}" type="text" tabindex="-1"
           autocomplete="off">
  </p>
  <input type="hidden" name="timezone" value="">
  <input type="hidden" name="form" value="snippet">
  <input type="hidden" name="course" value="{escape(course.slug)}">
  <input type="hidden" name="consent_version" value="{escape(identity.consent_version)}">
  <input type="hidden" name="tags" value="{escape(" ".join(tags or []))}">
  <p id="newsletter-consent">{escape(identity.consent_text)}</p>
  <button type="submit" aria-describedby="newsletter-consent">Subscribe</button>
</form>
<!-- Optional: sends the reader's time zone, so lessons arrive in their daytime. -->
<script>
  document.querySelectorAll('.newsletter-signup input[name="timezone"]').forEach(function (field) {{
    try {{ field.value = Intl.DateTimeFormat().resolvedOptions().timeZone || ""; }} catch (e) {{}}
  }});
</script>
"""
