"""VERP return paths: each names its delivery, and only our signature makes one ours."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from newsletter.inbound.verp import ReturnPath

PATH = ReturnPath("Bounces@Example.org", "a-secret-of-some-length")


def test_a_return_path_names_its_delivery() -> None:
    address = PATH.for_delivery(1234)

    assert address.startswith("bounces+1234-")
    assert address.endswith("@example.org")
    assert PATH.delivery_of(address) == 1234


@given(st.integers(min_value=0, max_value=10**15))
def test_every_delivery_round_trips_even_upper_cased_and_bracketed(delivery_id: int) -> None:
    address = PATH.for_delivery(delivery_id)

    assert PATH.delivery_of(f"<{address.upper()}>") == delivery_id
    assert len(address.partition("@")[0]) <= 64  # RFC 5321's limit on a local part


def test_a_forged_or_altered_address_names_nothing() -> None:
    genuine = PATH.for_delivery(1234)
    local, _, domain = genuine.partition("@")
    signature = local.rpartition("-")[2]

    assert PATH.delivery_of(f"bounces+1235-{signature}@{domain}") is None
    assert PATH.delivery_of(f"bounces+1234-{'a' * len(signature)}@{domain}") is None
    assert PATH.delivery_of(f"{local}@other.example") is None
    assert PATH.delivery_of(f"other+1234-{signature}@{domain}") is None
    assert PATH.delivery_of("bounces@example.org") is None
    assert ReturnPath("bounces@example.org", "another-secret-entirely").delivery_of(genuine) is None


def test_the_return_path_and_its_tagged_forms_are_ours() -> None:
    assert PATH.is_ours("bounces@example.org")
    assert PATH.is_ours("bounces+anything@EXAMPLE.org")
    assert not PATH.is_ours("course@example.org")
