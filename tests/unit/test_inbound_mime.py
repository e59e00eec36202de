"""inbound.mime: reading mail that may be broken or hostile."""

from __future__ import annotations

from email import message_from_bytes
from email.policy import compat32

import pytest

from newsletter.inbound.mime import content_hash, decode, decode_words, header, one_line, parts


@pytest.mark.parametrize(
    ("encoded", "text"),
    [
        ("=?utf-8?q?B=C3=A9a_Santos?=", "Béa Santos"),
        ("=?UTF-8?B?QsOpYQ==?=", "Béa"),
        ("=?utf-8?b?QsOpYQ?=", "Béa"),  # padding left off
        # RFC 2047 6.2: the space between two encoded words is not part of the text.
        ("=?utf-8?q?un?= =?utf-8?q?subscribe?=", "unsubscribe"),
        ("=?iso-8859-1?q?D=E9sabonnement?=", "Désabonnement"),
        ("=?utf-8*fr?q?d=C3=A9j=C3=A0?=", "déjà"),  # RFC 2231 language suffix
        ("=?x-no-such-charset?q?caf=C3=A9?=", "café"),  # read as UTF-8
        ("=?utf-8?q?=FF=FE?=", "ÿþ"),  # not UTF-8 either: Latin-1
        ("=?utf-8?b?!!!?=", "=?utf-8?b?!!!?="),  # not base64: left as it was
        ("plain text, =? not a word", "plain text, =? not a word"),
    ],
)
def test_decode_words(encoded: str, text: str) -> None:
    assert decode_words(encoded) == text


def test_decode_falls_back_without_raising() -> None:
    assert decode("café".encode(), "utf-8") == "café"
    assert decode(b"caf\xe9", "utf-8") == "café"
    assert decode(b"abc", "base64") == "abc"  # a codec that is no text encoding
    assert decode(b"abc", None) == "abc"


def test_a_header_with_8_bit_bytes_is_read_as_utf_8_or_latin_1() -> None:
    message = message_from_bytes(
        b"From: J\xc3\xa9r\xc3\xb4me <j@example.com>\nTo: M\xfcller <m@example.com>\n"
        b"Subject: one\n two\n\n",
        policy=compat32,
    )
    assert header(message, "from") == "Jérôme <j@example.com>"
    assert header(message, "to") == "Müller <m@example.com>"
    assert header(message, "subject") == "one two"  # unfolded
    assert header(message, "cc") == ""


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("one\r\n two\tthree", "one two three"),
        ("bell\x07 nul\x00 esc\x1b[2J", "bell nul esc [2J"),
        ("right\u202eto left\u2066", "right to left"),
        ("a" * 30, "a" * 9 + "…"),
    ],
)
def test_one_line(text: str, line: str) -> None:
    assert one_line(text, 10 if len(text) == 30 else 100) == line


def test_parts_are_walked_without_recursion_and_up_to_a_limit() -> None:
    body = b"".join(b"--b\nContent-Type: text/plain\n\npart %d\n" % n for n in range(500))
    message = message_from_bytes(
        b'Content-Type: multipart/mixed; boundary="b"\n\n' + body + b"--b--\n", policy=compat32
    )
    assert len(list(parts(message))) == 200


def test_the_content_hash_ignores_what_relays_change() -> None:
    raw = (
        b"Date: Tue, 14 Jan 2025 09:30:04 +0000\nFrom: a@example.com\nSubject: s\n"
        b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
        b"caf\xc3\xa9 au lait\n"
    )
    relayed = b"Received: by relay.example.org; Tue, 14 Jan 2025 09:31:00 +0000\r\n" + (
        raw.replace(b"8bit", b"quoted-printable")
        .replace(b"caf\xc3\xa9", b"caf=C3=A9")
        .replace(b"\n", b"\r\n")
    )
    assert content_hash(message_from_bytes(relayed, policy=compat32)) == content_hash(
        message_from_bytes(raw, policy=compat32)
    )
    other = raw.replace(b"09:30:04", b"09:40:04")
    assert content_hash(message_from_bytes(other, policy=compat32)) != content_hash(
        message_from_bytes(raw, policy=compat32)
    )
