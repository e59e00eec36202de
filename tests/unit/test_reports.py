"""inbound.reports: the raw bytes of one inbound email -> the bounces, complaints or
unsubscribe request it holds, over the messages of tests/fixtures/inbound/."""

from __future__ import annotations

import quopri
import re

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from newsletter.inbound.reports import (
    DIAGNOSTIC_MAX,
    REPORTS_MAX,
    SUBJECT_MAX,
    Report,
    ReportKind,
    UnsubscribeRequest,
    classify,
    enhanced_status,
    is_auto_reply,
    read_reports,
    read_unsubscribe_request,
)
from tests.fixtures.inbound import FIXTURES, crlf, fixture

RETURN_PATH = "bounces+7310-c4e1a09b2f6d@news.example.org"
#: As a subscriber typed it at signup; reports give it as it is stored.
RECIPIENT = "Bea.Santos@Example.COM"
STORED = "bea.santos@example.com"
MESSAGE_ID = "<0c4d1e2f3a4b5c6d7e8f9a0b1c2d3e4f@news.example.org>"
TOKEN = "7310-2.rT6uY1iO3pA5sD7fG9hJ2kL4zXc"
VALUES = {
    "return_path": RETURN_PATH,
    "recipient": RECIPIENT,
    "message_id": MESSAGE_ID,
    "token": TOKEN,
}

HARD = ReportKind.HARD_BOUNCE
SOFT = ReportKind.SOFT_BOUNCE
POLICY = ReportKind.POLICY_BOUNCE
DELAYED = ReportKind.DELAYED
COMPLAINT = ReportKind.COMPLAINT
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def the_report(name: str, **changes: str) -> Report:
    """The one report of a fixture filled with this module's values."""
    (report,) = read_reports(fixture(name, **(VALUES | changes)))
    return report


def raw_with(name: str, old: str, new: str) -> bytes:
    """A fixture with one passage rewritten (a variant not worth a file of its own)."""
    raw = fixture(name, **VALUES)
    assert old.encode() in raw, old
    return raw.replace(old.encode(), new.encode())


def assert_well_formed(report: Report) -> None:
    assert isinstance(report.kind, ReportKind)
    assert report.recipient is None or report.recipient == report.recipient.lower()
    assert report.status is None or re.fullmatch(r"[45]\.\d{1,3}\.\d{1,3}", report.status)
    assert len(report.diagnostic) <= DIAGNOSTIC_MAX
    assert not CONTROL.search(report.diagnostic)
    assert report.original_message_id is None or re.fullmatch(
        r"<[^<>\s]+>", report.original_message_id
    )
    assert re.fullmatch(r"[0-9a-f]{64}", report.fingerprint)


# -- bounces ---------------------------------------------------------------------------


#: fixture -> kind, status, whether it quotes our Message-ID and our return path.
BOUNCES = {
    "postfix-user-unknown": (HARD, "5.1.1", True, True),
    "postfix-delayed": (DELAYED, "4.4.1", True, True),
    "postfix-policy-reject": (POLICY, "5.7.1", True, True),
    "exim-text-bounce": (HARD, None, True, True),
    "qmail-bounce": (HARD, "5.1.1", True, True),
    "gmail-dsn-no-such-user": (HARD, "5.1.1", True, True),
    "exchange-recipient-not-found": (HARD, "5.1.10", True, True),
    "mailbox-full": (SOFT, "5.2.2", True, True),
    "dmarc-reject": (POLICY, "5.7.26", True, True),
    "hostile-truncated-mime": (HARD, "5.1.1", False, True),
    "hostile-no-boundary": (HARD, "5.1.1", True, True),
    "hostile-long-header": (SOFT, "5.2.2", True, True),
    "hostile-nul-bytes": (DELAYED, "4.4.1", True, True),
}


