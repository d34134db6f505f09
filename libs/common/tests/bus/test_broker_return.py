"""The embedded broker stopped and started again, empty, on the same address."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import pytest

from mainstay_common.bus import Bus, Event
from mainstay_common.errors import DependencyUnavailable
from mainstay_common.settings import KafkaSettings
from mainstay_common.testing import PrivateBroker

from .conftest import FAST_RETRY, ORDERS, Order, order, wait_for

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


async def _publish_until_accepted(bus: Bus, message: Order, wait_s: float = 60.0) -> int:
    """Publish as a client should: a retryable refusal is tried again. Returns refusals."""
    refused = 0
    deadline = time.monotonic() + wait_s
    while True:
        try:
            await bus.publish(ORDERS, message)
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
