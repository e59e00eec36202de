"""Signed tokens for the links in emails: one subscriber, one purpose, expiry where it fits."""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class LinkTarget:
    """Whom a link is for, and for which course (sequence id); None: every course, as in
    links made before courses had pages of their own."""

    subscriber_id: int
    sequence_id: int | None = None


class Tokens:
    """HMAC-signed '<subscriber id>[-<sequence id>][.<issued at>]' strings, one signing
    key per purpose.

    The issue time is passed in rather than read here, so tests control expiry."""

    def __init__(self, secret: str) -> None:
        self._signers = {
            purpose: Signer(secret, salt=f"newsletter.{purpose}") for purpose in Purpose
        }

    def issue(
        self, purpose: Purpose, subscriber_id: int, now: datetime, sequence_id: int | None = None
    ) -> str:
        payload = str(subscriber_id) if sequence_id is None else f"{subscriber_id}-{sequence_id}"
        if purpose in MAX_AGE:
            payload += f".{int(now.timestamp())}"
        return self._signers[purpose].sign(payload).decode("ascii")

    def read(self, purpose: Purpose, token: str, now: datetime) -> int:
        return self.read_target(purpose, token, now).subscriber_id

    def read_target(self, purpose: Purpose, token: str, now: datetime) -> LinkTarget:
        try:
            payload = self._signers[purpose].unsign(token).decode("ascii")
        except (BadSignature, UnicodeError):
            raise TokenInvalid(purpose) from None
        target, _, issued = payload.partition(".")
        subscriber, dash, sequence = target.partition("-")
        # isascii too: str.isdigit() is true of other scripts' digits, which int() reads.
        if not (target.isascii() and subscriber.isdigit()) or (dash and not sequence.isdigit()):
            raise TokenInvalid(purpose)
        if purpose in MAX_AGE:
            if not (issued.isascii() and issued.isdigit()):
                raise TokenInvalid(purpose)
            if now.timestamp() - int(issued) > MAX_AGE[purpose].total_seconds():
                raise TokenExpired(purpose)
        return LinkTarget(int(subscriber), int(sequence) if dash else None)


class LinkMaker:
    """Public URLs of the web app's confirm, unsubscribe and preference pages."""

    def __init__(self, tokens: Tokens, base_url: str, unsubscribe_address: str) -> None:
        self.tokens = tokens
        self.base_url = base_url.rstrip("/")
        self.unsubscribe_address = unsubscribe_address

    def personal_links(
        self, subscriber_id: int, now: datetime, sequence_id: int | None = None
    ) -> PersonalLinks:
        """The links of a lesson's footer: leaving its course (also List-Unsubscribe's,
        RFC 8058), leaving everything, and the preferences page."""
        unsubscribe = self.tokens.issue(Purpose.UNSUBSCRIBE, subscriber_id, now, sequence_id)
        leave_all = self.tokens.issue(Purpose.UNSUBSCRIBE, subscriber_id, now)
        preferences = self.tokens.issue(Purpose.PREFERENCES, subscriber_id, now)
        return PersonalLinks(
            unsubscribe_url=f"{self.base_url}/unsubscribe/{unsubscribe}",
            unsubscribe_mailto=(
                f"mailto:{self.unsubscribe_address}?subject={quote('unsubscribe ' + unsubscribe)}"
            ),
            preferences_url=f"{self.base_url}/preferences/{preferences}",
            unsubscribe_all_url=f"{self.base_url}/unsubscribe/{leave_all}",
        )

    def confirm_url(self, subscriber_id: int, now: datetime, sequence_id: int | None = None) -> str:
        token = self.tokens.issue(Purpose.CONFIRM, subscriber_id, now, sequence_id)
        return f"{self.base_url}/confirm/{token}"
