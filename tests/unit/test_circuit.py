"""The relay's circuit breaker: a few failures in a row open it, with a growing, jittered
wait; one probe closes it again."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from newsletter.delivery.circuit import Circuit, CircuitPolicy, CircuitState

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
STEADY = CircuitPolicy(threshold=3, first_delay_s=10, max_delay_s=600, jitter=0)


def failing(circuit: Circuit, times: int, at: datetime = NOW) -> list[bool]:
    return [circuit.failed(at, "CONNECT: Connection refused") for _ in range(times)]


def test_it_opens_at_the_threshold_and_not_before() -> None:
    circuit = Circuit(STEADY)

    assert failing(circuit, 3) == [False, False, True]
    assert circuit.state(NOW) is CircuitState.OPEN
    assert circuit.state(NOW + timedelta(seconds=9)) is CircuitState.OPEN
    assert circuit.reason == "CONNECT: Connection refused"


def test_a_success_in_between_starts_the_count_again() -> None:
    circuit = Circuit(STEADY)
    failing(circuit, 2)

    assert circuit.succeeded() is False  # it was not open
    assert failing(circuit, 2) == [False, False]
    assert circuit.state(NOW) is CircuitState.CLOSED


def test_after_the_wait_one_probe_may_go_and_its_success_closes_it() -> None:
    circuit = Circuit(STEADY)
    failing(circuit, 3)
    later = NOW + timedelta(seconds=10)

    assert circuit.state(later) is CircuitState.HALF_OPEN
    assert circuit.succeeded() is True
    assert circuit.state(later) is CircuitState.CLOSED
    assert circuit.reason == ""


@pytest.mark.parametrize(
    ("probes_failed", "wait_s"), [(0, 10), (1, 20), (2, 40), (5, 320), (6, 600)]
)
def test_each_failed_probe_doubles_the_wait_up_to_the_cap(probes_failed: int, wait_s: int) -> None:
    circuit = Circuit(STEADY)
    failing(circuit, 3)
    for _ in range(probes_failed):
        assert circuit.open_until is not None
        probe_at = circuit.open_until
        assert circuit.failed(probe_at, "CONNECT: 421 4.3.2 Busy") is True

    assert circuit.open_until is not None
    opened_at = probe_at if probes_failed else NOW
    assert circuit.open_until - opened_at == timedelta(seconds=wait_s)


def test_sends_that_fail_while_it_is_open_do_not_lengthen_the_wait() -> None:
    circuit = Circuit(STEADY)
    failing(circuit, 3)
    until = circuit.open_until

    assert failing(circuit, 5, at=NOW + timedelta(seconds=1)) == [False] * 5
    assert circuit.open_until == until


def test_jitter_spreads_the_wait_so_workers_do_not_probe_together() -> None:
    waits = set()
    for seed in range(50):
        circuit = Circuit(CircuitPolicy(jitter=0.2), random.Random(seed))
        failing(circuit, 3)
        assert circuit.open_until is not None
        waits.add((circuit.open_until - NOW).total_seconds())

    assert all(8 <= wait <= 12 for wait in waits)
    assert len(waits) > 40


def test_another_workers_open_circuit_is_honoured_but_never_shortens_our_own() -> None:
    circuit = Circuit(STEADY)
    circuit.hold_until(NOW + timedelta(seconds=30), "CONNECT: refused (worker 2)")
    assert circuit.state(NOW + timedelta(seconds=29)) is CircuitState.OPEN

    circuit.hold_until(NOW + timedelta(seconds=5), "older news")
    assert circuit.open_until == NOW + timedelta(seconds=30)
    assert circuit.reason == "CONNECT: refused (worker 2)"


@pytest.mark.parametrize(
    "settings",
    [{"threshold": 0}, {"first_delay_s": 0}, {"first_delay_s": 60, "max_delay_s": 30}],
)
def test_policy_refuses_settings_that_make_no_sense(settings: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="threshold"):
        CircuitPolicy(**settings)  # type: ignore[arg-type]


def test_an_operator_resuming_lets_the_probe_go_at_once() -> None:
    circuit = Circuit(STEADY)
    failing(circuit, 3)

    circuit.probe_now(NOW + timedelta(seconds=1))

    assert circuit.state(NOW + timedelta(seconds=1)) is CircuitState.HALF_OPEN
