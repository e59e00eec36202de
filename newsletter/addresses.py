"""Email addresses as people type them -> one normalised form, or a reason it is unusable."""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email

from newsletter.errors import NewsletterError

MAX_ADDRESS_LENGTH = 254  # RFC 5321's path limit, less the angle brackets


class AddressInvalid(NewsletterError):
    pass


def normalize_address(raw: str) -> str:
    """Trimmed, lower-cased, domain IDNA-encoded (so it fits an ASCII header).

    RFC 5321 lets a server treat the local part's case as significant, but practically none
    do, and people type their address in varying case: one subscriber, one row."""
    text = raw.strip()
    if len(text) > MAX_ADDRESS_LENGTH:
        raise AddressInvalid(f"{text[:40]}…: longer than {MAX_ADDRESS_LENGTH} characters")
    try:
        valid = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        raise AddressInvalid(f"{text!r}: {exc}") from None
    if valid.ascii_email is None:
        raise AddressInvalid(f"{text!r}: a non-ASCII mailbox name cannot be mailed yet")
    return valid.ascii_email.lower()
