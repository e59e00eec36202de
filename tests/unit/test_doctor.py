"""doctor.diagnose: a deployment's settings (and the TXT records it publishes) -> what the
admin is told, and which exact records to publish."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from newsletter.addresses import dmarc_aligned, organisational_domain
from newsletter.config import Settings
from newsletter.dkim import dns_record_value, generate_private_key
from newsletter.doctor import (
    DnsRecord,
    Finding,
    KeyFile,
    Status,
    diagnose,
    names_to_look_up,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "dkim"
KEY = generate_private_key(2048)
OTHER_KEY = generate_private_key(2048)
GOOD_KEY = KeyFile(KEY)
KEY_1024 = generate_private_key(1024)
#: cryptography makes no key under 1024 bits, so this one was made by `openssl genrsa 512`.
KEY_512 = (FIXTURES / "rsa-512.pem").read_bytes()
ED25519_KEY = ed25519.Ed25519PrivateKey.generate().private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
)

#: A deployment done right: https, its own domain, VERP, the receiver on, DKIM aligned.
GOOD: dict[str, Any] = {
    "sender": {
        "name": "Spine Health Notes",
        "address": "course@spinenotes.net",
        "unsubscribe_address": "unsubscribe@spinenotes.net",
        "postal_address": "Spine Health Notes\n12 Harbour Road\nBristol BS1 4RN, UK",
    },
    "site": {"base_url": "https://news.spinenotes.net"},
    "smtp": {"host": "smtp.relay.net", "port": 587, "tls": "starttls"},
    "bounces": {"return_path": "bounces@spinenotes.net"},
    "inbound": {"enabled": True},
    "dkim": {"domain": "spinenotes.net", "selector": "s1", "key_path": "/keys/dkim.pem"},
    "secret_key": "a-secret-key-long-enough-to-sign",
}
DKIM_NAME = "s1._domainkey.spinenotes.net"
#: What the good deployment publishes when all is well.
PUBLISHED = {
    DKIM_NAME: [dns_record_value(KEY)],
    "spinenotes.net": ["v=spf1 a:smtp.relay.net ~all", "google-site-verification=abc"],
    "_dmarc.spinenotes.net": ["v=DMARC1; p=quarantine; rua=mailto:dmarc@spinenotes.net"],
}


def settings_with(**changes: Any) -> Settings:
    """GOOD with some keys of some sections changed; a section given as None is dropped."""
    values = {
        section: dict(keys) if isinstance(keys, dict) else keys for section, keys in GOOD.items()
    }
    for section, keys in changes.items():
        if keys is None:
            values.pop(section)
        elif isinstance(keys, dict):
            values[section] = {**values.get(section, {}), **keys}
        else:
            values[section] = keys
    return Settings(**values)


def findings(
    settings: Settings,
    records: dict[str, list[str]] | None = None,
    key: KeyFile = GOOD_KEY,
) -> dict[str, Finding]:
    """Each subject's finding; of DMARC, which has one per organisation of From, the first."""
    by_subject: dict[str, Finding] = {}
    for finding in diagnose(settings, records=records, key_file=key):
        by_subject.setdefault(finding.subject, finding)
    return by_subject


def test_a_good_deployment_has_nothing_wrong_and_three_records_to_publish():
    found = findings(settings_with())

    assert {f.subject for f in found.values() if f.status is not Status.OK} == {
        "DKIM record",
        "SPF record",
        "DMARC record",
    }
    assert {f.status for f in found.values() if f.record} == {Status.TODO}
    assert found["DKIM record"].record == DnsRecord(DKIM_NAME, "TXT", dns_record_value(KEY))
    assert found["SPF record"].record == DnsRecord(
        "spinenotes.net", "TXT", "v=spf1 a:smtp.relay.net ~all"
    )
    assert found["DMARC record"].record == DnsRecord(
        "_dmarc.spinenotes.net", "TXT", "v=DMARC1; p=none; rua=mailto:dmarc-reports@spinenotes.net"
    )


def test_a_good_deployment_that_published_its_records_is_all_ok():
    found = findings(settings_with(), PUBLISHED)

    assert {f.subject: f.status for f in found.values() if f.status is not Status.OK} == {}
    assert "p=quarantine" in found["DMARC record"].sentence


