"""The worker sends a course as it was queued: its sender, footer note and own templates
come from the database snapshot, whatever the files say since."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from newsletter.content.course import load_course
from tests.conftest import REPO
from tests.integration.harness import Stack, run, settings_for

SOURDOUGH = REPO / "tests" / "fixtures" / "courses" / "sourdough"
START = datetime(2026, 6, 9, 9, 0, tzinfo=UTC)


def test_lessons_keep_the_identity_they_were_queued_with(settings, tmp_path, smtp_server):
    folder = Path(shutil.copytree(SOURDOUGH, tmp_path / "sourdough"))
    config = settings_for(settings, tmp_path)

    async def scenario() -> None:
        stack = await Stack.start(config, smtp_server, START)
        try:
            sequence = await stack.queue(load_course(folder))
            # The files change after queuing: another sender, no footer, no templates.
            (folder / "course.toml").write_text(
                'title = "Sourdough from scratch"\ndescription = "D"\n'
                '[sender]\nname = "Someone Else"\n',
                encoding="utf-8",
            )
            shutil.rmtree(folder / "templates")
            await stack.subscribe("ana@example.com", name="Ana", sequence_id=sequence)
            await stack.run()
        finally:
            await stack.close()

    run(scenario())
    [(envelope_from, _, data)] = smtp_server.messages
    assert envelope_from == "bread@crumb.example"
    message = message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    assert message["From"].addresses[0].display_name == "The Crumb Club"
    assert message["Reply-To"].addresses[0].addr_spec == "baker@crumb.example"
    text = message.get_body(("plain",))
    assert text is not None
    content = text.get_content()
    assert content.startswith("Crumb Club · lesson 1 of 3")  # the course's own lesson.txt
    assert "Baked with flour, water, salt and patience." in content
    assert "Someone Else" not in message.as_string()
