"""Bulk set-up shared by the benchmarks: many confirmed readers enrolled in one sequence,
inserted with executemany in one transaction (not one by one: that would take minutes)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import create_engine, insert

from newsletter.db.models import Enrollment, EnrollmentStatus, Subscriber, SubscriberStatus


def insert_enrolled_readers(url: str, sequence_id: int, count: int, at: datetime) -> None:
    """Subscribers reader1@example.com … reader<count>@example.com (ids 1…count), each
    enrolled in the sequence and due its next lesson from `at`."""
    ids = range(1, count + 1)
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            insert(Subscriber.__table__),  # type: ignore[arg-type]
            [
                {
                    "id": index,
                    "email": f"reader{index}@example.com",
                    "first_name": f"Reader{index}",
                    "status": SubscriberStatus.CONFIRMED,
                    "timezone": None,
                    "consent": {"form": "bench"},
                    "created_at": at,
                    "confirmed_at": at,
                    "unsubscribed_at": None,
                    "updated_at": at,
                }
                for index in ids
            ],
        )
        connection.execute(
            insert(Enrollment.__table__),  # type: ignore[arg-type]
            [
                {
                    "subscriber_id": index,
                    "sequence_id": sequence_id,
                    "status": EnrollmentStatus.ACTIVE,
                    "last_sent_at": at,
                    "next_check_at": at,
                    "enrolled_at": at,
                }
                for index in ids
            ],
        )
    engine.dispose()
