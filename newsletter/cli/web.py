"""`newsletter web` (the web app alone) and `newsletter form-snippet` (a form for other sites)."""

from __future__ import annotations

import asyncio
import logging
from html import escape
from typing import Annotated

import typer

from newsletter.cli.admin import database
from newsletter.cli.app import app, out, run, settings
from newsletter.cli.lifecycle import StopSignals, configure_logging
from newsletter.cli.running import build_links, serve_until_stopped
from newsletter.clock import SystemClock
from newsletter.config import Settings
from newsletter.db.session import prompt_writes
from newsletter.logs import log_event
from newsletter.signup import CONSENT_TEXT, CONSENT_VERSION
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
) -> None:
    """Run the web app alone: signup, confirmation, unsubscribe and preference pages."""
    config = settings()
    from newsletter.web.app import create_app, web_server  # imported by the commands that serve

    async def work() -> None:
        configure_logging()
        async with database(config) as sessions, prompt_writes(sessions) as writes:
            links = build_links(config)
            application = create_app(
                config, sessions, SystemClock(), links, sequence_slug=course, writes=writes
            )
            server = web_server(application, host, port, grace_s=config.sending.shutdown_grace_s)
            out.print(f"Serving the signup pages on http://{host}:{port}/. Ctrl-C stops.")
            with StopSignals() as signals:
                serving = asyncio.ensure_future(serve_until_stopped(server))
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

    run(work)


@app.command("form-snippet")
def form_snippet() -> None:
    """Print an HTML signup form that another website can paste in; it posts here."""
    out.print(signup_snippet(settings()), markup=False, highlight=False, soft_wrap=True)


def signup_snippet(config: Settings) -> str:
    action = escape(f"{config.site.base}/subscribe")
    return f"""<!-- Signup form for {escape(config.sender.name)}: it posts to {action}.
     Style it as you like; keep the field names, the consent sentence and the hidden fields. -->
<form method="post" action="{action}" class="newsletter-signup">
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
  <input type="hidden" name="consent_version" value="{CONSENT_VERSION}">
  <p id="newsletter-consent">{escape(CONSENT_TEXT)}</p>
  <button type="submit" aria-describedby="newsletter-consent">Subscribe</button>
</form>
<!-- Optional: sends the reader's time zone, so lessons arrive in their daytime. -->
<script>
  document.querySelectorAll('.newsletter-signup input[name="timezone"]').forEach(function (field) {{
    try {{ field.value = Intl.DateTimeFormat().resolvedOptions().timeZone || ""; }} catch (e) {{}}
  }});
</script>
"""
