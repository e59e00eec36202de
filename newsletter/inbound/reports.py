"""One inbound email's raw bytes -> what it says: bounces (RFC 3464 DSNs and the older text
shapes), feedback-loop complaints (RFC 5965 ARF) or a mailto: unsubscribe (RFC 2369).

Pure: no database, no network, no clock. Whatever arrives is hostile until read, so nothing
here raises on bad input: mail that cannot be read reports nothing.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses, parseaddr
from enum import StrEnum
from itertools import islice

from flufl.bounce import all_failures

from newsletter.addresses import AddressInvalid, normalize_address
from newsletter.inbound import mime

DIAGNOSTIC_MAX = 500
SUBJECT_MAX = 200
#: Reports read from one message: ours go to one recipient each, so a genuine report
#: names one or a few; thousands would be forged, each a suppression to weigh.
REPORTS_MAX = 20


class ReportKind(StrEnum):
    #: Permanent: unknown user, no such domain (5.1.x, 5.4.4, 5.0.0 with clear words).
    HARD_BOUNCE = "hard_bounce"
    #: A failure that may pass: mailbox full (x.2.x), 4.x.x given up after retries.
    SOFT_BOUNCE = "soft_bounce"
    #: About us, never the subscriber: x.7.x, spam, blocklists, DMARC, policy.
    POLICY_BOUNCE = "policy_bounce"
    #: Action: delayed, a warning; the MTA is still trying.
    DELAYED = "delayed"
    #: An ARF feedback report of type abuse, fraud, virus or other.
    COMPLAINT = "complaint"


@dataclass(frozen=True, slots=True)
class Report:
    kind: ReportKind
    #: The address the report is about, normalised as subscribers' are; None if unknown.
    recipient: str | None
    #: RFC 3463 enhanced status code ("5.1.1"), given or found in the reason.
    status: str | None
    #: The remote server's reason: one line, no control characters, at most 500 characters.
    diagnostic: str
    #: Message-ID (with angle brackets) of our message the report is about, when quoted.
    original_message_id: str | None
    #: Envelope sender of our message (its VERP address), as quoted: case kept.
    original_return_path: str | None
    #: Hex idempotency key: the same report twice, even relayed again, gives the same one.
    fingerprint: str


@dataclass(frozen=True, slots=True)
class UnsubscribeRequest:
    #: The From address, normalised; None if missing, several or unusable.
    sender: str | None
    #: The token after "unsubscribe" in the Subject (our mailto: link's), None if absent.
    token: str | None
    #: The decoded Subject: one line, at most 200 characters.
    subject: str
    fingerprint: str
    #: Whether the receiving server vouches for the sender's address: its own (topmost)
    #: Authentication-Results says DMARC passed for the From domain.
    sender_authenticated: bool = False


def read_reports(raw: bytes) -> list[Report]:
    """The bounces and complaints in one inbound email, one Report per recipient it names;
    [] for anything else (auto-replies, vacation notices, spam, garbage)."""
    try:
        message = message_from_bytes(raw, policy=compat32)
        return list(islice(_reports(message, raw, mime.content_hash(message)), REPORTS_MAX))
    except Exception:
        # The email package is not proof against every crafted input (deeply nested parts
        # exhaust the recursion limit, for one): mail that cannot be read reports nothing.
        return []


def read_unsubscribe_request(raw: bytes) -> UnsubscribeRequest:
    """Mail sent to the unsubscribe address: who sent it and the token its Subject holds."""
    try:
        message = message_from_bytes(raw, policy=compat32)
        subject = mime.decode_words(mime.header(message, "subject"))
        token_match = _UNSUBSCRIBE_TOKEN.search(subject)
        token = token_match.group(1) if token_match else None
        return UnsubscribeRequest(
            # Split before decoding: an encoded name may hold a comma once decoded.
            sender=_single_address(mime.header(message, "from")),
            # A person may write "unsubscribe me": a token holds digits (tokens.py's ids).
            token=token if token and any(char.isdigit() for char in token) else None,
            subject=mime.one_line(subject, SUBJECT_MAX),
            fingerprint=mime.content_hash(message),
            sender_authenticated=_dmarc_passed(message),
        )
    except Exception:  # as in read_reports
        return UnsubscribeRequest(None, None, "", hashlib.sha256(raw).hexdigest())


def _dmarc_passed(message: Message) -> bool:
    """The topmost Authentication-Results (RFC 8601) is the one the receiving server added
    itself; those below it came with the message and may be forged. It must say that DMARC
    passed for the domain of the From address."""
    results = mime.header(message, "authentication-results")
    sender = _single_address(mime.header(message, "from"))
    found = _DMARC_PASS.search(results)
    return bool(sender and found and found.group(1).lower() == sender.rpartition("@")[2])


def is_auto_reply(raw: bytes) -> bool:
    """Whether a machine wrote this mail (RFC 3834 Auto-Submitted, X-Autoreply, Precedence
    bulk/junk/list/auto_reply, an "Out of office" subject...). Bounces and reports are
    automatic too, so read them with read_reports first."""
    try:
        message = BytesHeaderParser(policy=compat32).parsebytes(raw)
    except Exception:  # as in read_reports
        return False
    submitted = _first_word(mime.header(message, "auto-submitted"))
    if submitted and submitted != "no":
        return True
    for name in ("precedence", "x-precedence"):
        if _first_word(mime.header(message, name)) in {"bulk", "junk", "list", "auto_reply"}:
            return True
    for name, value in message.raw_items():
        if name.strip().lower() in _AUTO_REPLY_HEADERS and _first_word(value) not in _NO:
            return True
    return bool(_AUTO_REPLY_SUBJECT.match(mime.decode_words(mime.header(message, "subject"))))


def classify(status: str | None, diagnostic: str, *, delayed: bool = False) -> ReportKind:
    """What a failure means for the subscriber, from its enhanced status code first and the
    server's words where the code says too little (5.0.0, none at all)."""
    if delayed:
        return ReportKind.DELAYED
    kind, _, rest = (status or "").partition(".")
    subject, _, detail = rest.partition(".")
    # The words of an address are a mailbox's name, not the server's: spam-trap@...
    words = _ADDRESS.sub(" ", diagnostic)
    # x.1.7 and x.1.8 are about our sender address, not the recipient's (RFC 3463 3.2).
    if subject == "7" or (subject == "1" and detail in {"7", "8"}):
        return ReportKind.POLICY_BOUNCE
    if kind == "4":
        # Given up after retries: it may pass; but blocked is still about us.
        if _POLICY_WORDS.search(words):
            return ReportKind.POLICY_BOUNCE
        return ReportKind.SOFT_BOUNCE
    if subject == "1" or (subject, detail) == ("4", "4"):
        return ReportKind.HARD_BOUNCE
    if subject == "2":
        return ReportKind.SOFT_BOUNCE
    # Policy words first: wrongly blaming a subscriber costs them their mail.
    if _POLICY_WORDS.search(words):
        return ReportKind.POLICY_BOUNCE
    if _FULL_WORDS.search(words):
        return ReportKind.SOFT_BOUNCE
    if _UNKNOWN_WORDS.search(words):
        return ReportKind.HARD_BOUNCE
    return ReportKind.SOFT_BOUNCE  # the cautious default: a few of these suppress too


