"""The broker as the supervisor reads it, with aiokafka: topics, consumer groups, records.

Topics and consumer groups' committed offsets come from one admin client;
records (dead letters) and offsets are read by a consumer that joins no group
(partitions assigned by hand, offsets sought), so reading commits nothing and
disturbs no consumer group. Broker failures leave this
module as the project's errors (``DependencyUnavailable``/``DependencyTimeout``).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from mainstay_common.bus import decode_headers, start_kafka_client
from mainstay_common.errors import DependencyTimeout, DependencyUnavailable, MainstayError
from mainstay_common.lifecycle import Resource, within
from mainstay_contracts import Header

if TYPE_CHECKING:
    from collections.abc import (
        AsyncGenerator,
        AsyncIterator,
        Iterable,
        Iterator,
        Mapping,
        Sequence,
    )

    from mainstay_common.settings import KafkaSettings

__all__ = ["DLQ_SUFFIX", "Bounds", "Broker", "BrokerReader", "Letter"]

DLQ_SUFFIX = ".dlq"
Bounds = dict[int, tuple[int, int]]
"""``(first offset, end offset)`` of each partition of a topic."""

_CLIENT_ID = "mainstay-supervisor"
_CHUNK = 200
_POLL_MS = 200


@dataclass(frozen=True)
class Letter:
    """One dead letter as the broker keeps it, named by (topic, partition, offset)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp: datetime

    @classmethod
    def of(cls, record: Any) -> Letter:
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            headers=tuple(record.headers),
            timestamp=datetime.fromtimestamp(record.timestamp / 1000, UTC),
        )

    @cached_property
    def text(self) -> dict[str, str]:
        """The headers as text (a value that is not UTF-8 gets replacement marks)."""
        return decode_headers(self.headers)

    @property
    def position(self) -> tuple[int, int]:
        return self.partition, self.offset

    @property
    def ce_id(self) -> str:
        return self.text.get(Header.ID, "")

    @property
    def group(self) -> str:
        """The consumer group that dead-lettered it (topic prefix included)."""
        return self.topic.removesuffix(DLQ_SUFFIX)

    def where(self) -> str:
        return f"partition {self.partition} offset {self.offset} of '{self.topic}'"


