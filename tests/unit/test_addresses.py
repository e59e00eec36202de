"""Addresses: one normal form per mailbox, RFC 5321 lengths, and which scripts can be mailed."""

from __future__ import annotations

import pytest

from newsletter.addresses import AddressInvalid, AddressNotAscii, normalize_address


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("ana@example.com", "ana@example.com"),
        ("  Ana@Example.COM ", "ana@example.com"),
        ("ANA.MARIA+News@EXAMPLE.com", "ana.maria+news@example.com"),
        # Internationalised domains are kept, encoded as punycode so every relay can carry them.
        ("jose@exämple.org", "jose@xn--exmple-cua.org"),
        ("ana@bücher.example", "ana@xn--bcher-kva.example"),
        ("ana@例子.广告", "ana@xn--fsqu00a.xn--4rr70v"),
    ],
)
def test_addresses_are_stored_in_one_normal_form(typed, stored):
    assert normalize_address(typed) == stored


def test_addresses_differing_only_in_case_are_the_same_subscriber():
    variants = ["cy@example.com", "CY@example.com", "Cy@Example.Com", "cY@EXAMPLE.COM"]
    assert {normalize_address(variant) for variant in variants} == {"cy@example.com"}


@pytest.mark.parametrize("typed", ["用户@例子.广告", "josé@exämple.org", "jösé@example.org"])
def test_a_non_ascii_mailbox_name_is_refused_in_plain_words(typed):
    with pytest.raises(AddressNotAscii, match="the part before the @ has letters outside plain"):
        normalize_address(typed)


def test_the_local_part_may_have_64_characters():
    local = "a" * 64
    assert normalize_address(f"{local}@example.com") == f"{local}@example.com"


def test_a_65_character_local_part_is_refused():
    with pytest.raises(AddressInvalid, match="the part before the @ is 65 characters long"):
        normalize_address("a" * 65 + "@example.com")


def _address_of_length(length: int) -> str:
    """a@ and labels of at most 63 characters, `length` characters in all."""
    domain_length = length - 2 - len(".com")
    labels = []
    while domain_length > 0:
        label = min(63, domain_length)
        labels.append("b" * label)
        domain_length -= label + 1
    address = "a@" + ".".join(labels) + ".com"
    if len(address) != length:  # a label of 0 characters would be needed: shift one over
        address = "aa@" + ".".join(labels)[: length - 3 - 4].rstrip(".") + ".com"
    assert len(address) == length
    return address


def test_the_whole_address_may_have_254_characters():
    address = _address_of_length(254)
    assert normalize_address(address) == address


@pytest.mark.parametrize("length", [255, 300])
def test_a_longer_address_is_refused(length):
    with pytest.raises(AddressInvalid, match="long"):
        normalize_address(_address_of_length(length))


def test_an_address_too_long_only_once_its_domain_is_encoded_is_refused():
    # 250 characters as typed; the ü labels grow by their punycode prefix and suffix.
    domain = ".".join(["ü" + "b" * 58] * 4)[:240]
    typed = f"ana@{domain}.de"
    assert len(typed) <= 254
    with pytest.raises(AddressInvalid, match="too long"):
        normalize_address(typed)


@pytest.mark.parametrize(
    "typed", ["not an address", "ana@", "@example.com", "ana@example", "a@b.c\r\nBcc: x@evil"]
)
def test_what_is_not_an_address_is_refused_naming_it(typed):
    with pytest.raises(AddressInvalid) as caught:
        normalize_address(typed)
    assert str(caught.value).startswith(repr(typed.strip()))
