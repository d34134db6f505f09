"""Recommended replicas per service, from consumer lag and throughput (no I/O).

For each consumer group of a service the supervisor knows its lag (messages
not yet consumed), the rate it consumes at, the rate messages arrive at, and
how many partitions it reads. A group with a backlog is assumed to run at full
speed, so its rate per replica is what one replica can do; the replicas it
needs are those that keep up with arrivals *and* drain the backlog within
``drain_s``. The highest capacity per replica ever seen is remembered, so a
group that has caught up can be sized by its arrivals (and scaled in).

A recommendation never exceeds the group's partitions (a consumer beyond them
idles) nor drops below ``min_replicas``. With nothing known about a group's
capacity, a backlog asks for one replica per ``lag_per_replica`` messages, like
a plain lag-threshold autoscaler.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["GroupLoad", "ScalingPolicy", "measured_capacity", "recommend_replicas"]


@dataclass(frozen=True)
class GroupLoad:
    """What one consumer group of a service is doing."""

    group: str
    lag: int
    consume_rate: float
    """Messages per second the group consumed over the last window."""
    arrival_rate: float
    """Messages per second that arrived on the group's topics over the last window."""
    partitions: int
    capacity_per_replica: float | None = None
    """The most one replica was seen to consume per second while backlogged, if ever."""


@dataclass(frozen=True)
class ScalingPolicy:
    drain_s: float = 60.0
    """A backlog should be gone within this many seconds."""
    lag_per_replica: int = 1000
    """With no capacity measured yet: one replica per this many messages of lag."""
    min_replicas: int = 1
    backlog_threshold: int = 10
    """Lag up to this counts as caught up (messages in flight between polls)."""

    def __post_init__(self) -> None:
        if self.drain_s <= 0 or self.lag_per_replica < 1 or self.min_replicas < 0:
            raise ValueError("drain_s > 0, lag_per_replica >= 1 and min_replicas >= 0 required")


def measured_capacity(load: GroupLoad, replicas: int, *, policy: ScalingPolicy) -> float | None:
    """What one replica consumes per second, if ``load`` shows it (a backlog, some progress)."""
    if replicas < 1 or load.lag <= policy.backlog_threshold or load.consume_rate <= 0:
        return None
    return load.consume_rate / replicas


def _group_needs(load: GroupLoad, replicas: int, policy: ScalingPolicy) -> int:
    capacity = measured_capacity(load, replicas, policy=policy) or load.capacity_per_replica
    backlog = load.lag if load.lag > policy.backlog_threshold else 0
    most = max(load.partitions, 1)
    if capacity:
        needed = (load.arrival_rate + backlog / policy.drain_s) / capacity
        wanted = most if not math.isfinite(needed) or needed > most else math.ceil(needed)
    elif backlog:
        wanted = max(replicas, math.ceil(backlog / policy.lag_per_replica))
    else:
        wanted = replicas  # nothing known: leave it as it is
    return min(max(wanted, 1 if backlog else 0), most)


def recommend_replicas(replicas: int, loads: list[GroupLoad], policy: ScalingPolicy) -> int:
    """How many instances the service should run, given ``replicas`` running now."""
    wanted = max((_group_needs(load, replicas, policy) for load in loads), default=replicas)
    return max(wanted, policy.min_replicas)