@pytest.mark.parametrize(
    ("changes", "subject", "status", "words"),
    [
        pytest.param(
            {"site": {"base_url": "http://news.spinenotes.net"}},
            "base_url",
            Status.FAIL,
            "plain http",
            id="http links through a relay fail",
        ),
        pytest.param(
            {"site": {"base_url": "http://localhost:8000"}, "smtp": {"host": ""}},
            "base_url",
            Status.WARN,
            "fine for the development outbox",
            id="http links into the development outbox only warn",
        ),
        pytest.param(
            {"sender": {"postal_address": "Spine Health Notes\n1 Example Street\nSpringfield"}},
            "postal address",
            Status.WARN,
            "shipped example",
            id="the shipped postal address warns",
        ),
        pytest.param(
            {"sender": {"postal_address": " \n  \n"}},
            "postal address",
            Status.FAIL,
            "blank",
            id="a blank postal address fails",
        ),
        pytest.param(
            {"sender": {"address": "course@example.org"}},
            "addresses",
            Status.WARN,
            "course@example.org",
            id="an example.org From warns",
        ),
        pytest.param(
            {"sender": {"transactional_address": "hello@mail.example.net"}},
            "addresses",
            Status.WARN,
            "hello@mail.example.net",
            id="a subdomain of example.net warns too",
        ),
        pytest.param(
            {"sender": {"unsubscribe_address": "leave@example.com"}},
            "addresses",
            Status.WARN,
            "leave@example.com",
            id="an example.com unsubscribe address warns",
        ),
        pytest.param(
            {"smtp": {"tls": "none", "port": 25}},
            "relay",
            Status.FAIL,
            "clear text",
            id="plain SMTP to a remote relay fails",
        ),
        pytest.param(
            {"smtp": {"host": "127.0.0.1", "tls": "none", "port": 25}},
            "relay",
            Status.OK,
            "on this machine",
            id="plain SMTP to a relay on this machine is fine",
        ),
        pytest.param(
            {"smtp": {"host": "localhost", "tls": "none", "port": 25}},
            "relay",
            Status.OK,
            "on this machine",
            id="localhost is this machine",
        ),
        pytest.param(
            {"smtp": {"host": ""}},
            "relay",
            Status.WARN,
            "development outbox",
            id="no relay sends nothing",
        ),
        pytest.param(
            {"smtp": {"tls": "implicit", "port": 465}},
            "relay",
            Status.OK,
            "TLS from the first byte",
            id="implicit TLS is fine",
        ),
        pytest.param(
            {"secret_key": None},
            "secret key",
            Status.WARN,
            "secret_key",
            id="a secret key generated into var warns",
        ),
        pytest.param(
            {"bounces": {"return_path": ""}},
            "return path",
            Status.WARN,
            "bounces go to course@spinenotes.net, which nobody reads",
            id="no VERP return path warns",
        ),
        pytest.param(
            {},
            "return path",
            Status.OK,
            "bounces+<delivery>-<signature>@spinenotes.net",
            id="the VERP return path is shown as it will be",
        ),
        pytest.param(
            {"inbound": {"enabled": False}},
            "bounces in",
            Status.WARN,
            "newsletter inbound read -",
            id="no receiver says how bounces can come in",
        ),
        pytest.param(
            {},
            "bounces in",
            Status.OK,
            "bounces+*@spinenotes.net and unsubscribe@spinenotes.net",
            id="the receiver names the mailboxes the MX must pass on",
        ),
        pytest.param(
            {"dkim": None},
            "DKIM",
            Status.WARN,
            "newsletter dkim keygen",
            id="no DKIM signing warns",
        ),
        pytest.param(
            {"dkim": {"domain": "mail.spinenotes.net"}},
            "DKIM alignment",
            Status.OK,
            "d=mail.spinenotes.net (spinenotes.net) aligns",
            id="a subdomain d= aligns (relaxed)",
        ),
        pytest.param(
            {"dkim": {"domain": "relay.net"}},
            "DKIM alignment",
            Status.FAIL,
            "DMARC ignores the signature",
            id="another organisation's d= does not align",
        ),
        pytest.param(
            {
                "sender": {"address": "course@news.spine.co.uk"},
                "dkim": {"domain": "spine.co.uk"},
            },
            "DKIM alignment",
            Status.OK,
            "aligns with From news.spine.co.uk (spine.co.uk)",
            id="the organisation under a two-label public suffix aligns",
        ),
        pytest.param(
            {
                "sender": {"address": "course@news.spine.co.uk"},
                "dkim": {"domain": "other.co.uk"},
            },
            "DKIM alignment",
            Status.FAIL,
            "news.spine.co.uk (spine.co.uk)",
            id="sharing only the public suffix co.uk is not alignment",
        ),
        pytest.param(
            {"sender": {"transactional_address": "hello@spinenotes-mail.com"}},
            "DKIM alignment",
            Status.FAIL,
            "spinenotes-mail.com",
            id="the confirmation's From must align too",
        ),
        pytest.param(
            {"bounces": {"return_path": "bounces@bounce.spinenotes.net"}},
            "SPF alignment",
            Status.OK,
            "bounce.spinenotes.net (spinenotes.net) aligns",
            id="a return path on a subdomain aligns",
        ),
        pytest.param(
            {"bounces": {"return_path": "bounces@relaymail.net"}},
            "SPF alignment",
            Status.WARN,
            "DMARC rests on DKIM alone",
            id="a foreign return path leaves DMARC to DKIM",
        ),
        pytest.param(
            {"bounces": {"return_path": "bounces@relaymail.net"}, "dkim": None},
            "SPF alignment",
            Status.FAIL,
            "DMARC fails",
            id="a foreign return path and no DKIM fail DMARC",
        ),
    ],
)
def test_settings_give_findings(
    changes: dict[str, Any], subject: str, status: Status, words: str
) -> None:
    finding = findings(settings_with(**changes))[subject]

    assert finding.status is status, finding.sentence
    assert words in finding.sentence