@pytest.mark.parametrize("name", BOUNCES)
def test_each_bounce_names_its_kind_recipient_status_and_our_original(name: str) -> None:
    kind, status, quotes_message_id, quotes_return_path = BOUNCES[name]
    report = the_report(name)
    assert report.kind == kind
    assert report.recipient == STORED
    assert report.status == status
    assert report.original_message_id == (MESSAGE_ID if quotes_message_id else None)
    assert report.original_return_path == (RETURN_PATH if quotes_return_path else None)
    assert_well_formed(report)


def test_a_postfix_5_1_1_dsn_is_a_hard_bounce_for_its_final_recipient() -> None:
    report = the_report("postfix-user-unknown")
    assert (report.kind, report.recipient, report.status) == (HARD, STORED, "5.1.1")
    assert report.diagnostic == (
        f"550 5.1.1 <{RECIPIENT}>: Recipient address rejected: "
        "User unknown in virtual mailbox table"
    )


def test_the_original_recipient_is_preferred_to_where_a_forward_led() -> None:
    raw = raw_with(
        "postfix-user-unknown",
        f"Final-Recipient: rfc822; {RECIPIENT}",
        "Final-Recipient: rfc822; bea@old-job.example.com",
    )
    (report,) = read_reports(raw)
    assert report.recipient == STORED
    (report,) = read_reports(raw.replace(f"Original-Recipient: rfc822;{RECIPIENT}\n".encode(), b""))
    assert report.recipient == "bea@old-job.example.com"


def test_a_delay_warning_is_only_a_warning() -> None:
    report = the_report("postfix-delayed")
    assert report.kind == DELAYED
    assert report.diagnostic == "connect to mx.example.net[203.0.113.25]:25: Connection timed out"


def test_a_dsn_of_a_successful_relay_reports_nothing() -> None:
    assert read_reports(fixture("postfix-relayed", **VALUES)) == []


def test_a_dsn_gives_one_report_per_failed_or_delayed_recipient_only() -> None:
    block = f"Final-Recipient: rfc822; {RECIPIENT}\nOriginal-Recipient: rfc822;{RECIPIENT}\n"
    raw = raw_with(
        "postfix-user-unknown",
        block,
        "Final-Recipient: rfc822; carl@example.org\nAction: delivered\nStatus: 2.0.0\n\n"
        "Final-Recipient: rfc822; dora@example.org\nAction: delayed\nStatus: 4.2.2\n\n" + block,
    )
    reports = read_reports(raw)
    assert [(r.recipient, r.kind) for r in reports] == [
        ("dora@example.org", DELAYED),
        (STORED, HARD),
    ]
    assert len({report.fingerprint for report in reports}) == 2


def test_a_dsn_without_a_diagnostic_code_takes_the_reason_from_its_notice() -> None:
    raw = raw_with(
        "postfix-user-unknown",
        f"Diagnostic-Code: smtp; 550 5.1.1 <{RECIPIENT}>: Recipient address rejected:\n"
        "    User unknown in virtual mailbox table\n",
        "",
    ).replace(b"Status: 5.1.1", b"Status: 5.0.0")
    (report,) = read_reports(raw)
    assert (report.kind, report.status) == (HARD, "5.1.1")
    assert report.diagnostic == (
        f"550 5.1.1 <{RECIPIENT}>: Recipient address rejected: User unknown in virtual "
        "mailbox table (in reply to RCPT TO command)"
    )


def test_a_blocklist_rejection_is_about_us_not_the_subscriber() -> None:
    report = the_report("postfix-policy-reject")
    assert report.kind == POLICY
    assert "blocked using dnsbl.example-reputation.org" in report.diagnostic


def test_a_dmarc_rejection_never_counts_against_the_subscriber() -> None:
    report = the_report("dmarc-reject")
    assert (report.kind, report.status) == (POLICY, "5.7.26")
    assert "DMARC policy" in report.diagnostic


