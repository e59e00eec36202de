"""Mailgun's event webhook: a signed permanent failure or complaint about a lesson we sent
suppresses its address; anything unsigned, stale or unknown changes nothing."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

from pydantic import SecretStr

from newsletter.config import Settings
from newsletter.db import queries
from newsletter.db.models import Subscriber, SubscriberStatus
from newsletter.inbound.mailgun import MAX_AGE_S
from tests.smtpd import SmtpServer
from tests.web.site import Site, with_site

KEY = "mailgun-webhook-signing-key"


def with_mailgun(settings: Settings) -> Settings:
    inbound = settings.inbound.model_copy(update={"mailgun_signing_key": SecretStr(KEY)})
    return settings.model_copy(update={"inbound": inbound})


def signed(event: dict[str, Any], *, key: str = KEY, at: float | None = None) -> bytes:
    timestamp, token = str(int(at if at is not None else time.time())), "f" * 50
    signature = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return json.dumps(
        {
            "signature": {"timestamp": timestamp, "token": token, "signature": signature},
            "event-data": event,
        }
    ).encode()


def failure(message_id: str, recipient: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": "event-" + message_id,
        "event": "failed",
        "severity": "permanent",
        "recipient": recipient,
        "delivery-status": {"code": 550, "message": "5.1.1 The email account does not exist"},
        "message": {"headers": {"message-id": message_id.strip("<>")}},
    } | fields


async def welcome_sent(site: Site, email: str) -> tuple[int, str]:
    subscriber_id = await site.stack.subscribe(email, sequence_id=site.sequence_id)
    await site.stack.run()
    [delivery] = await site.stack.deliveries(subscriber_id)
    return subscriber_id, delivery.message_id


async def suppressed(site: Site, email: str) -> bool:
    async with site.stack.sessions() as session:
        return await queries.is_suppressed(session, email)


def test_a_signed_permanent_failure_suppresses_the_address(settings, tmp_path, smtp_server):
    async def scenario(site: Site) -> None:
        subscriber_id, message_id = await welcome_sent(site, "ann@example.com")

        answer = await site.client.post(
            "/webhooks/mailgun", content=signed(failure(message_id, "ann@example.com"))
        )
        again = await site.client.post(
            "/webhooks/mailgun", content=signed(failure(message_id, "ann@example.com"))
        )

        assert answer.status_code == 200
        assert "address suppressed" in answer.text
        assert "already recorded" in again.text
        assert await suppressed(site, "ann@example.com")
        async with site.stack.sessions() as session:
            ann = await session.get(Subscriber, subscriber_id)
            assert ann is not None
            assert ann.status == SubscriberStatus.BOUNCED

    with_site(with_mailgun(settings), tmp_path, smtp_server, scenario)


def test_a_signed_complaint_suppresses_and_a_policy_failure_does_not(
    settings, tmp_path, smtp_server
):
    async def scenario(site: Site) -> None:
        _, ann_message = await welcome_sent(site, "ann@example.com")
        _, bob_message = await welcome_sent(site, "bob@example.com")
        complaint = {
            "id": "c1",
            "event": "complained",
            "recipient": "ann@example.com",
            "message": {"headers": {"message-id": ann_message.strip("<>")}},
        }
        policy = failure(
            bob_message,
            "bob@example.com",
            **{"delivery-status": {"code": 550, "message": "5.7.26 Unauthenticated email"}},
        )

        assert (await site.client.post("/webhooks/mailgun", content=signed(complaint))).is_success
        assert (await site.client.post("/webhooks/mailgun", content=signed(policy))).is_success

        assert await suppressed(site, "ann@example.com")
        assert not await suppressed(site, "bob@example.com")

    with_site(with_mailgun(settings), tmp_path, smtp_server, scenario)


def test_unsigned_stale_or_garbled_requests_are_refused_and_change_nothing(
    settings, tmp_path, smtp_server
):
    async def scenario(site: Site) -> None:
        _, message_id = await welcome_sent(site, "ann@example.com")
        event = failure(message_id, "ann@example.com")

        wrong_key = await site.client.post(
            "/webhooks/mailgun", content=signed(event, key="not-the-key")
        )
        stale = await site.client.post(
            "/webhooks/mailgun", content=signed(event, at=time.time() - MAX_AGE_S - 60)
        )
        garbled = await site.client.post("/webhooks/mailgun", content=b"\xff{not json")

        assert [wrong_key.status_code, stale.status_code, garbled.status_code] == [403, 403, 403]
        assert not await suppressed(site, "ann@example.com")

    with_site(with_mailgun(settings), tmp_path, smtp_server, scenario)


def test_events_we_do_not_act_on_are_answered_and_ignored(settings, tmp_path, smtp_server):
    async def scenario(site: Site) -> None:
        answer = await site.client.post(
            "/webhooks/mailgun", content=signed({"id": "o1", "event": "opened"})
        )

        assert answer.status_code == 200
        assert answer.text.startswith("ignored")

    with_site(with_mailgun(settings), tmp_path, smtp_server, scenario)


def test_without_a_signing_key_there_is_no_webhook(
    settings: Settings, tmp_path, smtp_server: SmtpServer
):
    async def scenario(site: Site) -> None:
        answer = await site.client.post("/webhooks/mailgun", content=b"{}")
        assert answer.status_code == 404

    with_site(settings, tmp_path, smtp_server, scenario)
