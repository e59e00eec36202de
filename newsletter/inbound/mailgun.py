"""Mailgun's event webhook: bounces and complaints of mail sent through Mailgun, as signed
JSON. Pure: the web route reads the request, this checks and translates it.

Mailgun signs each request with the webhook signing key of the account: HMAC-SHA256 over
the timestamp and a random token. A request signed longer ago than MAX_AGE_S is refused; a
genuine one played again within it is the same event, which the inbox records only once.
The window is as long as Mailgun goes on retrying an event (8 hours), in case a retry keeps
the first attempt's signature."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from newsletter.inbound.reports import Report, ReportKind, classify, enhanced_status

#: How old (or how far ahead, for a clock that runs fast) a signed request may be.
MAX_AGE_S = 9 * 3600


class WebhookRefused(Exception):
    """Not a request from Mailgun, or not one we can read: the reason, for the log."""


@dataclass(frozen=True, slots=True)
class MailgunEvent:
    name: str  #: failed, complained, delivered, opened...
    report: Report | None  #: None: nothing we act on


def read_event(body: bytes, signing_key: str, now_s: float) -> MailgunEvent:
    try:
        payload = json.loads(body)
        signature = payload["signature"]
        timestamp, token = str(signature["timestamp"]), str(signature["token"])
        given = str(signature["signature"])
        data = payload["event-data"]
    except (ValueError, KeyError, TypeError) as exc:
        raise WebhookRefused(f"not a Mailgun event ({type(exc).__name__})") from None
    expected = hmac.new(
        signing_key.encode(), (timestamp + token).encode(), hashlib.sha256
    ).hexdigest()
    if not hmac.compare_digest(expected, given):
        raise WebhookRefused("wrong signature")
    try:
        age = abs(now_s - float(timestamp))
    except ValueError:
        raise WebhookRefused("a timestamp that is not a number") from None
    if age > MAX_AGE_S:
        raise WebhookRefused(f"signed {age:.0f} s ago; at most {MAX_AGE_S} s is taken")
    if not isinstance(data, dict):
        raise WebhookRefused("event-data is not an object")
    name = str(data.get("event", ""))
    return MailgunEvent(name, _report(name, data))


def _report(name: str, data: dict[str, Any]) -> Report | None:
    status_data = _object(data, "delivery-status")
    diagnostic = " ".join(
        str(status_data.get(key) or "") for key in ("code", "message", "description")
    ).strip()
    status = enhanced_status(str(status_data.get("enhanced-code") or diagnostic))
    if name == "complained":
        kind = ReportKind.COMPLAINT
    elif name == "failed":
        # Classified as bounces by mail are: a permanent failure may still be a full
        # mailbox (soft) or a refusal of our own mail (policy).
        temporary = data.get("severity") != "permanent"
        kind = classify(status, diagnostic, delayed=temporary)
    else:
        return None
    headers = _object(_object(data, "message"), "headers")
    message_id = str(headers.get("message-id") or "").strip().strip("<>")
    envelope = _object(data, "envelope")
    # Mailgun's event id; failing that, the event itself, so that a repeat is still one.
    event_id = str(data.get("id") or json.dumps(data, sort_keys=True))
    return Report(
        kind=kind,
        recipient=str(data.get("recipient") or "").strip().lower() or None,
        status=status,
        diagnostic=" ".join(diagnostic.split())[:500],
        original_message_id=f"<{message_id}>" if message_id else None,
        original_return_path=str(envelope.get("sender") or "") or None,
        fingerprint=hashlib.sha256(f"mailgun:{event_id}:{name}".encode()).hexdigest(),
    )


def _object(data: dict[str, Any], key: str) -> dict[str, Any]:
    """data[key] if it is a JSON object, else an empty one: the payload is not ours."""
    value = data.get(key)
    return value if isinstance(value, dict) else {}