def test_an_exchange_dmarc_rejection_5_7_509_is_a_policy_bounce_too() -> None:
    raw = raw_with(
        "exchange-recipient-not-found",
        "Status: 5.1.10\nDiagnostic-Code: smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound;"
        " Recipient not\n found by SMTP address lookup",
        "Status: 5.7.509\nDiagnostic-Code: smtp;550 5.7.509 Access denied, sending domain\n"
        " news.example.org does not pass DMARC verification and has a DMARC policy of reject.",
    )
    (report,) = read_reports(raw)
    assert (report.kind, report.status, report.recipient) == (POLICY, "5.7.509", STORED)


def test_a_full_mailbox_is_a_soft_bounce() -> None:
    assert the_report("mailbox-full").kind == SOFT


def test_a_gmail_dsn_names_our_message_even_in_its_own_fields() -> None:
    report = the_report("gmail-dsn-no-such-user")
    assert report.diagnostic.startswith(
        "550-5.1.1 The email account that you tried to reach does not exist."
    )
    # Without the attached copy, Gmail's X-Original-Message-ID still names it.
    raw = fixture("gmail-dsn-no-such-user", **VALUES)
    without_copy = raw[: raw.index(b"Content-Type: message/rfc822")]
    (report,) = read_reports(without_copy)
    assert report.original_message_id == MESSAGE_ID
    assert report.original_return_path is None


def test_an_exchange_ndr_5_1_10_is_a_hard_bounce() -> None:
    report = the_report("exchange-recipient-not-found")
    assert report.diagnostic == (
        "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup"
    )


def test_an_exim_text_bounce_is_hard_by_the_reason_under_its_address() -> None:
    report = the_report("exim-text-bounce")
    assert (report.kind, report.status) == (HARD, None)
    assert report.diagnostic == "550 unknown user, mailbox not here"


def test_a_qmail_bounce_takes_its_status_from_the_reason() -> None:
    report = the_report("qmail-bounce")
    assert report.diagnostic == "Sorry, no mailbox here by that name. (#5.1.1)"


@pytest.mark.parametrize(
    "from_line",
    [
        # 8-bit bytes: compat32 gives a Header object, which one detector lowers as a str.
        "From: MAILER-DAEMON@mail.example.com (Système de messagerie)\n",
        # None at all, where another detector takes the first address unguarded.
        "",
    ],
    ids=["8-bit From", "no From"],
)
def test_a_text_bounce_with_a_broken_from_is_still_read(from_line: str) -> None:
    """flufl.bounce stops at the first detector that raises: none may, or all is lost."""
    raw = raw_with("qmail-bounce", "From: MAILER-DAEMON@mail.example.com\n", from_line)
    (report,) = read_reports(raw)
    assert (report.kind, report.recipient, report.status) == (HARD, STORED, "5.1.1")


def test_a_text_bounce_that_was_only_deferred_is_soft() -> None:
    raw = raw_with(
        "exim-text-bounce",
        "550 unknown user, mailbox not here",
        "451 4.3.0 temporary local problem, retry timeout exceeded",
    )
    (report,) = read_reports(raw)
    assert (report.kind, report.status) == (SOFT, "4.3.0")


