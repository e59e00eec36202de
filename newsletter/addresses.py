"""Email addresses as people type them -> one normalised form, or a reason it is unusable."""

from __future__ import annotations

from functools import cache

from email_validator import EmailNotValidError, validate_email
from publicsuffixlist import PublicSuffixList

from newsletter.errors import NewsletterError

MAX_ADDRESS_LENGTH = 254  # RFC 5321's path limit, less the angle brackets
MAX_LOCAL_PART_LENGTH = 64  # RFC 5321 section 4.5.3.1.1, in octets


class AddressInvalid(NewsletterError):
    pass


class AddressNotAscii(AddressInvalid):
    """A well-formed address with letters outside ASCII before the @, which we do not
    send to (see normalize_address): the person can be asked for another address."""


def normalize_address(raw: str) -> str:
    """Trimmed, lower-cased, domain IDNA-encoded (so it fits an ASCII header).

    RFC 5321 lets a server treat the local part's case as significant, but practically none
    do, and people type their address in varying case: one subscriber, one row. Addresses
    differing only in case are therefore the same address everywhere (signup, import).

    Internationalised domains are accepted and stored as punycode (josé@exämple.org is
    refused, jose@exämple.org becomes jose@xn--exmple-cua.org): every relay can carry
    those. A non-ASCII mailbox name (before the @) needs SMTPUTF8 at every hop, which
    many relays lack, so it is refused rather than accepted and left to bounce."""
    text = raw.strip()
    if len(text) > MAX_ADDRESS_LENGTH:
        raise AddressInvalid(f"{text[:40]}…: longer than {MAX_ADDRESS_LENGTH} characters")
    try:
        valid = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        raise AddressInvalid(f"{text!r}: {exc}") from None
    if valid.ascii_email is None:
        raise AddressNotAscii(
            f"{text!r}: the part before the @ has letters outside plain ASCII (such as é "
            "or 用), which this server cannot send to; please use another address"
        )
    # email_validator checks the whole length (also once the domain is encoded) but leaves
    # this one to its strict mode, which refuses more besides.
    if len(valid.local_part) > MAX_LOCAL_PART_LENGTH:
        raise AddressInvalid(
            f"{text!r}: the part before the @ is {len(valid.local_part)} characters long; "
            f"an address allows at most {MAX_LOCAL_PART_LENGTH}"
        )
    return valid.ascii_email.lower()


def organisational_domain(domain: str) -> str:
    """The registrable domain DMARC aligns by (RFC 7489, 3.2), from the Public Suffix List."""
    domain = domain.lower().rstrip(".")
    found = _public_suffixes().privatesuffix(domain)
    return found if isinstance(found, str) else domain


def dmarc_aligned(domain: str, from_domain: str) -> bool:
    """DMARC's relaxed alignment: the same organisational domain as the From address's."""
    return organisational_domain(domain) == organisational_domain(from_domain)


@cache
def _public_suffixes() -> PublicSuffixList:
    return PublicSuffixList()


def address_parts(address: str) -> tuple[str, str, str]:
    """An envelope address as (local part before any '+', the tag after it, domain), lower
    case, without the angle brackets SMTP puts around it."""
    local, _, domain = address.strip().strip("<>").lower().rpartition("@")
    base, _, tag = local.partition("+")
    return base, tag, domain
