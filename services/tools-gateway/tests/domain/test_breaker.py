"""The circuit breaker and Retry-After cool-down, driven by a fake clock."""

from __future__ import annotations

import pytest

from mainstay_tools_gateway.domain.breaker import BreakerState, CircuitBreakers


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def breakers(
    clock: Clock, changes: list[tuple[str, BreakerState]] | None = None
) -> CircuitBreakers:
    return CircuitBreakers(
        failure_threshold=3,
        open_s=10.0,
        clock=clock,
        on_change=(lambda t, s: changes.append((t, s))) if changes is not None else None,
    )


def test_opens_after_threshold_consecutive_failures_and_refuses_at_once(clock: Clock) -> None:
    b = breakers(clock)
    for _ in range(2):
        assert b.admit("t").allowed
        b.failed("t")
    assert b.state("t") is BreakerState.CLOSED
    assert b.admit("t").allowed
    b.failed("t")
    assert b.state("t") is BreakerState.OPEN
    refused = b.admit("t")
    assert not refused.allowed
    assert not refused.rate_limited
    assert "open after 3 consecutive failures" in refused.reason
    assert refused.retry_after_s == pytest.approx(10.0)


def test_a_success_resets_the_count(clock: Clock) -> None:
    b = breakers(clock)
    for _ in range(2):
        b.failed("t")
    b.succeeded("t")
    for _ in range(2):
        b.failed("t")
    assert b.state("t") is BreakerState.CLOSED


def test_half_open_admits_exactly_one_probe_whose_success_closes(clock: Clock) -> None:
    changes: list[tuple[str, BreakerState]] = []
    b = breakers(clock, changes)
    for _ in range(3):
        b.failed("t")
    clock.now += 10.0
    assert b.state("t") is BreakerState.HALF_OPEN
    probe = b.admit("t")
    assert probe.allowed
    assert probe.probe
    second = b.admit("t")
    assert not second.allowed
    assert "probe call is running" in second.reason
    b.succeeded("t")
    assert b.state("t") is BreakerState.CLOSED
    assert b.admit("t").allowed
    assert changes == [
        ("t", BreakerState.OPEN),
        ("t", BreakerState.HALF_OPEN),
        ("t", BreakerState.CLOSED),
    ]


def test_a_failed_probe_opens_again_for_a_full_period(clock: Clock) -> None:
    b = breakers(clock)
    for _ in range(3):
        b.failed("t")
    clock.now += 10.0
    assert b.admit("t").probe
    b.failed("t")
    assert b.state("t") is BreakerState.OPEN
    clock.now += 9.0
    assert not b.admit("t").allowed
    clock.now += 1.0
    assert b.admit("t").probe


def test_a_probe_that_ended_without_verdict_frees_the_slot(clock: Clock) -> None:
    b = breakers(clock)
    for _ in range(3):
        b.failed("t")
    clock.now += 10.0
    assert b.admit("t").probe
    b.released("t")
    assert b.admit("t").probe


def test_retry_after_cool_down_refuses_as_rate_limited_until_due(clock: Clock) -> None:
    b = breakers(clock)
    b.cool_down("t", 2.0)
    refused = b.admit("t")
    assert not refused.allowed
    assert refused.rate_limited
    assert refused.retry_after_s == pytest.approx(2.0)
    clock.now += 1.5
    assert b.admit("t").retry_after_s == pytest.approx(0.5)
    clock.now += 0.5
    assert b.admit("t").allowed


def test_tools_are_independent(clock: Clock) -> None:
    b = breakers(clock)
    for _ in range(3):
        b.failed("a")
    assert not b.admit("a").allowed
    assert b.admit("b").allowed


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreakers(failure_threshold=0, open_s=1.0)
    with pytest.raises(ValueError, match="open_s"):
        CircuitBreakers(failure_threshold=1, open_s=0)