@pytest.mark.parametrize(
    ("key", "status", "words"),
    [
        pytest.param(GOOD_KEY, Status.OK, "2048-bit RSA key", id="2048 bits"),
        pytest.param(KeyFile(KEY_1024), Status.WARN, "2048 bits are recommended", id="1024 bits"),
        pytest.param(KeyFile(KEY_512), Status.FAIL, "under 1024 bits", id="512 bits"),
        pytest.param(KeyFile(ED25519_KEY), Status.FAIL, "not an RSA key", id="ed25519"),
        pytest.param(KeyFile(b"not a key"), Status.FAIL, "not a PEM RSA private key", id="garbage"),
        pytest.param(
            KeyFile(None, "/keys/dkim.pem: cannot read the DKIM key (No such file or directory)"),
            Status.FAIL,
            "No such file",
            id="unreadable",
        ),
    ],
)
def test_the_dkim_key_must_be_rsa_of_at_least_1024_bits(
    key: KeyFile, status: Status, words: str
) -> None:
    found = findings(settings_with(), key=key)

    assert found["DKIM key"].status is status
    assert words in found["DKIM key"].sentence
    # A key that cannot sign has no record worth publishing.
    assert ("DKIM record" in found) is (status is not Status.FAIL)


def test_a_published_key_that_is_not_ours_fails_showing_where_they_differ():
    published = PUBLISHED | {DKIM_NAME: [dns_record_value(OTHER_KEY)]}

    finding = findings(settings_with(), published)["DKIM record"]

    assert finding.status is Status.FAIL
    assert "publishes another key: p=…" in finding.sentence
    assert "every signature fails" in finding.sentence
    assert finding.record == DnsRecord(DKIM_NAME, "TXT", dns_record_value(KEY))


@pytest.mark.parametrize(
    ("published", "words"),
    [
        pytest.param([], f"nothing at {DKIM_NAME}", id="missing"),
        pytest.param(["v=DKIM1; k=rsa; p="], "revoked", id="revoked"),
        pytest.param(
            [dns_record_value(KEY), dns_record_value(OTHER_KEY)], "2 key records", id="two keys"
        ),
    ],
)
def test_a_dkim_record_missing_revoked_or_doubled_fails(published: list[str], words: str) -> None:
    finding = findings(settings_with(), PUBLISHED | {DKIM_NAME: published})["DKIM record"]

    assert finding.status is Status.FAIL
    assert words in finding.sentence


def test_records_are_found_whatever_the_case_of_the_configured_names():
    settings = settings_with(dkim={"domain": "SpineNotes.net", "selector": "S1"})

    found = findings(settings, PUBLISHED)

    assert names_to_look_up(settings)[-1] == DKIM_NAME
    assert found["DKIM record"].status is Status.OK


def test_our_key_published_with_spaces_in_p_still_matches():
    value = dns_record_value(KEY)
    spaced = value[:100] + " " + value[100:200] + "\t" + value[200:]

    finding = findings(settings_with(), PUBLISHED | {DKIM_NAME: [spaced]})["DKIM record"]

    assert finding.status is Status.OK