@pytest.mark.parametrize(
    ("status", "diagnostic", "kind"),
    [
        ("5.1.1", "550 5.1.1 user unknown", HARD),
        ("5.1.10", "RESOLVER.ADR.RecipientNotFound", HARD),
        ("5.1.2", "Host or domain name not found", HARD),
        ("5.4.4", "Unrouteable address", HARD),
        ("5.2.2", "Mailbox full", SOFT),
        ("4.2.2", "over quota", SOFT),
        ("5.2.1", "The account is disabled", SOFT),
        ("4.4.1", "Connection timed out", SOFT),
        ("4.7.0", "Try again later, rate limited", POLICY),
        ("5.7.1", "Relaying denied", POLICY),
        ("5.7.26", "Unauthenticated email is not accepted", POLICY),
        ("5.7.509", "does not pass DMARC verification", POLICY),
        ("4.4.7", "blocked: message expired after listing", POLICY),
        # Our own sender address refused: about us (RFC 3463 X.1.7, X.1.8).
        ("5.1.8", "Sender address rejected: Domain not found", POLICY),
        # 5.0.0 says only "failed": the words decide.
        ("5.0.0", "550 Requested action not taken: mailbox unavailable", HARD),
        ("5.0.0", "554 No such user here", HARD),
        ("5.0.0", "554 Message rejected as spam", POLICY),
        ("5.0.0", "550 Rejected by the recipient's policy", POLICY),
        ("5.0.0", "552 Mailbox is full", SOFT),
        ("5.0.0", "550 Administrative prohibition", SOFT),
        (None, "user unknown", HARD),
        (None, "", SOFT),
        ("5.3.4", "Message too big for system", SOFT),
        # The words of an address are not the server's: spam-trap@ is a mailbox's name.
        ("5.0.0", "550 <spam-trap@example.net>: no such user", HARD),
        ("5.0.0", "550 <blocked.user@example.net>... Mailbox full", SOFT),
        # Not an RFC 3463 code: the words still decide, nothing raises.
        ("5.1", "user unknown", HARD),
        ("garbage", "", SOFT),
    ],
)
def test_classify_by_code_then_words(status: str | None, diagnostic: str, kind: ReportKind) -> None:
    assert classify(status, diagnostic) == kind


def test_classify_says_delayed_whatever_the_code() -> None:
    assert classify("5.1.1", "user unknown", delayed=True) == DELAYED


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("550 5.1.1 <ana@example.net>: Recipient address rejected", "5.1.1"),
        ("550-5.7.26 Unauthenticated email", "5.7.26"),
        ("Sorry, no mailbox here by that name. (#5.1.1)", "5.1.1"),
        ("552 5.2.2 Mailbox full (quota 5.4.1 GB)", "5.2.2"),
        ("smtp; 550 #5.1.0 Address rejected", "5.1.0"),
        ("5.01.001 leading zeros", "5.1.1"),
        ("connect to 203.0.113.45:25: Connection timed out", None),
        ("Postfix 2.5.6, Exim 4.96, Exchange 15.20.8356.13", None),
        ("2.0.0 Ok: queued", None),
        ("", None),
    ],
)
def test_enhanced_status_is_found_in_a_reason(text: str, status: str | None) -> None:
    assert enhanced_status(text) == status


# -- complaints ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["arf-yahoo-aol", "arf-headers-only", "arf-jmrp"])
def test_an_arf_abuse_report_is_a_complaint_about_our_message(name: str) -> None:
    report = the_report(name)
    assert (report.kind, report.recipient, report.status) == (COMPLAINT, STORED, None)
    assert report.original_message_id == MESSAGE_ID
    # Original-Mail-From: the envelope sender, our VERP address.
    assert report.original_return_path == RETURN_PATH
    assert report.diagnostic.startswith("abuse report from ")
    assert_well_formed(report)


def test_a_jmrp_report_without_original_rcpt_to_names_the_original_to() -> None:
    raw = fixture("arf-jmrp", **VALUES)
    assert b"Original-Rcpt-To" not in raw
    assert read_reports(raw)[0].recipient == STORED


def test_a_not_spam_report_is_no_complaint() -> None:
    assert read_reports(fixture("arf-not-spam", **VALUES)) == []


@pytest.mark.parametrize(
    ("feedback_type", "complaints"),
    [("fraud", 1), ("virus", 1), ("other", 1), ("auth-failure", 0), ("", 0)],
)
def test_which_feedback_types_are_complaints(feedback_type: str, complaints: int) -> None:
    raw = raw_with("arf-headers-only", "Feedback-Type: abuse", f"Feedback-Type: {feedback_type}")
    assert len(read_reports(raw)) == complaints