def enhanced_status(text: str) -> str | None:
    """The RFC 3463 failure code in a line of text: preferably the one after an SMTP reply
    code ("550 5.1.1"), else the first one standing alone ("(#5.1.1)")."""
    match = _REPLY_AND_STATUS.search(text) or _STATUS.search(text)
    if match is None:
        return None
    # Leading zeros are not part of the code: "5.01.001" is 5.1.1.
    return ".".join(str(int(number)) for number in match.group(1).split("."))


# -- what the message is -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Original:
    """What a report quotes of our message."""

    message_id: str | None
    return_path: str | None
    to: tuple[str, ...]


def _reports(message: Message, raw: bytes, identity: str) -> Iterator[Report]:
    is_feedback = mime.report_type(message) == "feedback-report"
    if is_feedback or mime.parts_of_type(message, _FEEDBACK_TYPES):
        return _complaints(message, identity)
    blocks = _delivery_status(message)
    if blocks is not None:
        return _dsn_reports(message, blocks, identity)
    if _looks_like_failure_notice(message):
        return _text_bounces(message, raw, identity)
    return iter(())


def _delivery_status(message: Message) -> list[mime.Fields] | None:
    """The field blocks of the delivery-status parts; None when there are none. A DSN whose
    MIME is broken (no boundary, say) is searched as text."""
    parts = mime.parts_of_type(message, _DELIVERY_STATUS_TYPES)
    if parts:
        return [block for part in parts for block in mime.field_blocks(part)]
    if mime.report_type(message) == "delivery-status":
        return mime.blocks_in_text(mime.body_text(message))
    return None


