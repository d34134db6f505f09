"""What the broker says about the mesh: consumer lag, throughput, dead letters.

Every ``SUPERVISOR_MONITOR_INTERVAL_S`` the monitor reads, through the Kafka
admin API, every consumer group's committed offsets and every topic's first and
next offsets (only the topics and groups of ``MAINSTAY_KAFKA_TOPIC_PREFIX`` when
one is set). From two samples it derives rates: how fast each group consumes
and how fast messages arrive on the topics it reads. Lag counts a partition the
group has never committed on from its first offset (the bus starts a new group
at the earliest message).

Committed offsets are asked for partition by partition, which works on every
Kafka-API broker (the embedded one does not answer the "all partitions"
form). The results feed ``GET /fleet``, ``GET /v1/scaling`` and the
``mainstay_supervisor_*`` gauges an autoscaler reads.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import Gauge

from mainstay_common.errors import DependencyUnavailable
from mainstay_supervisor.scaling import (
    GroupLoad,
    ScalingPolicy,
    measured_capacity,
    recommend_replicas,
)

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from mainstay_common.settings import KafkaSettings
    from mainstay_supervisor.fleet import Fleet

__all__ = ["GroupState", "KafkaMonitor", "MonitorMetrics", "Snapshot"]

_log = logging.getLogger("mainstay.supervisor.monitor")


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
        self, kafka: KafkaSettings, *, policy: ScalingPolicy, metrics: MonitorMetrics | None
    ) -> None:
        self._kafka = kafka
        self._prefix = kafka.topic_prefix
        self.policy = policy
        self._metrics = metrics
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()
        self.latest: Snapshot | None = None
        self.capacities: dict[str, float] = {}
        self.recommendations: dict[str, dict[str, Any]] = {}

    async def start(self) -> None:
        timeout_ms = int(self._kafka.request_timeout_s * 1000)
        self._admin = AIOKafkaAdminClient(
            bootstrap_servers=self._kafka.bootstrap,
            client_id="mainstay-supervisor-monitor",
            request_timeout_ms=timeout_ms,
        )
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._kafka.bootstrap,
            client_id="mainstay-supervisor-monitor",
            enable_auto_commit=False,
            request_timeout_ms=timeout_ms,
        )
        try:
            await self._admin.start()
            await self._consumer.start()
        except Exception as exc:
            await self.close()
            raise DependencyUnavailable(
                f"cannot reach the broker at {self._kafka.bootstrap}: {exc!r}"
            ) from exc

    async def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        admin, self._admin = self._admin, None
        if consumer is not None:
            await consumer.stop()
        if admin is not None:
            await admin.close()

    async def __aenter__(self) -> KafkaMonitor:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _ours(self, name: str) -> bool:
        return name.startswith(self._prefix) and not name.startswith("__")

    def service_of(self, group: str) -> str:
        """``<service>.<handler>`` is Mainstay's group name; anything else is its own service."""
        return group.removeprefix(self._prefix).split(".", 1)[0]

    async def sample(self) -> Snapshot:
        """Read offsets now; rates against the previous sample."""
        async with self._lock:
            try:
                snapshot = await self._read(self.latest)
            except DependencyUnavailable:
                raise
            except Exception as exc:
                raise DependencyUnavailable(
                    f"cannot read offsets from the broker: {exc!r}"
                ) from exc
            self.latest = snapshot
            return snapshot

    async def _read(self, previous: Snapshot | None) -> Snapshot:
        admin, consumer = self._admin, self._consumer
        if admin is None or consumer is None:
            raise RuntimeError("the monitor is not started")
        taken_at = time.monotonic()
        topics = sorted(t for t in await admin.list_topics() if self._ours(t))
        described = await admin.describe_topics(topics) if topics else []
        partitions = sorted(
            TopicPartition(str(entry["topic"]), int(part["partition"]))
            for entry in described
            if not entry.get("error_code")
            for part in entry.get("partitions", ())
        )
        topics = sorted({tp.topic for tp in partitions})
        if not partitions:
            return Snapshot(taken_at=taken_at)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        starts: dict[TopicPartition, int] = await consumer.beginning_offsets(partitions)
        topic_ends: dict[str, int] = defaultdict(int)
        topic_starts: dict[str, int] = defaultdict(int)
        partitions_of: dict[str, list[TopicPartition]] = defaultdict(list)
        for tp in partitions:
            topic_ends[tp.topic] += ends.get(tp, 0)
            topic_starts[tp.topic] += starts.get(tp, 0)
            partitions_of[tp.topic].append(tp)
        groups: dict[str, GroupState] = {}
        for group, protocol in await admin.list_consumer_groups():
            if protocol not in ("consumer", "") or not self._ours(group):
                continue
            committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
            read = sorted({tp.topic for tp, meta in committed.items() if meta.offset >= 0})
            if not read:
                continue
            lag = consumed = 0
            for topic in read:
                for tp in partitions_of[topic]:
                    meta = committed.get(tp)
                    position = meta.offset if meta is not None and meta.offset >= 0 else None
                    start = starts.get(tp, 0)
                    position = start if position is None else max(position, start)
                    lag += max(0, ends.get(tp, 0) - position)
                    consumed += position
            groups[group] = GroupState(
                group=group,
                service=self.service_of(group),
                topics=tuple(read),
                partitions=max(len(partitions_of[t]) for t in read),
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
            topic: topic_ends[topic] - topic_starts[topic]
            for topic in topics
            if topic.endswith(".dlq")
        }
        return Snapshot(
            taken_at=taken_at,
            groups=groups,
            topic_ends=dict(topic_ends),
            dead_letters=dead_letters,
        )

    async def observe(self, fleet: Fleet) -> int:
        """One round: sample the broker, size each service by its instances up, export.

        Returns 0 (a round is never "a full batch"; see ``sweep_forever``).
        """
        await self.sample()
        instances = await fleet.view()
        replicas: dict[str, int] = defaultdict(int)
        for entry in instances:
            if entry["status"] == "up":
                replicas[entry["service"]] += 1
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
