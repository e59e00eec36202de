"""DKIM: a key, the record that publishes it, and signatures that verify until the message
is changed in any way that matters."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jinja2 import Environment

from newsletter.config import DkimSettings, Settings
from newsletter.content.course import Course
from newsletter.dkim import (
    DkimSigner,
    dns_record_name,
    dns_record_value,
    generate_private_key,
    load_private_key,
    signed_header_names,
    txt_strings,
)
from newsletter.errors import ConfigError
from newsletter.render import ConfirmationEmail, LessonEmail, Recipient
from newsletter.tokens import LinkMaker, Tokens
from tests.dkim_verifiers import dkimpy_verifies

NOW = datetime(2026, 3, 29, 9, 30, tzinfo=UTC)
DOMAIN, SELECTOR = "example.org", "s2026"


@pytest.fixture(scope="module")
def key() -> bytes:
    return generate_private_key()


@pytest.fixture
def signer(key: bytes) -> DkimSigner:
    return DkimSigner(DOMAIN, SELECTOR, key)


@pytest.fixture
def lesson(env: Environment, settings: Settings, course: Course) -> bytes:
    """Lesson 3 as a subscriber gets it, Feedback-ID included."""
    email = LessonEmail(env, settings.sender, course, course.lesson("3"), feedback_id="spine")
    links = LinkMaker(Tokens("test-secret"), settings.site.base, "unsubscribe@example.org")
    return email.render(
        Recipient("ana@example.com", "Ana"),
        links.personal_links(7, NOW),
        message_id="<m1@example.org>",
        date=NOW,
    )


def verifies(message: bytes, key: bytes) -> bool:
    return dkimpy_verifies(message, key, SELECTOR, DOMAIN)


def signature_tags(signed: bytes) -> dict[str, str]:
    head = signed.partition(b"\r\n\r\n")[0].decode("ascii")
    field = re.match(r"DKIM-Signature:(.*?)\r\n(?! )", head, re.DOTALL)
    assert field is not None
    text = re.sub(r"\s+", "", field.group(1))
    return dict(tag.split("=", 1) for tag in text.split(";") if tag)


# --- keys and records -----------------------------------------------------------------


def test_a_new_key_is_an_unencrypted_pkcs8_pem_rsa_key_of_2048_bits(key: bytes) -> None:
    assert key.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    loaded = serialization.load_pem_private_key(key, password=None)
    assert isinstance(loaded, rsa.RSAPrivateKey)
    assert loaded.key_size == 2048


def test_the_key_size_can_be_chosen_within_what_verifiers_accept() -> None:
    loaded = serialization.load_pem_private_key(generate_private_key(1024), password=None)
    assert isinstance(loaded, rsa.RSAPrivateKey)
    assert loaded.key_size == 1024
    with pytest.raises(ValueError, match="1024 to 4096 bits"):
        generate_private_key(512)


def test_the_record_is_exactly_the_version_the_key_type_and_the_public_key(key: bytes) -> None:
    value = dns_record_value(key)

    version, key_type, public = value.split("; ")
    assert (version, key_type) == ("v=DKIM1", "k=rsa")
    der = base64.b64decode(public.removeprefix("p="), validate=True)
    private = serialization.load_pem_private_key(key, password=None)
    assert serialization.load_der_public_key(der).public_numbers() == (  # type: ignore[union-attr]
        private.public_key().public_numbers()  # type: ignore[union-attr]
    )


@pytest.mark.parametrize(
    ("selector", "domain", "name"),
    [
        ("s2026", "example.org", "s2026._domainkey.example.org"),
        ("mail-1", "news.example.co.uk", "mail-1._domainkey.news.example.co.uk"),
    ],
)
def test_the_record_lives_under_the_selector_in_the_domainkey_subdomain(
    selector: str, domain: str, name: str
) -> None:
    assert dns_record_name(selector, domain) == name


def test_a_long_record_is_cut_into_strings_of_at_most_255_characters_that_join_back() -> None:
    value = dns_record_value(generate_private_key(4096))

    strings = txt_strings(value)

    assert len(strings) == 3
    assert all(len(part) <= 255 for part in strings)
    assert "".join(strings) == value
    assert txt_strings("v=DKIM1; k=rsa; p=short") == ["v=DKIM1; k=rsa; p=short"]


def test_a_key_file_is_read_as_written(tmp_path: Path, key: bytes) -> None:
    path = tmp_path / "s2026.pem"
    path.write_bytes(key)

    assert load_private_key(path) == key


def _ec_key() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _encrypted_key(key: bytes) -> bytes:
    loaded = serialization.load_pem_private_key(key, password=None)
    return loaded.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        (None, "does not exist; make a key with `newsletter dkim keygen"),
        ("folder", "cannot be read (Is a directory)"),
        (b"", "is not a PEM RSA private key"),
        (b"ssh-rsa AAAAB3NzaC1yc2E example", "is not a PEM RSA private key"),
        ("ec", "is not an RSA key"),
        ("encrypted", "is encrypted; DKIM needs an unencrypted key"),
    ],
)
def test_an_unusable_key_file_is_a_config_error_naming_the_path(
    tmp_path: Path, key: bytes, content: bytes | str | None, complaint: str
) -> None:
    path = tmp_path / "s2026.pem"
    if content == "folder":
        path.mkdir()
    elif content == "ec":
        path.write_bytes(_ec_key())
    elif content == "encrypted":
        path.write_bytes(_encrypted_key(key))
    elif isinstance(content, bytes):
        path.write_bytes(content)

    with pytest.raises(ConfigError) as caught:
        load_private_key(path)

    assert str(caught.value).startswith(f"dkim.key_path: {path} ")
    assert complaint in str(caught.value)


def test_the_signer_reads_its_key_from_the_settings(tmp_path: Path, key: bytes) -> None:
    path = tmp_path / "s2026.pem"
    path.write_bytes(key)
    signer = DkimSigner.from_settings(DkimSettings(domain=DOMAIN, selector=SELECTOR, key_path=path))

    assert verifies(signer.sign(b"From: a@example.org\r\n\r\nHi\r\n"), key)


# --- signatures -----------------------------------------------------------------------


def test_a_signed_lesson_verifies(signer: DkimSigner, key: bytes, lesson: bytes) -> None:
    assert verifies(signer.sign(lesson), key)


def test_the_signature_is_one_header_in_front_of_the_message_unchanged(
    signer: DkimSigner, lesson: bytes
) -> None:
    signed = signer.sign(lesson)

    assert signed.startswith(b"DKIM-Signature: ")
    signature, _, rest = signed.partition(b"\r\n" + lesson[:5])
    assert lesson[:5] + rest == lesson
    assert all(line.startswith(b" ") for line in signature.split(b"\r\n")[1:])
    assert all(len(line) <= 78 for line in signature.split(b"\r\n"))


def test_the_headers_that_matter_are_signed_and_from_once_more_than_it_appears(
    signer: DkimSigner, lesson: bytes
) -> None:
    tags = signature_tags(signer.sign(lesson))

    assert tags["h"].split(":") == [
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "list-id",
        "list-unsubscribe",
        "list-unsubscribe-post",
        "mime-version",
        "content-type",
        "feedback-id",
        "from",
    ]
    assert (tags["v"], tags["a"], tags["c"]) == ("1", "rsa-sha256", "relaxed/simple")
    assert (tags["d"], tags["s"]) == (DOMAIN, SELECTOR)


def test_a_confirmation_signs_the_headers_it_has(
    signer: DkimSigner, key: bytes, env: Environment, settings: Settings, course: Course
) -> None:
    email = ConfirmationEmail(env, settings.sender, course)
    raw = email.render("ana@example.com", "https://example.org/c", message_id="<c@x>", date=NOW)

    signed = signer.sign(raw)

    assert verifies(signed, key)
    assert signature_tags(signed)["h"].split(":") == [
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "from",
    ]


@pytest.mark.parametrize(
    ("present", "listed"),
    [
        ([b"From", b"To", b"X-Mailer"], [b"from", b"to", b"from"]),
        ([b"Subject", b"from", b"Reply-To"], [b"from", b"subject", b"reply-to", b"from"]),
        ([b"From", b"From", b"Received"], [b"from", b"from", b"from"]),
    ],
)
def test_each_signed_field_is_listed_as_often_as_it_occurs_and_from_once_more(
    present: list[bytes], listed: list[bytes]
) -> None:
    assert signed_header_names(present) == listed


def test_a_message_without_from_is_refused() -> None:
    with pytest.raises(ValueError, match="without a From header"):
        signed_header_names([b"To", b"Subject"])


def test_a_relay_refolding_headers_or_adding_blank_lines_at_the_end_keeps_it_valid(
    signer: DkimSigner, key: bytes, lesson: bytes
) -> None:
    signed = signer.sign(lesson)
    head, _, body = signed.partition(b"\r\n\r\n")
    # Relaxed headers: unfolded, runs of spaces. Simple body: only empty lines at its end
    # may change; our quoted-printable body has nothing else a relay rewrites.
    refolded = head.replace(b"\r\n <mailto:", b" <mailto:").replace(b": ", b":  ")

    assert verifies(refolded + b"\r\n\r\n" + body + b"\r\n\r\n", key)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda m: m.replace(b"\r\nAna=\r\n", b"\r\nBob=\r\n"), id="the name"),
        pytest.param(lambda m: m.replace(b"pain gets better", b"pain gets worse"), id="a word"),
        pytest.param(lambda m: m.replace(b"Subject: ", b"Subject: Re: "), id="the subject"),
        pytest.param(
            lambda m: m.replace(b"\r\nFrom: ", b"\r\nFrom: Bank <pay@bank.example>\r\nFrom: ", 1),
            id="a second From",
        ),
        pytest.param(
            lambda m: m.replace(b"List-Unsubscribe: <", b"List-Unsubscribe: <https://evil/>,<"),
            id="the unsubscribe link",
        ),
        pytest.param(lambda m: m.replace(b"d=example.org", b"d=example.net"), id="the domain"),
    ],
)
def test_a_changed_message_no_longer_verifies(
    signer: DkimSigner, key: bytes, lesson: bytes, tamper
) -> None:  # type: ignore[no-untyped-def]
    signed = signer.sign(lesson)
    tampered = tamper(signed)

    assert tampered != signed
    assert not verifies(tampered, key)


def test_another_key_does_not_verify(signer: DkimSigner, lesson: bytes) -> None:
    assert not verifies(signer.sign(lesson), generate_private_key(1024))


# --- alignment ------------------------------------------------------------------------
