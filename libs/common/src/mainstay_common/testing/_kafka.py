"""Reading what a service published, as a test sees it: raw records from the start of a topic."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer

if TYPE_CHECKING:
    from collections.abc import Callable

    from aiokafka import ConsumerRecord

__all__ = ["read_records"]


async def read_records(
    bootstrap: str,
    topic: str,
    *,
    count: int,
    accept: Callable[[ConsumerRecord[bytes, bytes]], bool] | None = None,
    wait_s: float = 20.0,
) -> list[ConsumerRecord[Any, Any]]:
    """Records of ``topic`` that ``accept`` takes, read from the earliest offset.

    Returns once at least ``count`` were found (all those of the last poll, so
    an unexpected extra one shows), else whatever was found after ``wait_s``.
    No consumer group is used, so nothing is committed.
    """
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    found: list[ConsumerRecord[Any, Any]] = []
    deadline = time.monotonic() + wait_s
    try:
        while len(found) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                found.extend(r for r in records if accept is None or accept(r))
    finally:
        await consumer.stop()
    return found
