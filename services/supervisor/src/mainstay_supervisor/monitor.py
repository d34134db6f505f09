"""What the broker says about the mesh: consumer lag, throughput, dead letters.

Every ``SUPERVISOR_MONITOR_INTERVAL_S`` the monitor reads, through the Kafka
admin API (:class:`~mainstay_supervisor.store.broker.Broker`), every consumer group's committed offsets and every topic's first and
next offsets (only the topics and groups of ``MAINSTAY_KAFKA_TOPIC_PREFIX`` when
one is set). From two samples it derives rates: how fast each group consumes
and how fast messages arrive on the topics it reads. Lag counts a partition the
group has never committed on from its first offset (the bus starts a new group
at the earliest message).

The results feed ``GET /fleet``, ``GET /v1/scaling`` and the
``mainstay_supervisor_*`` gauges an autoscaler reads.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiokafka import TopicPartition
from prometheus_client import Gauge

from mainstay_supervisor.scaling import (
    GroupLoad,
    ScalingPolicy,
    measured_capacity,
    recommend_replicas,
)
from mainstay_supervisor.store.broker import DLQ_SUFFIX

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from mainstay_supervisor.fleet import Fleet
    from mainstay_supervisor.store.broker import Broker

__all__ = ["GroupState", "KafkaMonitor", "MonitorMetrics", "Snapshot"]


@dataclass(frozen=True)
class GroupState:
    group: str
    service: str
    topics: tuple[str, ...]
    partitions: int
    lag: int
    consumed: int
    """The sum of the group's committed offsets (grows by what it consumes)."""
    consume_rate: float | None
    arrival_rate: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "service": self.service,
            "topics": list(self.topics),
            "partitions": self.partitions,
            "lag": self.lag,
            "consume_rate": self.consume_rate,
            "arrival_rate": self.arrival_rate,
        }


@dataclass(frozen=True)
class Snapshot:
    """One sample of the broker; rates are ``None`` on the first sample."""

    taken_at: float
    groups: dict[str, GroupState] = field(default_factory=dict)
    topic_ends: dict[str, int] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)
    """Messages on each ``*.dlq`` topic (what the broker still keeps)."""

    def loads(self, service: str, capacities: dict[str, float]) -> list[GroupLoad]:
        return [
            GroupLoad(
                group=state.group,
                lag=state.lag,
                consume_rate=state.consume_rate or 0.0,
                arrival_rate=state.arrival_rate or 0.0,
                partitions=state.partitions,
                capacity_per_replica=capacities.get(state.group),
            )
            for state in self.groups.values()
            if state.service == service
        ]


