"""Heartbeats over the real broker: what the bus has in hand, the beat, and its failures."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from importlib import metadata
from typing import TYPE_CHECKING, Any

import pytest

import mainstay_common.heartbeat
from mainstay_common.bus import Bus
from mainstay_common.errors import DependencyUnavailable, NotFound
from mainstay_common.heartbeat import Heartbeats, service_version
from mainstay_common.lifecycle import within
from mainstay_common.service import ServiceApp
from mainstay_common.settings import HeartbeatSettings, ServiceSettings
from mainstay_common.testing import read_records
from mainstay_contracts.supervisor import HEARTBEAT, HeartbeatCommand

from .conftest import ORDERS, Order, order, wait_for

if TYPE_CHECKING:
    import contextlib
    from collections.abc import Callable

    from aiokafka import ConsumerRecord

    from mainstay_common.bus import Event

INTERVAL_S = 0.1


def beat(record: ConsumerRecord[bytes, bytes]) -> HeartbeatCommand:
    return HeartbeatCommand.model_validate_json(record.value)


async def read_beats(
    kafka_bootstrap: str,
    topic_prefix: str,
    count: int,
    accept: Callable[[HeartbeatCommand], bool] = lambda _: True,
) -> list[ConsumerRecord[bytes, bytes]]:
    records = await read_records(
        kafka_bootstrap,
        f"{topic_prefix}{HEARTBEAT.name}",
        count=count,
        accept=lambda record: accept(beat(record)),
    )
    assert len(records) >= count, f"expected {count} heartbeats, got {len(records)}"
    return records


# -- without a broker ----------------------------------------------------------------


def test_public_names_are_stable() -> None:
    assert mainstay_common.heartbeat.__all__ == ["Heartbeats", "service_version"]


def test_the_version_is_that_of_the_service_distribution() -> None:
    assert service_version("common") == metadata.version("mainstay-common")
    assert service_version("no-such-service") == ""


def test_an_interval_of_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        Heartbeats(Bus(service="shop"), service="shop", instance="a", interval_s=0)


async def test_a_service_with_heartbeats_off_starts_none() -> None:
    class App(ServiceApp):
        async def _start(self, stack: contextlib.AsyncExitStack) -> None:
            self.bus = Bus(service="shop")  # never started: with heartbeats off it is not used
            await self._heartbeats(stack, service="shop")

    app = App(ServiceSettings(heartbeat=HeartbeatSettings(interval_s=0)))
    async with app:
        assert app.heartbeats is None


# -- the bus's bookkeeping -----------------------------------------------------------


async def test_a_heartbeat_says_what_the_consumers_have_in_hand(
    make_bus: Callable[..., Bus], kafka_bootstrap: str, topic_prefix: str
) -> None:
    entered = asyncio.Event()
    release = asyncio.Event()
    bus = make_bus()

    @bus.subscriber(ORDERS, handler="slow")
    async def slow(event: Event[Order]) -> None:
        entered.set()
        await release.wait()

    async with bus:
        assert (bus.in_flight, bus.last_progress_at) == (0, None)
        try:
            async with Heartbeats(bus, service="common", instance="a", interval_s=INTERVAL_S):
                await bus.publish(ORDERS, order("slow-1"))
                await within(entered.wait(), 20)
                assert bus.in_flight == 1
                [busy, *_] = await read_beats(
                    kafka_bootstrap, topic_prefix, 1, lambda b: b.in_flight >= 1
                )
                release.set()
                [done, *_] = await read_beats(
                    kafka_bootstrap,
                    topic_prefix,
                    1,
                    lambda b: b.in_flight == 0 and b.last_progress_at is not None,
                )
        finally:
            release.set()
    assert busy.offset < done.offset  # one instance: one key, one partition, in order
    busy_beat, done_beat = beat(busy), beat(done)
    assert busy_beat.last_progress_at is None  # nothing had finished yet
    assert (busy_beat.service, busy_beat.instance) == ("common", "a")
    assert busy_beat.version == metadata.version("mainstay-common")
    assert done_beat.last_progress_at is not None
    assert done_beat.last_progress_at.utcoffset() is not None
    assert busy_beat.sent_at < done_beat.last_progress_at <= done_beat.sent_at
    assert bus.in_flight == 0
    assert bus.last_progress_at == done_beat.last_progress_at


async def test_a_dead_lettered_message_is_progress_too(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus()

    @bus.subscriber(ORDERS, handler="refuse")
    async def refuse(event: Event[Order]) -> None:
        raise NotFound("no such shop")

    async with bus:
        await bus.publish(ORDERS, order("refused"))
        await wait_for(lambda: bus.last_progress_at is not None, what="the dead letter")
        assert bus.in_flight == 0


async def test_a_handler_abandoned_at_shutdown_is_no_longer_in_flight_nor_progress(
    make_bus: Callable[..., Bus],
) -> None:
    started = asyncio.Event()
    bus = make_bus(shutdown_grace_s=0.2)

    @bus.subscriber(ORDERS, handler="stuck")
    async def stuck(event: Event[Order]) -> None:
        started.set()
        await asyncio.sleep(30)

    await bus.start()
    await bus.publish(ORDERS, order("stuck"))
    await within(started.wait(), 20)
    assert bus.in_flight == 1
    await bus.close()  # the grace runs out: the handler is cancelled
    assert (bus.in_flight, bus.last_progress_at) == (0, None)


# -- the beat ------------------------------------------------------------------------


async def test_heartbeats_keep_coming_and_stop_on_close(
    make_bus: Callable[..., Bus], kafka_bootstrap: str, topic_prefix: str
) -> None:
    async with make_bus() as bus:
        async with Heartbeats(bus, service="common", instance="a", interval_s=INTERVAL_S):
            await read_beats(kafka_bootstrap, topic_prefix, 3)
        closed_at = datetime.now(UTC)
        await asyncio.sleep(INTERVAL_S * 5)  # room for a beat that should not come
        # the same key, so the same partition: every earlier beat is before it
        await bus.publish(
            HEARTBEAT, HeartbeatCommand(service="marker", instance="a", sent_at=closed_at)
        )
        records: list[ConsumerRecord[bytes, bytes]] = []

        def up_to_the_marker(record: ConsumerRecord[bytes, bytes]) -> bool:
            records.append(record)
            return beat(record).service == "marker"

        await read_records(
            kafka_bootstrap, f"{topic_prefix}{HEARTBEAT.name}", count=1, accept=up_to_the_marker
        )
    beats = [beat(r) for r in sorted(records, key=lambda r: r.offset)]
    marker = next(i for i, b in enumerate(beats) if b.service == "marker")
    sent = beats[:marker]
    assert len(sent) >= 3
    assert all(b.service == "common" and b.instance == "a" for b in sent)
    assert [b.sent_at for b in sent] == sorted(b.sent_at for b in sent)
    assert all(b.sent_at <= closed_at for b in sent)  # none after close
    assert all(b.service == "marker" for b in beats[marker:])


async def test_a_failed_publish_does_not_stop_the_beats(
    make_bus: Callable[..., Bus],
    kafka_bootstrap: str,
    topic_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with make_bus() as bus:
        publish = bus.publish
        attempts: list[HeartbeatCommand] = []

        async def flaky(spec: Any, payload: Any, **envelope: Any) -> str:
            attempts.append(payload)
            if len(attempts) == 1:
                raise DependencyUnavailable("the broker is away")
            return await publish(spec, payload, **envelope)

        monkeypatch.setattr(bus, "publish", flaky)
        with caplog.at_level(logging.WARNING, logger="mainstay.heartbeat"):
            async with Heartbeats(bus, service="common", instance="a", interval_s=INTERVAL_S):
                records = await read_beats(kafka_bootstrap, topic_prefix, 2)
    [warning] = [r for r in caplog.records if r.name == "mainstay.heartbeat"]
    assert warning.levelno == logging.WARNING
    assert "the broker is away" in warning.getMessage()
    sent_at = {beat(r).sent_at for r in records}
    assert attempts[0].sent_at not in sent_at  # the failed one was never written
    assert {b.sent_at for b in attempts[1:]} >= sent_at
