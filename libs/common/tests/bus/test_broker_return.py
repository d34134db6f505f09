"""The embedded broker stopped and started again, empty, on the same address."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import NewTopic
from aiokafka.partitioner import murmur2

from mainstay_common.bus import Bus, Event, refuse_topic_auto_creation
from mainstay_common.bus._topics import create_missing_topics
from mainstay_common.errors import DependencyUnavailable
from mainstay_common.settings import KafkaSettings
from mainstay_common.testing import PrivateBroker
from mainstay_contracts import TopicSpec

from .conftest import FAST_RETRY, ORDERS, Order, order, read_topic, wait_for

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = [pytest.mark.real, pytest.mark.timeout(180)]


@contextlib.asynccontextmanager
async def _own_broker() -> AsyncIterator[PrivateBroker]:
    home = Path(tempfile.mkdtemp(prefix="mainstay-bus-broker-"))
    broker = PrivateBroker(home)
    try:
        await broker.start()
        yield broker
    finally:
        await broker.stop()
        shutil.rmtree(home, ignore_errors=True)


def _bus(service: str, bootstrap: str) -> Bus:
    return Bus(
        service=service,
        kafka=KafkaSettings(
            bootstrap=bootstrap, session_timeout_ms=2000, heartbeat_interval_ms=300
        ),
        retry=FAST_RETRY,
        shutdown_grace_s=5.0,
    )


async def _publish_until_accepted(
    bus: Bus, message: Order, wait_s: float = 60.0, *, spec: TopicSpec[Order] = ORDERS
) -> int:
    """Publish as a client should: a retryable refusal is tried again, with the same
    message (one event id, so a consumer's inbox skips a copy if a refused send was
    written after all). Returns refusals."""
    outgoing = bus.message(spec, message)
    refused = 0
    deadline = time.monotonic() + wait_s
    while True:
        try:
            await bus.send(outgoing)
        except DependencyUnavailable:
            refused += 1
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
        else:
            return refused


def _owner(bootstrap: str, seen: list[str]) -> Bus:
    owner = _bus("shop", bootstrap)

    @owner.subscriber(ORDERS, handler="place")
    async def place(event: Event[Order]) -> None:
        seen.append(event.payload.note)

    return owner


async def test_a_send_after_the_broker_came_back_empty_waits_for_its_topic() -> None:
    """The client sends nothing while the broker is away, yet notices (its producer's
    connection broke), so its first send after the return checks that the topic is
    there. The embedded broker would otherwise acknowledge that send to a topic it no
    longer has and drop it when the topic's owner creates the topic again. Here the
    owner is down across the restart: the send is refused as retryable until the owner
    starts and creates its topic, then delivered once."""
    async with _own_broker() as broker:
        seen: list[str] = []
        async with _bus("till", broker.bootstrap) as client:
            async with _owner(broker.bootstrap, seen):
                await _publish_until_accepted(client, order("o-1", note="before"))
                await wait_for(lambda: "before" in seen, wait_s=30, what="the order before")

            await broker.stop()
            await asyncio.sleep(2)  # nobody sends meanwhile
            await broker.start()

            sending = asyncio.create_task(
                _publish_until_accepted(client, order("o-1", note="after"))
            )
            await asyncio.sleep(3)
            assert not sending.done(), "a send to a topic the broker no longer has was accepted"
            async with _owner(broker.bootstrap, seen):
                refusals = await sending
                await wait_for(lambda: "after" in seen, wait_s=60, what="the order sent after")
                await _publish_until_accepted(client, order("o-1", note="later"))
                await wait_for(lambda: "later" in seen, wait_s=30, what="a later order")
        assert refusals > 0
        assert seen == ["before", "after", "later"]


def test_an_aiokafka_without_the_connection_hook_is_refused_by_name() -> None:
    bus = _bus("till", "127.0.0.1:9")
    with pytest.raises(RuntimeError, match="no connection-closed hook; check the pin"):
        bus._notice_broken_connections(SimpleNamespace(client=SimpleNamespace()))  # type: ignore[arg-type]


WIDE = TopicSpec(
    name="shop.cmd.place-wide-order.v1",
    owner="shop",
    kind="cmd",
    key_field="order_id",
    payload=Order,
    partitions=6,  # more than the embedded broker's default of 4
)


def _ids_on_every_partition(partitions: int) -> list[str]:
    """One order id per partition (by the producers' default partitioner)."""
    picked: dict[int, str] = {}
    for n in itertools.count():
        order_id = f"o-{n}"
        partition = int(murmur2(order_id.encode()) & 0x7FFFFFFF) % partitions
        picked.setdefault(partition, order_id)
        if len(picked) == partitions:
            return [picked[p] for p in range(partitions)]
    raise AssertionError("unreachable")


async def _partitions_of(bootstrap: str, topic: str) -> set[int] | None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        found: set[int] | None = (await producer.client.fetch_all_metadata()).partitions_for_topic(
            topic
        )
        return found
    finally:
        await producer.stop()


async def test_a_consumer_does_not_create_its_topic_with_the_brokers_partition_count() -> None:
    """Right after the empty broker's return, the owner's consumer asks for its topic's
    metadata before the owner's topic check creates it: a request that let the broker
    create the topic would give it the broker's 4 partitions instead of the declared 6,
    and a producer that knew 6 would write to partitions the broker does not have. The
    topic comes back with its 6 partitions and every order sent after the return, one
    per partition, is handled.

    The handler has no inbox, so delivery is at least once: the consumer goes back to
    its group's committed offsets after the return, and a record handled while it asks
    for them may be handled again. That is a redelivery of the same message (one event
    id), which an inbox skips; two messages for one order would be a second write."""
    async with _own_broker() as broker:
        handled: dict[str, set[str]] = {}
        ids = _ids_on_every_partition(WIDE.partitions)
        owner = _bus("shop", broker.bootstrap)

        @owner.subscriber(WIDE, handler="place")
        async def place(event: Event[Order]) -> None:
            handled.setdefault(f"{event.payload.order_id}/{event.payload.note}", set()).add(
                event.id
            )

        async with owner, _bus("till", broker.bootstrap) as client:
            for order_id in ids:
                await _publish_until_accepted(client, order(order_id, note="before"), spec=WIDE)
            await wait_for(lambda: len(handled) == len(ids), wait_s=30, what="the orders before")
            await broker.stop()
            await asyncio.sleep(2)
            await broker.start()
            for order_id in ids:
                await _publish_until_accepted(client, order(order_id, note="after"), spec=WIDE)
            expected = {f"{i}/{note}" for i in ids for note in ("before", "after")}
            await wait_for(lambda: handled.keys() == expected, wait_s=60, what="the orders after")
            topic = f"{client.kafka.topic_prefix}{WIDE.name}"
            assert await _partitions_of(broker.bootstrap, topic) == set(range(WIDE.partitions))
        assert {label: len(event_ids) for label, event_ids in handled.items()} == dict.fromkeys(
            expected, 1
        )


async def test_a_consumer_left_without_partitions_after_the_return_gets_them_again() -> None:
    """A consumer whose group was assigned while its topics were still missing holds no
    partitions, and aiokafka may never notice the topics' return (seen once: no
    rebalance for over a minute). After the broker's return the bus asks such a
    consumer's group to rebalance, so the order sent meanwhile is handled.

    The state is set by hand here: the absence as the producer's broken connection
    signals it, then an empty assignment in a stable group, as after that race."""
    async with _own_broker() as broker:
        seen: list[str] = []
        async with (
            _owner(broker.bootstrap, seen) as owner,
            _bus("till", broker.bootstrap) as client,
        ):
            await _publish_until_accepted(client, order("o-1", note="before"))
            await wait_for(lambda: "before" in seen, wait_s=30, what="the order before")
            [consumer] = owner._kafka_consumers()
            owner._broker_lost.set()
            await wait_for(lambda: not owner._broker_lost.is_set(), what="the absence noticed")
            consumer._subscription.assign_from_subscribed(set())
            await _publish_until_accepted(client, order("o-1", note="after"))
            await wait_for(lambda: "after" in seen, wait_s=30, what="the order after")
            assert consumer.assignment()
        assert seen.count("after") == 1


async def test_a_producer_that_knew_more_partitions_learns_the_new_count_before_sending() -> None:
    """A topic created again with fewer partitions (by anyone) while a bus still knows the
    old count: its sends after the broker's return go to partitions that exist, so none
    is acknowledged and then dropped."""
    async with _own_broker() as broker:
        ids = _ids_on_every_partition(WIDE.partitions)
        async with _bus("till", broker.bootstrap) as client:
            topic = f"{client.kafka.topic_prefix}{WIDE.name}"
            await create_missing_topics(broker.bootstrap, [NewTopic(topic, 6, 1)])
            for order_id in ids:
                await _publish_until_accepted(client, order(order_id, note="before"), spec=WIDE)
            await broker.stop()
            await asyncio.sleep(2)
            await broker.start()
            await create_missing_topics(broker.bootstrap, [NewTopic(topic, 4, 1)])
            for order_id in ids:
                await _publish_until_accepted(client, order(order_id, note="after"), spec=WIDE)
            records = await read_topic(broker.bootstrap, topic, count=len(ids), wait_s=20)
        assert sorted(record.key for record in records) == sorted(i.encode() for i in ids)


async def test_a_group_consumer_of_a_missing_topic_leaves_it_to_its_owner() -> None:
    """With the bus's clients (any Bus started in the process turns it on), a consumer
    whose topic went missing (the embedded broker came back empty) waits for it
    instead of having the broker create it with the broker's default partition count."""
    refuse_topic_auto_creation()
    topic = "shop.cmd.not-yet.v1"
    async with _own_broker() as broker:
        await create_missing_topics(broker.bootstrap, [NewTopic(topic, 6, 1)])
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=broker.bootstrap,
            group_id="not-yet",
            enable_auto_commit=False,
            metadata_max_age_ms=500,
        )
        await consumer.start()
        try:
            await broker.stop()
            await asyncio.sleep(1)
            await broker.start()
            await asyncio.sleep(3)  # several metadata requests naming the topic
            assert await _partitions_of(broker.bootstrap, topic) is None
        finally:
            await consumer.stop()
