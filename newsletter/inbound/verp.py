"""VERP return paths: each message's envelope sender names its delivery, signed, so that a
bounce says which message it is about and a forged one is ignored.

    bounces@example.org  ->  bounces+1234-k7d2mq9xw4@example.org

The signature is lower-case base32: some servers lower-case the local part of the address
they bounce to, and a case-sensitive signature would not survive that."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from newsletter.addresses import address_parts
from newsletter.config import Settings, load_secret_key

#: 10 base32 characters: 50 bits, against guesses made one SMTP transaction at a time.
SIGNATURE_CHARS = 10
_VERP = re.compile(r"(?P<delivery>[0-9]{1,18})-(?P<signature>[a-z2-7]+)")


class ReturnPath:
    def __init__(self, address: str, secret: str) -> None:
        self.address = address.lower()
        self.local, _, self.domain = self.address.rpartition("@")
        self._key = hashlib.sha256(f"newsletter.verp:{secret}".encode()).digest()

    def for_delivery(self, delivery_id: int) -> str:
        return f"{self.local}+{delivery_id}-{self._signature(delivery_id)}@{self.domain}"

    def delivery_of(self, address: str) -> int | None:
        """The delivery a VERP address names; None when it is not one of ours or its
        signature is wrong."""
        base, tag, domain = address_parts(address)
        if not tag or base != self.local or domain != self.domain:
            return None
        match = _VERP.fullmatch(tag)
        if match is None:
            return None
        delivery_id = int(match["delivery"])
        if not hmac.compare_digest(match["signature"], self._signature(delivery_id)):
            return None
        return delivery_id

    def is_ours(self, address: str) -> bool:
        """The return path itself or any tagged form of it, signed or not."""
        base, _, domain = address_parts(address)
        return (base, domain) == (self.local, self.domain)

    def _signature(self, delivery_id: int) -> str:
        digest = hmac.new(self._key, str(delivery_id).encode(), hashlib.sha256).digest()
        return base64.b32encode(digest).decode("ascii").lower()[:SIGNATURE_CHARS]


def return_path_for(settings: Settings) -> ReturnPath | None:
    """The VERP return path bounces.return_path asks for, signed with the links' secret."""
    address = settings.bounces.return_path
    return ReturnPath(address, load_secret_key(settings)) if address else None
