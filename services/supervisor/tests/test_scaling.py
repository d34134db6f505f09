"""Recommended replicas from lag and throughput: examples and properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mainstay_supervisor.scaling import GroupLoad, ScalingPolicy, recommend_replicas

POLICY = ScalingPolicy(drain_s=60, lag_per_replica=1000, min_replicas=1, backlog_threshold=10)


def load(**fields: float) -> GroupLoad:
    defaults: dict[str, float] = {
        "lag": 0,
        "consume_rate": 0.0,
        "arrival_rate": 0.0,
        "partitions": 12,
    }
    defaults.update(fields)
    return GroupLoad(
        group="svc.work",
        lag=int(defaults["lag"]),
        consume_rate=defaults["consume_rate"],
        arrival_rate=defaults["arrival_rate"],
        partitions=int(defaults["partitions"]),
        capacity_per_replica=fields.get("capacity"),
    )


def test_a_backlog_asks_for_replicas_that_keep_up_and_drain_it() -> None:
    # 2 replicas consume 100/s together (50 each) while 120/s arrive and 6000 wait:
    # (120 + 6000 / 60) / 50 = 4.4 -> 5 replicas.
    assert recommend_replicas(2, [load(lag=6000, consume_rate=100, arrival_rate=120)], POLICY) == 5


def test_never_more_replicas_than_partitions() -> None:
    heavy = load(lag=1_000_000, consume_rate=10, arrival_rate=500, partitions=6)
    assert recommend_replicas(1, [heavy], POLICY) == 6


def test_a_caught_up_group_is_sized_by_its_arrivals_once_capacity_is_known() -> None:
    # Seen doing 50/s per replica; 60/s arrive and nothing waits: 2 replicas, down from 8.
    caught_up = load(lag=3, consume_rate=60, arrival_rate=60, capacity=50)
    assert recommend_replicas(8, [caught_up], POLICY) == 2


def test_with_capacity_unknown_a_backlog_counts_by_lag_and_quiet_keeps_the_count() -> None:
    assert recommend_replicas(1, [load(lag=4500)], POLICY) == 5
    assert recommend_replicas(3, [load(lag=0)], POLICY) == 3
    assert recommend_replicas(0, [], POLICY) == 1, "at least min_replicas"


def test_the_busiest_group_decides_for_its_service() -> None:
    quiet = load(lag=0, capacity=100)
    busy = load(lag=12_000, consume_rate=100, arrival_rate=100)
    assert recommend_replicas(1, [quiet, busy], POLICY) == 3  # (100 + 200) / 100


def test_a_policy_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="drain_s"):
        ScalingPolicy(drain_s=0)


@given(
    replicas=st.integers(0, 50),
    lag=st.integers(0, 10_000_000),
    consume=st.floats(0, 1e5, allow_nan=False),
    arrival=st.floats(0, 1e5, allow_nan=False),
    partitions=st.integers(1, 64),
    extra_lag=st.integers(0, 1_000_000),
)
def test_more_lag_never_asks_for_fewer_replicas_and_bounds_hold(
    replicas: int, lag: int, consume: float, arrival: float, partitions: int, extra_lag: int
) -> None:
    base = load(lag=lag, consume_rate=consume, arrival_rate=arrival, partitions=partitions)
    more = load(
        lag=lag + extra_lag, consume_rate=consume, arrival_rate=arrival, partitions=partitions
    )
    fewer = recommend_replicas(replicas, [base], POLICY)
    assert POLICY.min_replicas <= fewer <= max(partitions, POLICY.min_replicas)
    if lag > POLICY.backlog_threshold:
        assert fewer <= recommend_replicas(replicas, [more], POLICY)