def _dsn_reports(message: Message, blocks: list[mime.Fields], identity: str) -> Iterator[Report]:
    recipient_blocks = [block for block in blocks if "action" in block]
    per_message: mime.Fields = {}
    for block in blocks:
        if "action" not in block:
            per_message |= block
    original = _original(message, per_message)
    notice: str | None = None  # the human-readable text, read if a block lacks a reason
    for block in recipient_blocks:
        action = mime.first(block, "action").lower()
        delayed = action.startswith("delayed")
        # delivered, relayed and expanded are successes; opensmtpd says "error" for failed.
        if not (delayed or action.startswith(("failed", "error"))):
            continue
        # Original-Recipient is the address we gave (the subscriber's); Final-Recipient may
        # be where an alias or forward led, so it comes second.
        recipient = _dsn_address(mime.first(block, "original-recipient")) or _dsn_address(
            mime.first(block, "final-recipient")
        )
        reason = _drop_type(mime.first(block, "diagnostic-code"))
        if not reason and recipient:
            notice = mime.body_text(message) if notice is None else notice
            reason = _reason_in(_context_of(recipient, notice))
        diagnostic = mime.one_line(reason, DIAGNOSTIC_MAX)
        given = enhanced_status(mime.first(block, "status"))
        # "5.0.0" says only "failed"; the server's own code in the diagnostic says more.
        specific = given if given and not given.endswith(".0.0") else None
        status = specific or enhanced_status(diagnostic) or given
        kind = classify(status, diagnostic, delayed=delayed)
        yield _report(kind, recipient, status, diagnostic, original, identity)


def _text_bounces(message: Message, raw: bytes, identity: str) -> Iterator[Report]:
    """A bounce in an MTA's own words (old Exim, qmail, Exchange...): flufl.bounce knows
    the shapes and finds the addresses; the words near each address say why."""
    try:
        temporary, permanent = all_failures(_for_detectors(raw, message))
    except Exception:  # a detector tripping over what _for_detectors did not foresee
        return
    found: dict[str, bool] = {}  # address -> only delayed
    for failures, delayed in ((permanent, False), (temporary, True)):
        for failure in failures:
            address = failure.decode("ascii", "replace")
            found[address] = found.get(address, True) and delayed
    body = mime.body_text(message)
    original = _original(message, {})
    for address, delayed in sorted(found.items()):
        context = _context_of(address, body)
        reason = _reason_in(context)
        status = enhanced_status(context)
        kind = classify(status, reason, delayed=delayed)
        diagnostic = mime.one_line(reason, DIAGNOSTIC_MAX)
        yield _report(kind, _normalised(address), status, diagnostic, original, identity)


def _for_detectors(raw: bytes, message: Message) -> Message:
    """The message as flufl.bounce's detectors can read it. all_failures() gives up at the
    first detector that raises, and some call str methods on headers (compat32 gives a
    Header object where 8-bit bytes are) or take From's first address unguarded. So: 8-bit
    bytes as "?" (a detector reports ASCII addresses only), and one plain From."""
    ascii_only = message_from_bytes(raw.translate(_EIGHT_BIT_AS_ASK), policy=compat32)
    sender = parseaddr(mime.header(message, "from"))[1]
    del ascii_only["from"]
    ascii_only["From"] = sender.encode("ascii", "replace").decode() or "MAILER-DAEMON"
    return ascii_only


def _complaints(message: Message, identity: str) -> Iterator[Report]:
    fields: mime.Fields = {}
    for part in mime.parts_of_type(message, _FEEDBACK_TYPES):
        for block in mime.field_blocks(part):
            fields |= block
    if not fields:  # broken MIME: the report's fields are somewhere in the text
        for block in mime.blocks_in_text(mime.body_text(message)):
            if "feedback-type" in block:
                fields |= block
    feedback_type = _first_word(mime.first(fields, "feedback-type"))
    if feedback_type not in _COMPLAINT_TYPES:  # not-spam, auth-failure, none
        return
    original = _original(message, {})
    return_path = _path(mime.first(fields, "original-mail-from")) or original.return_path
    original = _Original(original.message_id, return_path, original.to)
    named = [*fields.get("original-rcpt-to", []), *fields.get("removal-recipient", [])]
    recipients = _unique(_normalised(value) for value in named) or list(original.to) or [None]
    agent = mime.first(fields, "user-agent")
    reason = f"{feedback_type} report" + (f" from {agent}" if agent else "")
    diagnostic = mime.one_line(reason, DIAGNOSTIC_MAX)
    for recipient in recipients:
        yield _report(ReportKind.COMPLAINT, recipient, None, diagnostic, original, identity)


def _report(
    kind: ReportKind,
    recipient: str | None,
    status: str | None,
    diagnostic: str,
    original: _Original,
    identity: str,
) -> Report:
    about = [identity, kind, recipient, status, diagnostic, original.message_id]
    fingerprint = hashlib.sha256("\0".join(map(str, about)).encode()).hexdigest()
    return Report(
        kind, recipient, status, diagnostic, original.message_id, original.return_path, fingerprint
    )


