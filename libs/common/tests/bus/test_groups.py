"""Consumer groups across instances, and graceful shutdown."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from mainstay_common.bus import dlq_topic
from mainstay_common.lifecycle import within
from mainstay_common.testing import read_records

from .conftest import ORDERS, Order, order, wait_for

if TYPE_CHECKING:
    from mainstay_common.bus import Event

pytestmark = pytest.mark.real


def _origin_partitions(bus, group: str, origin: str) -> set[int]:
    return {p for topic, p in bus.assignment().get(group, set()) if topic == origin}


async def test_two_instances_share_partitions_and_one_takes_over(make_bus, topic_prefix) -> None:
    handled: dict[str, list[str]] = {"a": [], "b": []}
    buses = {}
    for name in ("a", "b"):
        bus = make_bus(instance_id=name)

        @bus.subscriber(ORDERS, handler="share")
        async def share(event: Event[Order], name: str = name) -> None:
            handled[name].append(event.payload.order_id)

        buses[name] = bus

    group = f"{topic_prefix}shop.share"
    origin = f"{topic_prefix}{ORDERS.name}"
    a, b = buses["a"], buses["b"]
    async with a:
        await b.start()
        try:
            await wait_for(
                lambda: (
                    _origin_partitions(a, group, origin)
                    and _origin_partitions(b, group, origin)
                    and len(
                        _origin_partitions(a, group, origin) | _origin_partitions(b, group, origin)
                    )
                    == ORDERS.partitions
                ),
                what="both instances to own partitions",
            )
            assert not _origin_partitions(a, group, origin) & _origin_partitions(b, group, origin)
            ids = [f"first-{n}" for n in range(30)]
            for order_id in ids:
                await a.publish(ORDERS, order(order_id))
            await wait_for(
                lambda: len(handled["a"]) + len(handled["b"]) >= len(ids), what="the first batch"
            )
            assert handled["a"], handled
            assert handled["b"], handled
            assert sorted(handled["a"] + handled["b"]) == sorted(ids)
        finally:
            await b.close()

        await wait_for(
            lambda: len(_origin_partitions(a, group, origin)) == ORDERS.partitions,
            what="instance a to take over every partition",
        )
        later = [f"later-{n}" for n in range(15)]
        for order_id in later:
            await a.publish(ORDERS, order(order_id))
        await wait_for(lambda: set(later) <= set(handled["a"]), what="the takeover")
    assert not set(later) & set(handled["b"])


async def test_close_lets_the_in_flight_handler_finish_and_commits_it(make_bus) -> None:
    started = asyncio.Event()
    finished: list[str] = []
    first = make_bus()

    @first.subscriber(ORDERS, handler="slow")
    async def slow(event: Event[Order]) -> None:
        started.set()
        await asyncio.sleep(1.0)
        finished.append(event.payload.order_id)

    await first.start()
    await first.publish(ORDERS, order("in-flight"))
    await within(started.wait(), 20)
    await first.close()
    assert finished == ["in-flight"]

    # the offset was committed: a new instance of the group does not see it again
    again: list[str] = []
    second = make_bus()

    @second.subscriber(ORDERS, handler="slow")
    async def slow_again(event: Event[Order]) -> None:
        again.append(event.payload.order_id)

    async with second:
        await second.publish(ORDERS, order("next"))
        await wait_for(lambda: again == ["next"], what="the next message")
    assert again == ["next"]


async def test_unacknowledged_message_is_redelivered_after_a_crash(make_bus) -> None:
    first = make_bus(shutdown_grace_s=0.2)
    started = asyncio.Event()

    @first.subscriber(ORDERS, handler="crashy")
    async def crashy(event: Event[Order]) -> None:
        started.set()
        await asyncio.sleep(30)  # still running when the process goes away

    await first.start()
    await first.publish(ORDERS, order("survivor"))
    await within(started.wait(), 20)
    await first.close()  # the grace runs out: the handler is abandoned, not acknowledged

    recovered: list[str] = []
    second = make_bus()

    @second.subscriber(ORDERS, handler="crashy")
    async def crashy_again(event: Event[Order]) -> None:
        recovered.append(event.payload.order_id)

    async with second:
        await wait_for(lambda: recovered == ["survivor"], what="the redelivery")


async def test_a_transient_failure_at_shutdown_is_left_for_the_next_owner_not_dead_lettered(
    make_bus, kafka_bootstrap: str, topic_prefix: str
) -> None:
    first = make_bus()
    failing = asyncio.Event()

    @first.subscriber(ORDERS, handler="ordered", blocking=True)
    async def ordered(event: Event[Order]) -> None:
        failing.set()
        await first.closing.wait()
        raise RuntimeError("deadlock detected")  # transient: the next try would succeed

    await first.start()
    await first.publish(ORDERS, order("at-shutdown"))
    await within(failing.wait(), 20)
    await first.close()

    handled: list[str] = []
    second = make_bus()

    @second.subscriber(ORDERS, handler="ordered", blocking=True)
    async def ordered_again(event: Event[Order]) -> None:
        handled.append(event.payload.order_id)

    async with second:
        await wait_for(lambda: handled == ["at-shutdown"], what="the redelivery")
    dead = await read_records(
        kafka_bootstrap, dlq_topic(f"{topic_prefix}shop.ordered"), count=1, wait_s=3
    )
    assert dead == []