class MonitorMetrics:
    """The gauges an operator or a horizontal autoscaler reads."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.lag = Gauge(
            "mainstay_supervisor_consumer_lag",
            "Messages a consumer group has not consumed yet.",
            ["service", "group"],
            registry=registry,
        )
        self.consume_rate = Gauge(
            "mainstay_supervisor_consume_rate",
            "Messages per second a consumer group consumed over the last sample.",
            ["service", "group"],
            registry=registry,
        )
        self.arrival_rate = Gauge(
            "mainstay_supervisor_arrival_rate",
            "Messages per second that arrived on a consumer group's topics.",
            ["service", "group"],
            registry=registry,
        )
        self.dead_letters = Gauge(
            "mainstay_supervisor_dead_letters",
            "Messages on a dead-letter topic.",
            ["topic"],
            registry=registry,
        )
        self.instances = Gauge(
            "mainstay_supervisor_instances",
            "Service instances by status (up, stale, dead).",
            ["service", "status"],
            registry=registry,
        )
        self.recommended = Gauge(
            "mainstay_supervisor_recommended_replicas",
            "Replicas the supervisor recommends per service, from lag and throughput.",
            ["service"],
            registry=registry,
        )


class KafkaMonitor:
    """Samples the broker; keeps the latest snapshot and what each group can do."""

    def __init__(
        self, broker: Broker, *, policy: ScalingPolicy, metrics: MonitorMetrics | None
    ) -> None:
        self._broker = broker
        self._prefix = broker.topic_prefix
        self.policy = policy
        self._metrics = metrics
        self._lock = asyncio.Lock()
        self.latest: Snapshot | None = None
        self.capacities: dict[str, float] = {}
        self.recommendations: dict[str, dict[str, Any]] = {}

    def _ours(self, name: str) -> bool:
        return name.startswith(self._prefix) and not name.startswith("__")

    def service_of(self, group: str) -> str:
        """``<service>.<handler>`` is Mainstay's group name; anything else is its own service."""
        return group.removeprefix(self._prefix).split(".", 1)[0]

    async def sample(self) -> Snapshot:
        """Read offsets now; rates against the previous sample."""
        async with self._lock:
            self.latest = await self._read(self.latest)
            return self.latest

    async def _read(self, previous: Snapshot | None) -> Snapshot:
        taken_at = time.monotonic()
        topics = {t: n for t, n in (await self._broker.topics()).items() if self._ours(t)}
        if not topics:
            return Snapshot(taken_at=taken_at)
        bounds = await self._broker.bounds({topic: range(n) for topic, n in topics.items()})
        partitions = [TopicPartition(t, p) for t in sorted(bounds) for p in sorted(bounds[t])]
        topic_ends = {t: sum(end for _, end in spans.values()) for t, spans in bounds.items()}
        groups: dict[str, GroupState] = {}
        for group in await self._broker.consumer_groups():
            if not self._ours(group):
                continue
            committed = await self._broker.committed(group, partitions)
            read = sorted({tp.topic for tp in committed})
            if not read:
                continue
            lag = consumed = 0
            for topic in read:
                for partition, (first, end) in bounds[topic].items():
                    # Never committed on: the bus starts a new group at the first offset.
                    position = max(committed.get(TopicPartition(topic, partition), first), first)
                    lag += max(0, end - position)
                    consumed += position
            groups[group] = GroupState(
                group=group,
                service=self.service_of(group),
                topics=tuple(read),
                partitions=max(len(bounds[t]) for t in read),
                lag=lag,
                consumed=consumed,
                consume_rate=None,
                arrival_rate=None,
            )
        if previous is not None and taken_at > previous.taken_at:
            elapsed = taken_at - previous.taken_at
            for name, state in groups.items():
                before = previous.groups.get(name)
                if before is None:
                    continue
                arrived = sum(
                    topic_ends[t] - previous.topic_ends.get(t, topic_ends[t]) for t in state.topics
                )
                groups[name] = dataclasses.replace(
                    state,
                    consume_rate=max(0, state.consumed - before.consumed) / elapsed,
                    arrival_rate=max(0, arrived) / elapsed,
                )
        dead_letters = {
            topic: sum(end - first for first, end in spans.values())
            for topic, spans in bounds.items()
            if topic.endswith(DLQ_SUFFIX)
        }
        return Snapshot(
            taken_at=taken_at,
            groups=groups,
            topic_ends=topic_ends,
            dead_letters=dead_letters,
        )

    async def observe(self, fleet: Fleet) -> int:
        """One round: sample the broker, size each service by its instances up, export.

        Returns 0 (a round is never "a full batch"; see ``sweep_forever``).
        """
        instances = await fleet.view()
        replicas: dict[str, int] = defaultdict(int)
        for entry in instances:
            if entry["status"] == "up":
                replicas[entry["service"]] += 1
        await self.sample()
        # Nothing awaited from here on: GET /fleet never shows this round's groups
        # beside the last round's scaling.
        self.recommend(dict(replicas))
        self.export(instances)
        return 0

    def view(self) -> dict[str, Any]:
        """The latest sample for ``GET /fleet``: groups, dead letters, scaling."""
        snapshot = self.latest
        if snapshot is None:
            return {"groups": [], "dead_letters": {}, "scaling": []}
        return {
            "groups": [state.to_json() for _, state in sorted(snapshot.groups.items())],
            "dead_letters": dict(sorted(snapshot.dead_letters.items())),
            "scaling": [self.recommendations[s] for s in sorted(self.recommendations)],
        }

    def recommend(self, replicas: dict[str, int]) -> dict[str, dict[str, Any]]:
        """Recommended replicas per service (``replicas``: instances up now, by service)."""
        snapshot = self.latest
        if snapshot is None:
            return {}
        services = set(replicas) | {state.service for state in snapshot.groups.values()}
        answer: dict[str, dict[str, Any]] = {}
        for service in sorted(services):
            current = replicas.get(service, 0)
            loads = snapshot.loads(service, self.capacities)
            for load in loads:
                measured = measured_capacity(load, current, policy=self.policy)
                if measured is not None:
                    self.capacities[load.group] = measured
            answer[service] = {
                "service": service,
                "replicas": current,
                "recommended": recommend_replicas(current, loads, self.policy),
                "lag": sum(load.lag for load in loads),
                "consume_rate": sum(load.consume_rate for load in loads),
                "arrival_rate": sum(load.arrival_rate for load in loads),
            }
        self.recommendations = answer
        return answer

    def export(self, instances: list[dict[str, Any]]) -> None:
        """Set the gauges from the latest snapshot and ``instances`` (the fleet view)."""
        metrics, snapshot = self._metrics, self.latest
        if metrics is None or snapshot is None:
            return
        for gauge in (metrics.lag, metrics.consume_rate, metrics.arrival_rate):
            gauge.clear()
        for state in snapshot.groups.values():
            metrics.lag.labels(state.service, state.group).set(state.lag)
            if state.consume_rate is not None:
                metrics.consume_rate.labels(state.service, state.group).set(state.consume_rate)
            if state.arrival_rate is not None:
                metrics.arrival_rate.labels(state.service, state.group).set(state.arrival_rate)
        metrics.dead_letters.clear()
        for topic, count in snapshot.dead_letters.items():
            metrics.dead_letters.labels(topic).set(count)
        counts: dict[tuple[str, str], int] = defaultdict(int)
        for entry in instances:
            counts[entry["service"], entry["status"]] += 1
        metrics.instances.clear()
        for (service, status), count in counts.items():
            metrics.instances.labels(service, status).set(count)
        metrics.recommended.clear()
        for service, row in self.recommendations.items():
            metrics.recommended.labels(service).set(row["recommended"])
