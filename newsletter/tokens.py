"""Signed tokens for the links in emails: one subscriber, one purpose, expiry where it fits."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from urllib.parse import quote

from itsdangerous import BadSignature, Signer

from newsletter.render import PersonalLinks


class Purpose(StrEnum):
    CONFIRM = "confirm"
    UNSUBSCRIBE = "unsubscribe"
    PREFERENCES = "preferences"


#: Unsubscribe and preference links never expire: an old email must still let people leave.
MAX_AGE: dict[Purpose, timedelta] = {Purpose.CONFIRM: timedelta(days=7)}


class TokenInvalid(Exception):
    """Tampered with, for another purpose, or malformed."""


class TokenExpired(TokenInvalid):
    pass


class Tokens:
    """HMAC-signed '<subscriber id>.<issued at>' strings, one signing key per purpose.

    The issue time is passed in rather than read here, so tests control expiry."""

    def __init__(self, secret: str) -> None:
        self._signers = {
            purpose: Signer(secret, salt=f"newsletter.{purpose}") for purpose in Purpose
        }

    def issue(self, purpose: Purpose, subscriber_id: int, now: datetime) -> str:
        payload = (
            f"{subscriber_id}.{int(now.timestamp())}" if purpose in MAX_AGE else str(subscriber_id)
        )
        return self._signers[purpose].sign(payload).decode("ascii")

    def read(self, purpose: Purpose, token: str, now: datetime) -> int:
        try:
            payload = self._signers[purpose].unsign(token).decode("ascii")
        except (BadSignature, UnicodeError):
            raise TokenInvalid(purpose) from None
        subscriber, _, issued = payload.partition(".")
        if not subscriber.isdigit():
            raise TokenInvalid(purpose)
        if purpose in MAX_AGE:
            if not issued.isdigit():
                raise TokenInvalid(purpose)
            if now.timestamp() - int(issued) > MAX_AGE[purpose].total_seconds():
                raise TokenExpired(purpose)
        return int(subscriber)


class LinkMaker:
    """Public URLs of the web app's confirm, unsubscribe and preference pages."""

    def __init__(self, tokens: Tokens, base_url: str, unsubscribe_address: str) -> None:
        self.tokens = tokens
        self.base_url = base_url.rstrip("/")
        self.unsubscribe_address = unsubscribe_address

    def personal_links(self, subscriber_id: int, now: datetime) -> PersonalLinks:
        unsubscribe = self.tokens.issue(Purpose.UNSUBSCRIBE, subscriber_id, now)
        preferences = self.tokens.issue(Purpose.PREFERENCES, subscriber_id, now)
        return PersonalLinks(
            unsubscribe_url=f"{self.base_url}/unsubscribe/{unsubscribe}",
            unsubscribe_mailto=(
                f"mailto:{self.unsubscribe_address}?subject={quote('unsubscribe ' + unsubscribe)}"
            ),
            preferences_url=f"{self.base_url}/preferences/{preferences}",
        )

    def confirm_url(self, subscriber_id: int, now: datetime) -> str:
        return f"{self.base_url}/confirm/{self.tokens.issue(Purpose.CONFIRM, subscriber_id, now)}"
