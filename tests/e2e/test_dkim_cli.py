"""`newsletter dkim keygen` makes a key and says what to publish and configure; with that
config, what send-test puts in the outbox is signed, and commands refuse a key they cannot
use before doing anything."""

from __future__ import annotations

import re
import stat
from pathlib import Path

from newsletter.delivery.transport import list_outbox
from newsletter.dkim import dns_record_value
from tests.conftest import COURSE_SLUG
from tests.dkim_verifiers import dkimpy_verifies, mail_dkim_result
from tests.e2e.conftest import admin_in, ok


def printed_config(stdout: str) -> dict[str, str]:
    """The `key = "value"` lines keygen prints, as NEWSLETTER_DKIM__* variables."""
    lines = re.findall(r'^\s+(domain|selector|key_path) = "(.*)"$', stdout, re.MULTILINE)
    return {f"NEWSLETTER_DKIM__{key.upper()}": value for key, value in lines}


def test_keygen_writes_a_private_key_and_prints_its_record_and_config(admin, tmp_path):
    stdout = ok(admin("dkim", "keygen", "--selector", "s2026"))

    key_path = tmp_path / "var" / "dkim" / "s2026.pem"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert "name:  s2026._domainkey.example.org" in stdout
    [value_line] = re.findall(r"^\s+value: (.*)$", stdout, re.MULTILINE)
    strings = re.findall(r'"([^"]*)"', value_line)
    assert len(strings) == 2  # a 2048-bit key's record is longer than one string's 255
    assert all(len(part) <= 255 for part in strings)
    assert "".join(strings) == dns_record_value(key_path.read_bytes())
    assert printed_config(stdout) == {
        "NEWSLETTER_DKIM__DOMAIN": "example.org",
        "NEWSLETTER_DKIM__SELECTOR": "s2026",
        "NEWSLETTER_DKIM__KEY_PATH": str(key_path),
    }


def test_keygen_keeps_an_existing_key_unless_forced(admin, tmp_path):
    out = tmp_path / "keys" / "mail.pem"
    ok(admin("dkim", "keygen", "--selector", "mail", "--domain", "news.example.org",
             "--bits", "1024", "--out", str(out)))  # fmt: skip
    first = out.read_bytes()

    refused = admin("dkim", "keygen", "--selector", "mail", "--out", str(out))

    assert refused.returncode == 1
    [line] = refused.stderr.strip().splitlines()
    assert line == f"error: {out} already exists; pass --force to replace it " + (
        "(its DNS record then stops matching it: to change keys, make one under a new "
        "--selector instead)"
    )
    assert out.read_bytes() == first
    ok(admin("dkim", "keygen", "--selector", "mail", "--out", str(out), "--force"))
    assert out.read_bytes() != first
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_keygen_refuses_a_selector_dns_cannot_hold(admin):
    result = admin("dkim", "keygen", "--selector", "my key")

    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: --selector: may hold only letters, digits, dots, hyphens and underscores "
        "(got 'my key')"
    )


def test_a_test_send_with_the_printed_config_is_signed_over_its_marked_subject(admin, tmp_path):
    dkim = printed_config(ok(admin("dkim", "keygen", "--selector", "s2026")))
    key = Path(dkim["NEWSLETTER_DKIM__KEY_PATH"]).read_bytes()

    ok(admin("send-test", f"lessons/{COURSE_SLUG}", "1", "--to", "bo@example.com", **dkim))

    [entry] = list_outbox(tmp_path / "var" / "outbox")
    assert entry.subject.startswith("[test] ")
    # As a mailbox gets it: the Return-Path its delivery added, then the signed message.
    return_path, _, message = entry.path.read_bytes().partition(b"\r\n")
    assert return_path.startswith(b"Return-Path: ")
    assert message.startswith(b"DKIM-Signature: ")
    assert dkimpy_verifies(message, key, "s2026", "example.org")
    assert mail_dkim_result(message, key, "s2026", "example.org") == "pass"


def test_commands_that_send_stop_at_once_on_a_key_they_cannot_use(tmp_path):
    admin = admin_in(tmp_path)  # no database yet
    missing = tmp_path / "nowhere.pem"
    dkim = {
        "NEWSLETTER_DKIM__DOMAIN": "example.org",
        "NEWSLETTER_DKIM__SELECTOR": "s2026",
        "NEWSLETTER_DKIM__KEY_PATH": str(missing),
    }
    for command in (["tick"], ["send-test", COURSE_SLUG, "1", "--to", "bo@example.com"]):
        result = admin(*command, **dkim)

        assert result.returncode == 1
        assert result.stderr.strip() == (
            f"error: dkim.key_path: {missing} does not exist; make a key with "
            "`newsletter dkim keygen --selector NAME`"
        )
    assert not (tmp_path / "newsletter.db").exists()  # nothing was started


def test_a_signing_domain_apart_from_the_sender_is_a_warning_not_a_failure(admin):
    dkim = printed_config(
        ok(admin("dkim", "keygen", "--selector", "s2026", "--domain", "mailer.example.net"))
    )

    result = admin("tick", **dkim)

    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith(
        "warning: dkim.domain mailer.example.net is neither sender.address's domain "
        "(example.org) nor a parent of it"
    )