class Broker(Resource):
    """The broker's topics and consumer groups, and readers of records; an async context
    manager."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self._kafka = kafka
        self.topic_prefix = kafka.topic_prefix
        self._timeout_s = kafka.request_timeout_s
        self._admin: AIOKafkaAdminClient | None = None
        self._offsets: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self._kafka.bootstrap,
            client_id=_CLIENT_ID,
            request_timeout_ms=int(self._timeout_s * 1000),
        )
        with _broker_errors("connect to the broker"):
            await start_kafka_client(admin, timeout_s=self._timeout_s)
        try:
            offsets = self._consumer()
            with _broker_errors("connect to the broker"):
                await start_kafka_client(offsets, timeout_s=self._timeout_s)
        except BaseException:
            await admin.close()
            raise
        self._admin, self._offsets = admin, offsets

    async def close(self) -> None:
        admin, self._admin = self._admin, None
        offsets, self._offsets = self._offsets, None
        if offsets is not None:
            await offsets.stop()
        if admin is not None:
            await admin.close()

    def _consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self._kafka.bootstrap,
            client_id=_CLIENT_ID,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            request_timeout_ms=int(self._timeout_s * 1000),
            fetch_max_wait_ms=self._kafka.fetch_max_wait_ms,
        )

    async def bounds(self, topics: Mapping[str, Iterable[int]]) -> dict[str, Bounds]:
        """``(first offset, end offset)`` of the given partitions of each topic.

        Asked on one consumer kept for the purpose (asking for offsets assigns
        nothing), not on a reader of its own: the monitor asks every few seconds.
        """
        if self._offsets is None:
            raise RuntimeError("Broker is not started; use 'async with'")
        return await _bounds(self._offsets, topics, self._timeout_s)

    async def topics(self) -> dict[str, int]:
        """Every topic on the broker and its partition count."""
        admin = self._started()
        with _broker_errors("list topics"):
            # Never a metadata request naming topics: a broker that creates topics on
            # demand (the embedded one does) would create a mistyped one.
            described = await within(admin.describe_topics(), self._timeout_s)
        return {
            entry["topic"]: len(entry["partitions"])
            for entry in described
            if not entry.get("error_code")
        }

    async def dlqs(self) -> dict[str, int]:
        """The dead-letter topics of this mesh (the configured topic prefix)."""
        prefix = self._kafka.topic_prefix
        return {
            topic: partitions
            for topic, partitions in (await self.topics()).items()
            if topic.startswith(prefix)
            and topic.endswith(DLQ_SUFFIX)
            and len(topic) > len(prefix) + len(DLQ_SUFFIX)
        }

    async def consumer_groups(self) -> list[str]:
        """The consumer groups the broker knows (of any topic prefix)."""
        admin = self._started()
        with _broker_errors("list consumer groups"):
            groups = await within(admin.list_consumer_groups(), self._timeout_s)
        return [str(group) for group, protocol in groups if protocol in ("consumer", "")]

    async def committed(
        self, group: str, partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, int]:
        """The offsets ``group`` committed on ``partitions`` (those it never committed on left out).

        Asked partition by partition: the embedded broker does not answer the
        "every partition of the group" form of the request.
        """
        admin = self._started()
        with _broker_errors(f"read the committed offsets of {group}"):
            offsets = await within(
                admin.list_consumer_group_offsets(group, partitions=list(partitions)),
                self._timeout_s,
            )
        return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}

    def _started(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            raise RuntimeError("Broker is not started; use 'async with'")
        return self._admin

    @contextlib.asynccontextmanager
    async def reader(self) -> AsyncIterator[BrokerReader]:
        """A reader of its own: its assignment is not shared with concurrent requests."""
        consumer = self._consumer()
        with _broker_errors("connect to the broker"):
            await start_kafka_client(consumer, timeout_s=self._timeout_s)
        try:
            yield BrokerReader(consumer, self._timeout_s)
        finally:
            await consumer.stop()


class BrokerReader:
    """A consumer without a group, reading ranges of partitions of existing topics."""

    def __init__(self, consumer: AIOKafkaConsumer, timeout_s: float) -> None:
        self._consumer = consumer
        self._timeout_s = timeout_s

    async def bounds(self, topics: Mapping[str, Iterable[int]]) -> dict[str, Bounds]:
        """``(first offset, end offset)`` of the given partitions of each topic."""
        return await _bounds(self._consumer, topics, self._timeout_s)

    async def one(self, topic: str, partition: int, offset: int) -> Letter | None:
        """The letter at ``offset``, if there is one."""
        async with contextlib.aclosing(self.chunks(topic, partition, offset, offset + 1)) as chunks:
            async for chunk in chunks:
                return chunk[0] if chunk[0].offset == offset else None
        return None

    async def chunks(
        self, topic: str, partition: int, start: int, stop: int
    ) -> AsyncGenerator[list[Letter], None]:
        """The letters at offsets ``start`` to ``stop - 1``, a fetched batch at a time.

        Use it in ``contextlib.aclosing`` when leaving the loop early.
        """
        tp = TopicPartition(topic, partition)
        self._consumer.assign([tp])
        self._consumer.seek(tp, start)
        position = start
        stalled_since = time.monotonic()
        while position < stop:
            with _broker_errors(f"read partition {partition} of {topic}"):
                batch = await self._consumer.getmany(tp, timeout_ms=_POLL_MS, max_records=_CHUNK)
            records = [r for r in batch.get(tp, ()) if r.offset < stop]
            if records:
                position = records[-1].offset + 1
                stalled_since = time.monotonic()
                yield [Letter.of(record) for record in records]
                continue
            with _broker_errors(f"read partition {partition} of {topic}"):
                # Past a gap (a deleted or control record) the position moves on alone.
                position = max(position, await self._consumer.position(tp))
            if position < stop and time.monotonic() - stalled_since > self._timeout_s:
                raise DependencyTimeout(
                    f"broker: reading partition {partition} of {topic} stalled at offset {position}"
                )


@contextlib.contextmanager
def _broker_errors(doing: str) -> Iterator[None]:
    """Broker failures as the project's errors, naming what was being done."""
    try:
        yield
    except MainstayError:
        raise
    except TimeoutError as exc:
        raise DependencyTimeout(f"broker: could not {doing} in time") from exc
    except (KafkaError, OSError) as exc:
        raise DependencyUnavailable(f"broker: could not {doing}: {exc!r}") from exc


async def _bounds(
    consumer: AIOKafkaConsumer, topics: Mapping[str, Iterable[int]], timeout_s: float
) -> dict[str, Bounds]:
    partitions = [TopicPartition(t, p) for t, ps in topics.items() for p in ps]
    bounds: dict[str, Bounds] = {topic: {} for topic in topics}
    if not partitions:
        return bounds
    with _broker_errors("read the offsets of the topics"):
        firsts = await within(consumer.beginning_offsets(partitions), timeout_s)
        ends = await within(consumer.end_offsets(partitions), timeout_s)
    for tp in partitions:
        bounds[tp.topic][tp.partition] = (firsts[tp], ends[tp])
    return bounds
