"""Shared helpers for bus tests against the real broker."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
from aiokafka import AIOKafkaProducer
from pydantic import BaseModel, ConfigDict, Field

from mainstay_common.bus import Bus, build_message
from mainstay_common.settings import KafkaSettings, RetrySettings
from mainstay_common.testing import read_records
from mainstay_contracts import TopicSpec

if TYPE_CHECKING:
    from collections.abc import Callable

    from aiokafka import ConsumerRecord


class Order(BaseModel):
    model_config = ConfigDict(extra="ignore")

    order_id: str = Field(min_length=1)
    amount: int = Field(ge=0)
    note: str = ""


ORDERS = TopicSpec(
    name="shop.cmd.place-order.v1",
    owner="shop",
    kind="cmd",
    key_field="order_id",
    payload=Order,
    partitions=3,
)

FAST_RETRY = RetrySettings(
    tier_delays_s=[0.3, 0.6, 0.9],
    blocking_attempts=3,
    blocking_backoff_s=0.05,
    redelivery_backoff_s=0.2,
)


@pytest.fixture
def make_bus(kafka_bootstrap: str, topic_prefix: str) -> Callable[..., Bus]:
    def factory(
        service: str = "shop", *, kafka_options: dict[str, Any] | None = None, **kwargs: Any
    ) -> Bus:
        kwargs.setdefault("retry", FAST_RETRY)
        kwargs.setdefault("shutdown_grace_s", 5.0)
        return Bus(
            service=service,
            kafka=KafkaSettings(
                bootstrap=kafka_bootstrap,
                topic_prefix=topic_prefix,
                session_timeout_ms=2000,
                heartbeat_interval_ms=300,
                **(kafka_options or {}),
            ),
            **kwargs,
        )

    return factory


def order(order_id: str, amount: int = 1, note: str = "") -> Order:
    return Order(order_id=order_id, amount=amount, note=note)


def largest_note(limit: int, **fields: Any) -> str:
    """The longest note an order ``o-1`` may carry within ``limit`` bytes as
    :attr:`OutgoingMessage.size` counts them (``fields`` as for :func:`build_message`;
    the source defaults to a bus's of service ``shop``)."""
    fields.setdefault("source", "mainstay/shop")
    size = build_message(ORDERS, order("o-1"), **fields).size
    note = "x" * (limit - size)
    while build_message(ORDERS, order("o-1", note=note), **fields).size > limit:
        note = note[:-1]
    return note


async def read_topic(
    bootstrap: str, topic: str, *, count: int, wait_s: float = 20.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read ``count`` records from the start of ``topic`` (fails the test on timeout)."""
    records = await read_records(bootstrap, topic, count=count, wait_s=wait_s)
    assert len(records) >= count, f"expected {count} records on {topic}, got {len(records)}"
    return records


async def produce_raw(
    bootstrap: str, topic: str, value: bytes, *, key: bytes | None, headers: list[tuple[str, bytes]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


def valid_headers(event_id: str) -> list[tuple[str, bytes]]:
    return [
        ("ce_specversion", b"1.0"),
        ("ce_id", event_id.encode()),
        ("ce_type", b"test.order"),
        ("ce_source", b"tests"),
        ("ce_time", datetime.now(UTC).isoformat().encode()),
        ("content-type", b"application/json"),
    ]


async def wait_for(predicate: Callable[[], bool], *, wait_s: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + wait_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.05)
