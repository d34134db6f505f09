"""Reading what a service published, as a test sees it: raw records from the start of a topic."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Self

from aiokafka import AIOKafkaConsumer, TopicPartition

from mainstay_common.bus._clients import start_kafka_client
from mainstay_common.lifecycle import cancel_and_wait

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from aiokafka import ConsumerRecord

__all__ = ["TopicTail", "assign_from_beginning", "read_records"]

_log = logging.getLogger(__name__)

# How long a helper's consumer may take to start: apart from (and longer than) the
# caller's wait for records, which may be a second when it expects none.
_START_S = 30.0


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
    await start_kafka_client(consumer, timeout_s=_START_S)
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


async def assign_from_beginning(
    consumer: AIOKafkaConsumer, topics: Iterable[str], *, wait_s: float = 30.0
) -> list[TopicPartition]:
    """Assign a started, group-less ``consumer`` every partition of ``topics`` and seek
    each to its beginning, once all of them exist (a ``RuntimeError`` naming the missing
    ones after ``wait_s``); returns the partitions."""
    names = sorted(set(topics))
    deadline = time.monotonic() + wait_s
    while True:
        # Fresh metadata each time: ``consumer.partitions_for_topic`` (and ``topics()``,
        # which does not update it) would keep answering from the metadata of the
        # consumer's start until its refresh, minutes later, missing a topic created since.
        cluster = await consumer._client.fetch_all_metadata()
        found = {name: cluster.partitions_for_topic(name) for name in names}
        if all(found.values()):
            break
        if time.monotonic() >= deadline:
            raise RuntimeError(f"topics missing: {[n for n, ps in found.items() if not ps]}")
        await asyncio.sleep(0.1)
    partitions = [TopicPartition(name, p) for name, ps in found.items() for p in sorted(ps or ())]
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
    return partitions


class TopicTail:
    """Hands every record of ``topics``, from their beginning on, to ``on_record``.

    ``async with`` starts it (once every topic exists) and stops it. It reads in the
    background without a consumer group, so nothing is committed; a failed read (the
    broker away or restarting) is tried again after half a second.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: Iterable[str],
        on_record: Callable[[ConsumerRecord[bytes, bytes]], None],
        *,
        fetch_max_wait_ms: int = 50,
    ) -> None:
        self._topics = list(topics)
        self._on_record = on_record
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=fetch_max_wait_ms,
        )
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        await start_kafka_client(self._consumer, timeout_s=_START_S)
        try:
            await assign_from_beginning(self._consumer, self._topics)
        except BaseException:
            await self._consumer.stop()
            raise
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        reader, self._reader = self._reader, None
        await cancel_and_wait(reader)
        await self._consumer.stop()

    async def _read(self) -> None:
        while True:
            try:
                batch = await self._consumer.getmany(timeout_ms=200)
            except Exception as exc:  # noqa: BLE001 - the broker may be away; keep reading
                _log.debug("reading %s: %s; trying again", self._topics, exc)
                await asyncio.sleep(0.5)
                continue
            for records in batch.values():
                for record in records:
                    self._on_record(record)
