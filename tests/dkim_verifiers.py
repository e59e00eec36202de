"""Two DKIM verifiers written apart from each other, each handed our public key instead of
asking DNS: dkimpy, and Perl's Mail::DKIM (tests/dkim_verify.pl)."""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

import dkim
import pytest

from newsletter.dkim import dns_record_name, dns_record_value, txt_strings

PERL_SCRIPT = Path(__file__).with_name("dkim_verify.pl")


def dkimpy_verifies(message: bytes, private_key_pem: bytes, selector: str, domain: str) -> bool:
    record = dns_record_value(private_key_pem).encode("ascii")
    name = f"{dns_record_name(selector, domain)}.".encode("ascii")

    def lookup(asked: bytes, timeout: int = 5) -> bytes | None:
        return record if asked.lower() == name.lower() else None

    return bool(dkim.verify(message, dnsfunc=lookup))


@functools.cache
def mail_dkim_missing() -> str:
    """Why Mail::DKIM cannot run here; '' when it can."""
    if shutil.which("perl") is None:
        return "perl is not installed"
    found = subprocess.run(["perl", "-MMail::DKIM", "-e", "1"], capture_output=True)
    if found.returncode != 0:
        return "Perl's Mail::DKIM is not installed (apt-get install libmail-dkim-perl)"
    return ""


def mail_dkim_result(message: bytes, private_key_pem: bytes, selector: str, domain: str) -> str:
    """Mail::DKIM's verdict on `message`: 'pass', or 'fail (...)', 'invalid (...)', 'none'.
    Skips the test when Perl or Mail::DKIM is absent."""
    if missing := mail_dkim_missing():
        pytest.skip(f"no independent DKIM verifier: {missing}")
    strings = txt_strings(dns_record_value(private_key_pem))
    checked = subprocess.run(
        ["perl", str(PERL_SCRIPT), dns_record_name(selector, domain), *strings],
        input=message,
        capture_output=True,
        timeout=60,
        check=False,
    )
    result = checked.stdout.decode("utf-8", "replace").strip()
    assert checked.returncode in (0, 1), checked.stderr.decode("utf-8", "replace")
    assert (checked.returncode == 0) == (result == "pass"), result
    return result