def test_a_complaint_naming_no_recipient_still_counts_for_its_message() -> None:
    raw = raw_with("arf-headers-only", f"Original-Rcpt-To: <{RECIPIENT}>\n", "")
    raw = raw.replace(f"To: {RECIPIENT}\n".encode(), b"To: undisclosed-recipients:;\n")
    (report,) = read_reports(raw)
    assert (report.kind, report.recipient) == (COMPLAINT, None)
    assert report.original_message_id == MESSAGE_ID


# -- what is none of these -------------------------------------------------------------


def test_a_vacation_notice_to_the_return_path_is_no_bounce() -> None:
    raw = fixture("vacation-auto-reply", **VALUES)
    assert read_reports(raw) == []
    assert is_auto_reply(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\r\n\r\n",
        b"From: friend@example.com\r\nSubject: Thanks!\r\n\r\nLoved lesson 3.\r\n",
        # A person's words that look like a bounce's: only a mail system's notice is read.
        b"From: friend@example.com\r\nSubject: hello\r\n\r\n"
        b"Hi. This is the qmail-send program at home.\r\n\r\n<ana@example.net>:\r\n"
        b"Sorry, no mailbox here by that name. (#5.1.1)\r\n",
    ],
    ids=["empty", "blank lines", "a reply", "a reply quoting a bounce"],
)
def test_mail_that_reports_nothing_gives_no_reports(raw: bytes) -> None:
    assert read_reports(raw) == []


# -- fingerprints ----------------------------------------------------------------------


def relayed_again(raw: bytes) -> bytes:
    """The same message as another relay hands it on: more trace headers, CRLF."""
    return crlf(
        b"Received: from relay2.example.org (relay2.example.org [192.0.2.9])\n"
        b"\tby mail.news.example.org with ESMTPS id 77aa; Tue, 14 Jan 2025 09:31:00 +0000\n"
        b"Delivered-To: " + RETURN_PATH.encode() + b"\n"
        b"X-Spam-Status: No, score=-0.1\n" + raw
    )


@pytest.mark.parametrize("name", [*BOUNCES, "arf-yahoo-aol", "arf-headers-only", "arf-jmrp"])
def test_the_same_report_relayed_twice_has_one_fingerprint(name: str) -> None:
    raw = fixture(name, **VALUES)
    assert read_reports(relayed_again(raw)) == read_reports(raw)


def test_the_same_dsn_re_encoded_in_transit_has_one_fingerprint() -> None:
    raw = fixture("postfix-policy-reject", **VALUES)
    # A relay without 8BITMIME turns the quoted original's 8-bit text into
    # quoted-printable (RFC 6152 3): other bytes, the same report.
    head, _, body = raw.rpartition(b"Content-Transfer-Encoding: 8bit\n\n")
    body, boundary, tail = body.partition(b"\n--91E07B3C25")
    seven_bit = (
        head.replace(b"Content-Transfer-Encoding: 8bit", b"Content-Transfer-Encoding: 7bit")
        + b"Content-Transfer-Encoding: quoted-printable\n\n"
        + quopri.encodestring(body)
        + boundary
        + tail
    )
    assert seven_bit.isascii()
    (report,) = read_reports(seven_bit)
    assert report == read_reports(raw)[0]


def test_different_reports_about_one_recipient_have_different_fingerprints() -> None:
    names = [name for name in FIXTURES if read_reports(fixture(name, **VALUES))]
    fingerprints = {the_report(name).fingerprint: name for name in names}
    # hostile-long-header is mailbox-full with one more header: the same report.
    assert len(fingerprints) == len(names) - 1
    first = the_report("postfix-user-unknown")
    # The same bounce for two messages differs by the message it quotes.
    other = the_report("postfix-user-unknown", message_id="<other@news.example.org>")
    assert other.fingerprint != first.fingerprint


# -- unsubscribe requests --------------------------------------------------------------


def test_a_mailto_unsubscribe_as_gmail_sends_it_names_its_token() -> None:
    raw = fixture("unsubscribe-gmail", **VALUES)
    request = read_unsubscribe_request(raw)
    assert (request.sender, request.token) == (STORED, TOKEN)
    assert request.subject == f"unsubscribe {TOKEN}"
    assert not is_auto_reply(raw)
    assert read_reports(raw) == []