def _looks_like_failure_notice(message: Message) -> bool:
    """Whether mail without a DSN part is worth handing to the bounce detectors: people's
    replies and vacation notices are not, whatever their text looks like."""
    if mime.header(message, "x-failed-recipients"):
        return True
    sender = parseaddr(mime.header(message, "from"))[1].partition("@")[0].lower()
    if sender in _DAEMONS:
        return True
    return bool(_FAILURE_SUBJECT.search(mime.decode_words(mime.header(message, "subject"))))


def _original(message: Message, per_message: mime.Fields) -> _Original:
    """The quoted original's Message-ID, envelope sender and To: from its attached copy or
    headers, else from the DSN's own fields, else from a copy inline in the text."""
    quoted: mime.Fields = {}
    for part in mime.parts_of_type(message, _QUOTED_TYPES):
        payload = part.get_payload()
        if not isinstance(payload, list):  # text/rfc822-headers
            quoted = next(iter(mime.blocks_in_text(mime.text_of(part))), {})
        elif payload and isinstance(payload[0], Message):
            quoted = mime.fields_of(payload[0].raw_items())
        break
    body = mime.body_text(message) if not quoted else ""
    message_id = (
        _message_id(mime.first(quoted, "message-id"))
        or _message_id(mime.first(per_message, "x-original-message-id"))
        or _message_id(_search(_INLINE_MESSAGE_ID, body))
    )
    return_path = (
        _path(mime.first(quoted, "return-path"))
        or _dsn_path(mime.first(per_message, "x-postfix-sender"))
        or _path(_search(_INLINE_RETURN_PATH, body))
    )
    to = _unique(_normalised(address) for _, address in getaddresses(quoted.get("to", [])))
    return _Original(message_id, return_path, tuple(address for address in to if address))


# -- values ----------------------------------------------------------------------------


def _first_word(value: str) -> str:
    words = re.split(r"[\s;,(]+", value.strip().lower(), maxsplit=1)
    return words[0]


def _drop_type(diagnostic: str) -> str:
    """`smtp; 550 ...` -> `550 ...`: the diagnostic type (RFC 3464 2.3.6) is no reason."""
    kind, semicolon, rest = diagnostic.partition(";")
    return rest.strip() if semicolon and mime.FIELD_NAME.fullmatch(kind.strip()) else diagnostic


def _dsn_address(value: str) -> str | None:
    """`rfc822; ana@example.net` (or `utf-8;`, RFC 6533) -> the address, normalised."""
    kind, semicolon, address = value.partition(";")
    return _normalised(address if semicolon else kind)


def _dsn_path(value: str) -> str | None:
    kind, semicolon, address = value.partition(";")
    return _path(address if semicolon else kind)


def _normalised(text: str) -> str | None:
    address = parseaddr(text)[1]
    if "@" not in address:
        return None
    try:
        return normalize_address(address)
    except AddressInvalid:
        return None


def _single_address(value: str) -> str | None:
    addresses = [address for _, address in getaddresses([value]) if address]
    return _normalised(addresses[0]) if len(addresses) == 1 else None


def _path(value: str) -> str | None:
    """A Return-Path as written, without its angle brackets; None for the null path <>."""
    match = re.search(r"<([^<>\s]*)>", value)
    path = match.group(1) if match else value.strip()
    return path if "@" in path and len(path) <= 320 and not mime.CONTROL.search(path) else None


def _message_id(value: str) -> str | None:
    match = re.search(r"<[^<>\s]{1,250}>", value)
    if match:
        return match.group()
    bare = value.strip()
    return f"<{bare}>" if "@" in bare and re.fullmatch(r"[^<>\s]{1,250}", bare) else None


def _search(pattern: re.Pattern[str], text: str) -> str:
    match = pattern.search(text)
    return match.group(1) if match else ""


def _context_of(address: str, text: str) -> str:
    """The lines about `address` in a text bounce: its line and those after it, up to the
    next blank line (every MTA puts its reason right under the address)."""
    lines = text.replace("\r\n", "\n").split("\n")
    lowered = address.lower()
    for index, line in enumerate(lines):
        if lowered in line.lower():
            block = [line]
            for following in lines[index + 1 : index + 10]:
                if not following.strip():
                    break
                block.append(following)
            return "\n".join(block)
    return ""


