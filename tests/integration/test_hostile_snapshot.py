"""A lesson that reached the database without being checked (queued before the sandbox
existed, or written there by hand) cannot run code in the worker: its delivery fails with
a clear reason and every other email still goes out."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select, update

from newsletter.content.course import load_course
from newsletter.db import queries
from newsletter.db.models import DeliveryStatus, LessonSnapshot, Sequence
from tests.conftest import COURSE_DIR, REPO
from tests.integration.harness import Stack, run, settings_for, shipped_course

START = datetime(2026, 6, 9, 9, 0, tzinfo=UTC)  # a Tuesday morning in London


def test_a_hostile_lesson_in_the_database_fails_its_delivery_and_runs_nothing(
    settings, tmp_path, smtp_server
):
    proof = tmp_path / "proof"
    exploit = f"{{{{ lipsum.__globals__['os'].popen('touch {proof}').read() }}}}"
    # A second, ordinary course whose first lesson is then rewritten in the database.
    folder = Path(shutil.copytree(COURSE_DIR, tmp_path / "second-course"))
    hostile = load_course(folder)
    exploit_line = hostile.lesson("welcome").body_line + 2  # the body's third line

    async def scenario(stack: Stack) -> None:
        clean = await stack.queue(shipped_course(REPO))
        poisoned = await stack.queue(hostile)
        async with stack.sessions.begin() as session:
            version = await session.scalar(
                select(Sequence.current_version_id).where(Sequence.id == poisoned)
            )
            await session.execute(
                update(LessonSnapshot)
                .where(LessonSnapshot.version_id == version, LessonSnapshot.key == "welcome")
                .values(body=f"Hi {{{{ first_name }}}},\n\n{exploit}\n")
            )
        ana = await stack.subscribe("ana@example.com", name="Ana", sequence_id=clean)
        async with stack.sessions.begin() as session:
            await queries.enroll(session, ana, poisoned, stack.clock.now())
        bo = await stack.subscribe("bo@example.com", name="Bo", sequence_id=poisoned)

        await stack.run_for(timedelta(hours=2))

        assert not proof.exists()
        by_sequence = {d.sequence_id: d for d in await stack.deliveries(ana)}
        assert by_sequence[clean].status == DeliveryStatus.SENT
        failed = [by_sequence[poisoned], *await stack.deliveries(bo)]
        for delivery in failed:
            assert delivery.status == DeliveryStatus.FAILED
            assert delivery.last_error is not None
            assert "cannot build the email: ContentError: " in delivery.last_error
            where = f"second-course@v1/01-welcome.md:{exploit_line}"
            assert f"{where}: {{{{ }}}} may hold only a variable name" in delivery.last_error
        assert [m["Subject"] for m in stack.received()] == [
            "Welcome, and why your leg may stay weak"
        ]

    async def with_stack() -> None:
        stack = await Stack.start(settings_for(settings, tmp_path), smtp_server, START)
        try:
            await scenario(stack)
        finally:
            await stack.close()

    run(with_stack())
