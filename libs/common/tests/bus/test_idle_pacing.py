"""Idle consumers fetch less often, and their first record switches them back."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import TYPE_CHECKING

import pytest

from mainstay_common.bus import Bus
from mainstay_common.bus._bus import _IdlePacing
from mainstay_common.settings import KafkaSettings

from .conftest import FAST_RETRY, ORDERS, Order, order, wait_for

if TYPE_CHECKING:
    from mainstay_common.bus import Event


def _consumer(wait_ms: int) -> SimpleNamespace:
    return SimpleNamespace(_fetcher=SimpleNamespace(_fetch_max_wait_ms=wait_ms))


def test_a_consumer_is_paced_after_a_quiet_spell_and_unpaced_by_a_record() -> None:
    pacing = _IdlePacing(busy_ms=100, idle_ms=400, idle_after_s=0.05)
    consumer = _consumer(100)
    pacing.polled(consumer, found=False)
    assert consumer._fetcher._fetch_max_wait_ms == 100  # not quiet for long yet
    time.sleep(0.06)
    pacing.polled(consumer, found=False)
    assert consumer._fetcher._fetch_max_wait_ms == 400
    pacing.polled(consumer, found=True)
    assert consumer._fetcher._fetch_max_wait_ms == 100
    pacing.polled(consumer, found=False)  # the quiet spell starts again from here
    assert consumer._fetcher._fetch_max_wait_ms == 100


def test_pacing_is_off_when_the_idle_wait_is_not_longer() -> None:
    settings = KafkaSettings(fetch_max_wait_ms=200, idle_fetch_max_wait_ms=50)
    pacing = _IdlePacing.from_settings(settings)
    assert (pacing.busy_ms, pacing.idle_ms) == (200, 200)
    consumer = _consumer(200)
    pacing.idle_after_s = 0
    pacing.polled(consumer, found=False)
    pacing.polled(consumer, found=False)
    assert consumer._fetcher._fetch_max_wait_ms == 200


def test_a_fetcher_without_the_setting_is_refused_by_name() -> None:
    pacing = _IdlePacing(busy_ms=100, idle_ms=400, idle_after_s=0)
    pacing.polled(SimpleNamespace(), found=False)
    with pytest.raises(RuntimeError, match="no fetch wait to set; check the pin"):
        pacing.polled(SimpleNamespace(), found=False)


@pytest.mark.real
async def test_an_idle_consumer_still_gets_its_next_record(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    bus = Bus(
        service="shop",
        kafka=KafkaSettings(
            bootstrap=kafka_bootstrap,
            topic_prefix=topic_prefix,
            session_timeout_ms=2000,
            heartbeat_interval_ms=300,
            idle_fetch_max_wait_ms=400,
            idle_after_s=0.5,
        ),
        retry=FAST_RETRY,
        shutdown_grace_s=5.0,
    )
    handled: list[str] = []

    @bus.subscriber(ORDERS, handler="quiet")
    async def quiet(event: Event[Order]) -> None:
        handled.append(event.payload.order_id)

    async with bus:
        kafka_consumer = bus._subscribers[f"{topic_prefix}shop.quiet"].consumer

        def fetch_wait() -> int:
            return int(kafka_consumer._fetcher._fetch_max_wait_ms)

        await wait_for(lambda: fetch_wait() == 400, what="the idle consumer to be paced")
        await bus.publish(ORDERS, order("after-quiet"))
        await wait_for(lambda: handled == ["after-quiet"], what="the record after the quiet spell")
        assert fetch_wait() == 100  # busy again: its next fetches wait the usual time
        await asyncio.sleep(1.0)
        assert fetch_wait() == 400  # and quiet again