def _reason_in(context: str) -> str:
    """The remote server's reply in a text bounce's lines, from its SMTP code on; else the
    lines under the address."""
    reply = _SMTP_REPLY.search(context)
    if reply:
        return context[reply.start() :]
    return context.partition("\n")[2] or context


def _unique(values: Iterable[str | None]) -> list[str | None]:
    return list(dict.fromkeys(value for value in values if value))


# -- patterns --------------------------------------------------------------------------

_DELIVERY_STATUS_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
_FEEDBACK_TYPES = frozenset({"message/feedback-report"})
_QUOTED_TYPES = frozenset(
    {
        "message/rfc822",
        "message/global",
        "text/rfc822-headers",
        "message/rfc822-headers",
        "message/global-headers",
    }
)
_COMPLAINT_TYPES = frozenset({"abuse", "fraud", "virus", "other"})
_EIGHT_BIT_AS_ASK = bytes(range(128)) + b"?" * 128
_DAEMONS = frozenset({"mailer-daemon", "mailerdaemon", "mail-daemon", "postmaster"})
_NO = frozenset({"no", "false", "0"})
#: Headers that vacation programs and autoresponders add; present means automatic.
_AUTO_REPLY_HEADERS = frozenset(
    {
        "x-autoreply",
        "x-autorespond",
        "x-autoresponder",
        "x-autoreply-from",
        "x-mail-autoreply",
        "x-autogenerated",
        "x-fc-machinegenerated",
    }
)
_AUTO_REPLY_SUBJECT = re.compile(
    r"\s*(auto:|auto(matic)?[ -]?(reply|response|answer)|autoreply|out of (the )?office"
    r"|on vacation|vacation (reply|notice)|abwesenheitsnotiz|r[ée]ponse automatique"
    r"|respuesta autom[aá]tica)",
    re.IGNORECASE,
)
_FAILURE_SUBJECT = re.compile(
    r"undeliver|delivery (status|failure|failed|notification|problem|report|has failed)"
    r"|failure notice|returned mail|mail delivery failed|could not be delivered|non.?delivery",
    re.IGNORECASE,
)
_POLICY_WORDS = re.compile(
    r"spam|junk|block|black ?list|deny ?list|dnsbl|\brbl\b|reputation|dmarc|\bspf\b|\bdkim\b"
    r"|polic(y|ies)|not authori[sz]ed|access denied|relay(ing)? (access )?(denied|not permitted)"
    r"|not permitted to relay|rate limit|too many (messages|connections|recipients)"
    r"|virus|malware|phish|unsolicited",
    re.IGNORECASE,
)
_FULL_WORDS = re.compile(
    r"mailbox (is )?full|over ?quota|quota exceeded|exceeded (its |the )?(storage|quota)"
    r"|insufficient (system )?storage|mailbox size limit",
    re.IGNORECASE,
)
_UNKNOWN_WORDS = re.compile(
    r"user unknown|unknown (user|recipient|address|mailbox|local.?part)"
    r"|no such (user|mailbox|recipient|address|account|domain|person)"
    r"|(does not|doesn'?t|did not) exist|invalid (recipient|mailbox|address|user)"
    r"|(recipient|mailbox|address|user) not found|mailbox unavailable|no mailbox here"
    r"|not a valid (mailbox|recipient|user)|unroutea?ble|(host|domain) not found"
    r"|account (has been )?(closed|removed|deleted)",
    re.IGNORECASE,
)
_ADDRESS = re.compile(r"\S+@\S+")
_STATUS = re.compile(r"(?<![\d.])([45]\.\d{1,3}\.\d{1,3})(?!\.?\d)")
_REPLY_AND_STATUS = re.compile(r"(?<![\d.])[45]\d\d[ -]([45]\.\d{1,3}\.\d{1,3})(?!\.?\d)")
_SMTP_REPLY = re.compile(r"(?<![\d.])[45]\d\d(?=[ -])")
_INLINE_MESSAGE_ID = re.compile(r"^[ \t>]*message-id:[ \t]*(\S[^\n]{0,300})", re.I | re.M)
_INLINE_RETURN_PATH = re.compile(r"^[ \t>]*return-path:[ \t]*(<[^<>\n]{0,320}>)", re.I | re.M)
#: "dmarc=pass (p=none dis=none) header.from=example.com" in an Authentication-Results.
_DMARC_PASS = re.compile(r"\bdmarc\s*=\s*pass\b[^;]*?\bheader\.from\s*=\s*\"?([a-z0-9.-]+)", re.I)
_UNSUBSCRIBE_TOKEN = re.compile(r"\bunsubscribe(?:\s|%20)+([A-Za-z0-9._-]{8,200})(?![\w.-])", re.I)