def test_an_unsubscribe_typed_by_hand_has_no_token_but_its_sender() -> None:
    raw = fixture("unsubscribe-by-hand", **VALUES)
    request = read_unsubscribe_request(raw)
    assert (request.sender, request.token, request.subject) == (STORED, None, "Unsubscribe")
    assert not is_auto_reply(raw)


@pytest.mark.parametrize(
    ("subject", "token"),
    [
        (f"unsubscribe {TOKEN}", TOKEN),
        (f"Unsubscribe {TOKEN}", TOKEN),
        (f"Re: unsubscribe {TOKEN}", TOKEN),
        # A client that did not decode the mailto: subject.
        (f"unsubscribe%20{TOKEN}", TOKEN),
        # RFC 2047, as a client may send any subject.
        (f"=?utf-8?q?unsubscribe_{TOKEN}?=", TOKEN),
        ("unsubscribe me please", None),
        ("Unsubscribe", None),
        ("", None),
    ],
)
def test_the_token_is_the_word_after_unsubscribe(subject: str, token: str | None) -> None:
    raw = f"From: bea@example.com\r\nSubject: {subject}\r\n\r\n".encode()
    assert read_unsubscribe_request(raw).token == token


@pytest.mark.parametrize(
    ("sender", "address"),
    [
        ("Bea <Bea.Santos@Example.COM>", STORED),
        ('"Santos, Bea" <bea.santos@example.com>', STORED),
        ("=?utf-8?q?B=C3=A9a?= <bea.santos@example.com>", STORED),
        # The comma is the name's, once decoded: still one address.
        ("=?utf-8?q?Santos=2C_B=C3=A9a?= <bea.santos@example.com>", STORED),
        ("bea.santos@example.com (Bea)", STORED),
        ("bea@example.com, carl@example.com", None),
        ("Bea <not an address>", None),
        ("", None),
    ],
)
def test_the_sender_is_one_normalised_address_or_none(sender: str, address: str | None) -> None:
    raw = f"From: {sender}\r\nSubject: unsubscribe\r\n\r\n".encode()
    assert read_unsubscribe_request(raw).sender == address


def test_a_subject_in_an_unknown_charset_is_still_read() -> None:
    request = read_unsubscribe_request(fixture("hostile-bad-charset", **VALUES))
    assert (request.sender, request.token) == (STORED, TOKEN)
    assert request.subject == f"Désabonnement unsubscribe {TOKEN}"


def test_the_subject_is_one_short_line() -> None:
    raw = b"From: a@example.com\r\nSubject: one\r\n two\x1b[2J\x00 " + b"x" * 5000 + b"\r\n\r\n"
    subject = read_unsubscribe_request(raw).subject
    assert subject.startswith("one two [2J ")
    assert len(subject) == SUBJECT_MAX
    assert not CONTROL.search(subject)


def test_the_same_unsubscribe_twice_has_one_fingerprint() -> None:
    raw = fixture("unsubscribe-gmail", **VALUES)
    first = read_unsubscribe_request(raw)
    assert read_unsubscribe_request(relayed_again(raw)).fingerprint == first.fingerprint
    later = raw.replace(b"Date: Mon, 3 Feb 2025 17:14:11", b"Date: Mon, 3 Feb 2025 17:20:40")
    assert read_unsubscribe_request(later).fingerprint != first.fingerprint


