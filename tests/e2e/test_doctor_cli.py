"""`newsletter doctor` as an admin runs it: a real process on a config of the test's own,
looking its records up in a real (tiny, authoritative) DNS server on loopback."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from newsletter.dkim import dns_record_value, generate_private_key
from tests.dnsd import DnsServer
from tests.e2e.conftest import admin_in

CONFIG = """\
[sender]
name = "Spine Health Notes"
address = "course@spinenotes.net"
unsubscribe_address = "unsubscribe@spinenotes.net"
postal_address = "Spine Health Notes\\n12 Harbour Road\\nBristol BS1 4RN, UK"

[site]
base_url = "https://news.spinenotes.net"

[smtp]
host = "{relay}"

[bounces]
return_path = "bounces@spinenotes.net"

[inbound]
enabled = true

[dkim]
domain = "spinenotes.net"
selector = "s1"
key_path = "dkim.pem"
"""
DKIM_NAME = "s1._domainkey.spinenotes.net"


@pytest.fixture
def key(tmp_path: Path) -> bytes:
    pem = generate_private_key()
    (tmp_path / "dkim.pem").write_bytes(pem)
    return pem


@pytest.fixture
def doctor(tmp_path: Path, key: bytes):  # type: ignore[no-untyped-def]
    """Runs `newsletter --config <tmp>/config.toml doctor …` on a deployment done right."""
    return doctor_for(tmp_path, relay="smtp.relay.net")


def doctor_for(folder: Path, *, relay: str):  # type: ignore[no-untyped-def]
    config = folder / "config.toml"
    config.write_text(CONFIG.format(relay=relay), encoding="utf-8")
    newsletter = admin_in(folder)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return newsletter("--config", str(config), "doctor", *args)

    return run


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    with DnsServer() as server:
        yield server


def test_publishing_what_doctor_asks_for_makes_it_pass(doctor, dns_server: DnsServer):
    offline = doctor("--json")
    asked = [f["record"] for f in json.loads(offline.stdout)["findings"] if f["status"] == "todo"]
    for record in asked:
        assert record["type"] == "TXT"
        dns_server.txt.setdefault(record["name"], []).append(record["value"])

    checked = doctor("--dns", "--dns-server", dns_server.address)

    assert offline.returncode == 0, offline.stderr
    assert sorted(dns_server.txt) == ["_dmarc.spinenotes.net", DKIM_NAME, "spinenotes.net"]
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"DNS as {dns_server.address} answers" in checked.stdout
    assert checked.stdout.splitlines()[-1] == "13 ok"
    assert set(dns_server.questions) == set(dns_server.txt)


def test_a_published_key_that_is_not_ours_fails(doctor, dns_server: DnsServer, key: bytes):
    dns_server.txt |= {
        DKIM_NAME: [dns_record_value(generate_private_key())],
        "spinenotes.net": ["v=spf1 include:relay.net ~all"],
        "_dmarc.spinenotes.net": ["v=DMARC1; p=reject"],
    }

    result = doctor("--dns-server", dns_server.address)
    report = json.loads(doctor("--dns-server", dns_server.address, "--json").stdout)

    assert result.returncode == 1
    failed = [line for line in result.stdout.splitlines() if line.startswith("fail")]
    assert len(failed) == 1
    assert failed[0].startswith(f"fail  DKIM record     {DKIM_NAME} publishes another key: p=…")
    # Then the record that would fix it, exactly.
    assert f"{DKIM_NAME}  TXT  {dns_record_value(key)}" in result.stdout
    assert report["ok"] is False
    assert report["dns"] == {"server": dns_server.address, "answered": True, "problem": ""}
    assert [f["subject"] for f in report["findings"] if f["status"] == "fail"] == ["DKIM record"]


def test_with_no_resolver_answering_it_says_so_in_one_line_and_checks_the_rest(doctor):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        result = doctor("--dns", "--dns-server", f"127.0.0.1:{port}")

    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stderr
    assert lines[0] == (
        f"Mail from course@spinenotes.net (DNS unanswered: no answer from 127.0.0.1:{port} within "
        "4 s (asking for spinenotes.net); these need no DNS)"
    )
    assert lines[-1] == "10 ok, 3 todo"
    assert result.stderr == ""


def test_the_report_fits_one_screen(doctor):
    result = doctor()

    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) <= 25


def test_config_text_prints_literally(tmp_path: Path, key: bytes):
    doctor = doctor_for(tmp_path, relay="[bold red]relay[/]\\u001b[2J.example.net")

    result = doctor()

    assert "[bold red]relay[/]␛[2J.example.net:587, STARTTLS." in result.stdout
    assert "\x1b" not in result.stdout


def test_a_dns_server_that_is_not_an_address_is_a_usage_error(doctor):
    result = doctor("--dns-server", "127.0.0.1:notaport")

    assert result.returncode == 2
    assert "'notaport' is not a port number" in result.stderr
