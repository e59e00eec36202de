"""NEWSLETTER_FAILPOINTS: a typo must fail loudly, never leave a crash test testing nothing."""

from __future__ import annotations

import pytest

from newsletter import failpoints


def test_points_actions_and_the_nth_hit_are_read() -> None:
    armed = failpoints.parse("dispatch.after_accept=kill@3; log.emit=raise")

    assert {name: (a.action, a.at_hit) for name, a in armed.items()} == {
        "dispatch.after_accept": ("kill", 3),
        "log.emit": ("raise", 1),
    }


@pytest.mark.parametrize(
    "spec",
    ["dispatch.after_acept=kill", "dispatch.after_claim=explode", "log.emit=raise@x", "log.emit"],
)
def test_an_unknown_point_or_action_is_refused_by_name(spec: str) -> None:
    with pytest.raises(ValueError, match="NEWSLETTER_FAILPOINTS"):
        failpoints.parse(spec)


def test_an_unarmed_point_does_nothing() -> None:
    failpoints.hit("dispatch.after_claim")  # the test process arms none