# -- auto-replies ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "automatic"),
    [
        ("Auto-Submitted: auto-replied", True),
        ("Auto-Submitted: auto-generated", True),
        ("Auto-Submitted: no", False),
        ("X-Autoreply: yes", True),
        ("X-Autorespond: Vacation", True),
        ("Precedence: bulk", True),
        ("Precedence: junk", True),
        ("Precedence: auto_reply", True),
        ("Precedence: first-class", False),
        ("Subject: Automatic reply: Where sciatica often starts", True),
        ("Subject: Out of Office: back on Monday", True),
        ("Subject: Re: Where sciatica often starts", False),
        ("X-Mailer: Thunderbird", False),
    ],
)
def test_is_auto_reply(headers: str, automatic: bool) -> None:
    raw = f"From: bea@example.com\r\n{headers}\r\n\r\nbody\r\n".encode()
    assert is_auto_reply(raw) is automatic


# -- line endings and hostile input ------------------------------------------------------


@pytest.mark.parametrize("name", FIXTURES)
def test_each_fixture_reads_the_same_with_crlf_as_with_lf(name: str) -> None:
    raw = fixture(name, **VALUES)
    assert read_reports(crlf(raw)) == read_reports(raw)
    assert read_unsubscribe_request(crlf(raw)) == read_unsubscribe_request(raw)
    assert is_auto_reply(crlf(raw)) == is_auto_reply(raw)


def test_broken_mime_still_gives_what_it_says() -> None:
    # Cut off inside its delivery report: the recipient block is still there.
    truncated = the_report("hostile-truncated-mime")
    assert truncated.diagnostic == f"550 5.1.1 <{RECIPIENT}>: Recipient addr"
    # No boundary: the report's fields are found in the text.
    assert the_report("hostile-no-boundary").kind == HARD


def test_nul_bytes_and_8_bit_text_never_reach_the_diagnostic() -> None:
    report = the_report("hostile-nul-bytes")
    assert report.diagnostic.startswith("délai dépassé connect to mx.example.net")


def test_deeply_nested_parts_give_nothing_and_raise_nothing() -> None:
    raw = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (level, level)
        for level in range(3000)
    )
    assert read_reports(raw) == []
    assert isinstance(read_unsubscribe_request(raw), UnsubscribeRequest)


def test_a_dsn_naming_thousands_of_recipients_gives_a_bounded_number() -> None:
    blocks = b"".join(
        b"Final-Recipient: rfc822; user%d@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        % number
        for number in range(2000)
    )
    raw = (
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: message/delivery-status\r\n\r\n" + blocks + b"--b--\r\n"
    )
    assert len(read_reports(raw)) == REPORTS_MAX


def check_never_raises(raw: bytes) -> None:
    for report in read_reports(raw):
        assert_well_formed(report)
    request = read_unsubscribe_request(raw)
    assert len(request.subject) <= SUBJECT_MAX
    assert not CONTROL.search(request.subject)
    assert isinstance(is_auto_reply(raw), bool)


HOSTILE = hypothesis_settings(
    max_examples=150,
    deadline=None,
    database=None,  # no .hypothesis/ folder in the repository
    suppress_health_check=[HealthCheck.too_slow],
)


@HOSTILE
@given(st.binary(max_size=4000))
def test_hostile_input_never_raises_random_bytes(raw: bytes) -> None:
    check_never_raises(raw)


@HOSTILE
@given(
    name=st.sampled_from(FIXTURES),
    cuts=st.lists(
        st.tuples(st.floats(0, 1), st.integers(0, 40), st.binary(max_size=12)), max_size=6
    ),
    line_endings=st.sampled_from(["lf", "crlf", "cr"]),
)
def test_hostile_input_never_raises_mutated_fixtures(
    name: str, cuts: list[tuple[float, int, bytes]], line_endings: str
) -> None:
    """Each fixture with bytes deleted and inserted at random places, and its line
    endings swapped: truncated boundaries, broken headers, stray 8-bit bytes."""
    raw = fixture(name, **VALUES)
    raw = {"lf": raw, "crlf": crlf(raw), "cr": raw.replace(b"\n", b"\r")}[line_endings]
    for where, deleted, inserted in cuts:
        at = int(where * len(raw))
        raw = raw[:at] + inserted + raw[at + deleted :]
    check_never_raises(raw)
