"""A test send's subject starts with '[test] ', encoded and folded as any subject is."""

from __future__ import annotations

from email import message_from_bytes, policy

from newsletter.headers import unstructured
from newsletter.sendtest import mark_as_test


def message(subject: str) -> bytes:
    head = "From: a@example.com\r\n" + unstructured("Subject", subject) + "To: b@example.com\r\n"
    return (head + "\r\nSubject: in the body, left alone\r\n").encode("ascii")


def test_a_plain_subject_gets_the_prefix_and_nothing_else_changes():
    marked = mark_as_test(message("Where sciatica often starts"))
    assert marked == message("[test] Where sciatica often starts")


def test_a_long_folded_subject_in_another_script_is_replaced_whole():
    subject = "Warum das Bein schwach bleibt, und was Nerven heilen lässt, Schritt für Schritt"
    marked = mark_as_test(message(subject))
    parsed = message_from_bytes(marked, policy=policy.default)
    assert parsed["Subject"] == "[test] " + subject
    assert parsed["To"] == "b@example.com"
    assert marked.endswith(b"\r\n\r\nSubject: in the body, left alone\r\n")
    assert all(len(line) <= 78 for line in marked.split(b"\r\n"))