@pytest.mark.parametrize(
    ("published", "status", "words"),
    [
        pytest.param([], Status.FAIL, "none published", id="missing"),
        pytest.param(["v=spf10 nonsense"], Status.FAIL, "none published", id="not spf1"),
        pytest.param(
            ["v=spf1 a:smtp.relay.net ~all", "v=spf1 include:other.net -all"],
            Status.FAIL,
            "2 v=spf1 records, a permanent error",
            id="two records",
        ),
        pytest.param(
            ["verification=1", "V=SPF1 include:relay.net ~all"],
            Status.OK,
            'publishes "V=SPF1 include:relay.net ~all"; it must authorise smtp.relay.net',
            id="one record among others",
        ),
    ],
)
def test_exactly_one_spf_record_is_published(
    published: list[str], status: Status, words: str
) -> None:
    finding = findings(settings_with(), PUBLISHED | {"spinenotes.net": published})["SPF record"]

    assert finding.status is status
    assert words in finding.sentence


def test_the_spf_record_goes_at_the_return_paths_domain_and_names_the_relay():
    found = findings(settings_with(bounces={"return_path": "bounces@mail.spinenotes.net"}))

    assert found["SPF record"].record == DnsRecord(
        "mail.spinenotes.net", "TXT", "v=spf1 a:smtp.relay.net ~all"
    )
    assert "must authorise the relay smtp.relay.net" in found["SPF record"].sentence


def test_a_local_relay_needs_this_machines_address_in_spf():
    found = findings(settings_with(smtp={"host": "localhost", "tls": "none", "port": 25}))

    assert found["SPF record"].status is Status.TODO
    assert found["SPF record"].record is None
    assert "ip4:" in found["SPF record"].sentence


@pytest.mark.parametrize(
    ("published", "status", "words"),
    [
        pytest.param([], Status.FAIL, "nothing at _dmarc.spinenotes.net", id="missing"),
        pytest.param(["v=DMARC1; p=none"], Status.OK, "p=none, reports only", id="p=none"),
        pytest.param(["v=DMARC1;p=reject"], Status.OK, "p=reject", id="p=reject"),
        pytest.param(["v=DMARC1; p=maybe"], Status.FAIL, "no valid p=", id="bad policy"),
        pytest.param(["v=DMARC1; rua=mailto:x@y.org"], Status.FAIL, "no valid p=", id="no p"),
        pytest.param(
            ["v=DMARC1; p=none", "v=DMARC1; p=reject"],
            Status.FAIL,
            "ignore them all",
            id="two records",
        ),
    ],
)
def test_dmarc_is_published_once_with_a_policy(
    published: list[str], status: Status, words: str
) -> None:
    records = PUBLISHED | {"_dmarc.spinenotes.net": published}

    finding = findings(settings_with(), records)["DMARC record"]

    assert finding.status is status
    assert words in finding.sentence


def test_dmarc_goes_at_the_organisational_domain_of_each_from():
    settings = settings_with(
        sender={"address": "course@news.spine.co.uk", "transactional_address": "hi@spine.org"},
        dkim=None,
        bounces={"return_path": ""},
    )

    todos = [f.record for f in diagnose(settings, records=None) if f.subject == "DMARC record"]

    assert [record.name for record in todos if record] == ["_dmarc.spine.co.uk", "_dmarc.spine.org"]


def test_names_to_look_up_are_those_diagnose_compares():
    assert names_to_look_up(settings_with()) == [
        "spinenotes.net",
        "_dmarc.spinenotes.net",
        DKIM_NAME,
    ]
    assert names_to_look_up(settings_with(dkim=None, bounces={"return_path": "b@x.spine.org"})) == [
        "x.spine.org",
        "_dmarc.spinenotes.net",
    ]


@pytest.mark.parametrize(
    ("domain", "organisation"),
    [
        ("spinenotes.net", "spinenotes.net"),
        ("a.b.spinenotes.net", "spinenotes.net"),
        ("News.Spine.CO.UK.", "spine.co.uk"),
        ("someone.github.io", "someone.github.io"),
        ("localhost", "localhost"),
    ],
)
def test_organisational_domains_come_from_the_public_suffix_list(domain: str, organisation: str):
    assert organisational_domain(domain) == organisation


@pytest.mark.parametrize(
    ("signing", "sender", "aligned"),
    [
        ("example.org", "example.org", True),
        ("Example.ORG", "example.org.", True),
        ("example.org", "news.example.org", True),
        ("news.example.org", "example.org", True),
        ("example.org", "badexample.org", False),
        ("example.net", "example.org", False),
        ("a.example.co.uk", "b.example.co.uk", True),
        ("example.co.uk", "other.co.uk", False),
    ],
)
def test_alignment_is_by_organisational_domain(signing: str, sender: str, aligned: bool) -> None:
    assert dmarc_aligned(signing, sender) is aligned
