"""Consumer lag, throughput and dead-letter counts read from the real broker."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from mainstay_supervisor.monitor import KafkaMonitor
from mainstay_supervisor.scaling import ScalingPolicy
from mainstay_supervisor.store.broker import Broker

if TYPE_CHECKING:
    from typing import Any

    from .conftest import Supervisor

pytestmark = pytest.mark.real


async def consume(bootstrap: str, topic: str, group: str, count: int) -> None:
    """Consume ``count`` more messages of ``topic`` as ``group`` and commit them."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=1,
    )
    await consumer.start()
    try:
        done = 0
        while done < count:
            batch = await consumer.getmany(timeout_ms=500, max_records=count - done)
            for tp, records in batch.items():
                done += len(records)
                await consumer.commit({tp: records[-1].offset + 1})
    finally:
        await consumer.stop()


async def produce(bootstrap: str, topic: str, count: int, partitions: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for n in range(count):
            await producer.send_and_wait(topic, b"{}", partition=n % partitions)
    finally:
        await producer.stop()


async def fleet_when(supervisor: Supervisor, ready: Any) -> dict[str, Any]:
    """``GET /fleet`` once ``ready(body)`` holds (the supervisor samples every second)."""
    for _ in range(100):
        body: dict[str, Any] = (await supervisor.http.get("/fleet")).json()
        if ready(body):
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"the fleet view never got there: {body}")


async def two_samples(
    monitor: KafkaMonitor, bootstrap: str, topic: str, group: str
) -> tuple[Any, Any]:
    first = (await monitor.sample()).groups[group]
    # 10 more consumed and 6 more arrived: the rates come from the two samples.
    await consume(bootstrap, topic, group, 10)
    await produce(bootstrap, topic, 6, 3)
    return first, await monitor.sample()


async def test_lag_and_rates_of_a_consumer_group_as_the_broker_reports_them(
    supervisor: Supervisor,
) -> None:
    bootstrap, prefix = supervisor.kafka.bootstrap, supervisor.kafka.topic_prefix
    topic, dlq = f"{prefix}lag-{uuid.uuid4().hex[:6]}", f"{prefix}work.reader.dlq"
    group = f"{prefix}work.reader"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 3, 1), NewTopic(dlq, 2, 1)])
    finally:
        await admin.close()
    await produce(bootstrap, topic, 30, 3)
    await produce(bootstrap, dlq, 2, 2)
    await consume(bootstrap, topic, group, 10)
    # A monitor of its own, so no background round samples between the test's two.
    async with Broker(supervisor.kafka) as broker:
        monitor = KafkaMonitor(broker, policy=ScalingPolicy(), metrics=None)
        first, second_snapshot = await two_samples(monitor, bootstrap, topic, group)
    assert first.service == "work"
    assert first.topics == (topic,)
    assert first.partitions == 3
    assert first.lag == 20
    second = second_snapshot.groups[group]
    assert second.lag == 16
    assert second.consume_rate is not None
    assert second.consume_rate > 0
    assert second.arrival_rate is not None
    assert second.arrival_rate > 0
    assert second.arrival_rate < second.consume_rate  # 6 arrived while 10 were consumed
    assert second_snapshot.dead_letters[dlq] == 2

    # The service's own rounds show the same in GET /fleet and the autoscaler's gauges.
    fleet = await fleet_when(
        supervisor,
        lambda body: any(g["group"] == group and g["lag"] == 16 for g in body["groups"]),
    )
    assert fleet["dead_letters"][dlq] == 2
    (work,) = [s for s in fleet["scaling"] if s["service"] == "work"]
    assert work["replicas"] == 0  # no instance of "work" sends heartbeats
    assert work["lag"] == 16
    assert work["recommended"] >= 1, "a backlog asks for at least one replica"
    metrics = (await supervisor.http.get("/metrics")).text
    assert f'mainstay_supervisor_consumer_lag{{group="{group}",service="work"}} 16.0' in metrics
    assert f'mainstay_supervisor_dead_letters{{topic="{dlq}"}} 2.0' in metrics
    assert 'mainstay_supervisor_recommended_replicas{service="work"}' in metrics


async def test_the_supervisor_watches_the_meshs_own_groups_by_itself(
    supervisor: Supervisor,
) -> None:
    """Its background round finds its own consumer groups, with no lag left."""
    group = f"{supervisor.kafka.topic_prefix}supervisor.heartbeat"
    fleet = await fleet_when(
        supervisor,
        lambda body: any(
            g["group"] == group and g["consume_rate"] is not None for g in body["groups"]
        ),
    )
    (found,) = [g for g in fleet["groups"] if g["group"] == group]
    assert found["service"] == "supervisor"
    assert found["lag"] >= 0
    scaling = (await supervisor.http.get("/v1/scaling")).json()["services"]
    (own,) = [s for s in scaling if s["service"] == "supervisor"]
    assert own["replicas"] >= 1
    assert own["recommended"] >= 1


async def test_the_fleet_view_never_shows_one_rounds_groups_with_anothers_scaling(
    supervisor: Supervisor,
) -> None:
    bootstrap, prefix = supervisor.kafka.bootstrap, supervisor.kafka.topic_prefix
    topic, group = f"{prefix}rounds-{uuid.uuid4().hex[:6]}", f"{prefix}rounds.reader"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    await produce(bootstrap, topic, 5, 1)
    await consume(bootstrap, topic, group, 2)

    class SlowFleet:
        """The fleet's instances, read slowly (a database query takes a while)."""

        async def view(self) -> list[dict[str, Any]]:
            await asyncio.sleep(0.2)
            return []

    views: list[dict[str, Any]] = []

    async def watch(monitor: KafkaMonitor) -> None:
        while True:
            views.append(monitor.view())
            await asyncio.sleep(0.01)

    async with Broker(supervisor.kafka) as broker:
        monitor = KafkaMonitor(broker, policy=ScalingPolicy(), metrics=None)
        watcher = asyncio.create_task(watch(monitor))
        try:
            for _ in range(3):
                await monitor.observe(SlowFleet())  # type: ignore[arg-type]
                await produce(bootstrap, topic, 1, 1)  # the next round sees more lag
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
    assert any(view["groups"] for view in views)
    for view in views:
        lag_by_service: dict[str, int] = {}
        for state in view["groups"]:
            lag_by_service[state["service"]] = (
                lag_by_service.get(state["service"], 0) + state["lag"]
            )
        assert {s["service"]: s["lag"] for s in view["scaling"]} == lag_by_service, view
