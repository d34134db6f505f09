"""The pipeline every consumed message goes through.

For one handler (one consumer group) it:

1. waits, without blocking the partition, until a retried message is due:
   the tier partition is paused and rewound, and resumed when the
   ``mainstay-not-before`` time comes, while other partitions keep flowing;
2. validates the envelope and payload; an invalid message goes straight to the
   DLQ and is never retried;
3. runs the handler, inside a PostgreSQL transaction that also claims the
   ``(group, ce_id)`` inbox row when the handler is transactional, so a
   redelivered message changes state once;
4. on failure, forwards the message to the next retry tier, or retries in place
   (blocking mode), or dead-letters it with the reason;
5. commits the offset only after the outcome is durable: the handler's
   transaction committed, or the retry/DLQ copy acknowledged by the broker.
   If even that copy cannot be written the offset is rewound, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeAlias, TypeVar

from aiokafka import TopicPartition
from opentelemetry import propagate, trace
from pydantic import BaseModel

from mainstay_common.bus._envelope import Event, decode_headers, parse_event
from mainstay_common.bus._routing import RetryPolicy, dlq_topic, retry_topic, tier_of
from mainstay_common.db._inbox import claim_inbox
from mainstay_common.errors import InvalidMessage, MainstayError, is_retryable
from mainstay_contracts import Header

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from aiokafka import ConsumerRecord

    from mainstay_common.db import Connection, Database
    from mainstay_contracts import TopicSpec

__all__ = ["Consumer", "Handler", "Sender", "TransactionalHandler"]

P = TypeVar("P", bound=BaseModel)

_log = logging.getLogger("mainstay.bus")
_tracer = trace.get_tracer("mainstay_common.bus")
_MAX_ERROR_MESSAGE = 2000


Handler: TypeAlias = "Callable[[Event[P]], Awaitable[None]]"
"""``async def handle(event) -> None``."""

TransactionalHandler: TypeAlias = "Callable[[Event[P], Connection], Awaitable[None]]"
"""``async def handle(event, tx) -> None``; ``tx`` holds the inbox claim."""


class Sender(Protocol):
    """What the consumer needs from the bus to forward and dead-letter."""

    closing: asyncio.Event

    async def send_raw(
        self, topic: str, *, key: bytes | None, value: bytes | None, headers: dict[str, str]
    ) -> None: ...

    def observe(self, name: str, **labels: Any) -> None: ...


class _Message(Protocol):
    """The part of FastStream's KafkaMessage the pipeline uses."""

    raw_message: Any

    async def ack(self) -> None: ...

    async def nack(self) -> None: ...


class Consumer(Generic[P]):
    """One handler bound to one consumer group ``<service>.<handler>``."""

    def __init__(
        self,
        *,
        bus: Sender,
        spec: TopicSpec[P],
        group: str,
        origin_topic: str,
        handler: Callable[..., Awaitable[None]],
        database: Database | None,
        policy: RetryPolicy,
        redelivery_backoff: float,
    ) -> None:
        self.bus = bus
        self.spec = spec
        self.group = group
        self.origin_topic = origin_topic
        self.handler = handler
        self.database = database
        self.policy = policy
        self.redelivery_backoff = redelivery_backoff
        self.retry_topics = [retry_topic(group, n) for n in range(1, policy.tiers + 1)]
        self.dlq_topic = dlq_topic(group)
        self.in_flight = 0

    @property
    def topics(self) -> list[str]:
        return [self.origin_topic, *self.retry_topics]

    async def on_message(self, message: _Message) -> None:
        """Entry point: FastStream calls this for every record of the group's topics."""
        record: ConsumerRecord[bytes, bytes] = message.raw_message
        headers = decode_headers(record.headers)
        tier = tier_of(record.topic, self.group)
        if tier and await self._defer_until_due(message, record, headers):
            return
        self.in_flight += 1
        try:
            await self._process(message, record, headers, tier)
        finally:
            self.in_flight -= 1

    async def _process(
        self,
        message: _Message,
        record: ConsumerRecord[bytes, bytes],
        headers: dict[str, str],
        tier: int,
    ) -> None:
        attempt = _int_header(headers, Header.ATTEMPTS) + 1
        parent = propagate.extract(headers)
        with _tracer.start_as_current_span(
            f"{self.spec.name} process",
            context=parent,
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka",
                "messaging.destination.name": record.topic,
                "messaging.consumer.group.name": self.group,
                "messaging.message.id": headers.get(Header.ID, ""),
                "mainstay.task_id": headers.get(Header.CORRELATION_ID, ""),
                "mainstay.attempt": attempt,
            },
        ):
            try:
                event = parse_event(
                    self.spec,
                    value=record.value,
                    headers=headers,
                    topic=record.topic,
                    key=record.key,
                    partition=record.partition,
                    offset=record.offset,
                    attempt=attempt,
                )
            except InvalidMessage as exc:
                await self._settle(message, self._dead_letter(record, headers, tier, attempt, exc))
                return
            while True:
                started = time.perf_counter()
                try:
                    outcome = await self._invoke(dataclasses.replace(event, attempt=attempt))
                except Exception as exc:  # noqa: BLE001 - every failure is classified below
                    self.bus.observe(
                        "handled",
                        group=self.group,
                        topic=record.topic,
                        outcome="failed",
                        seconds=time.perf_counter() - started,
                    )
                    if self._retry_in_place(exc, attempt):
                        if not await self._sleep(self.policy.blocking_delay(attempt)):
                            await message.nack()  # shutting down: the next owner takes it
                            return
                        attempt += 1
                        continue
                    await self._settle(
                        message, self._route_failure(record, headers, tier, attempt, exc)
                    )
                    return
                self.bus.observe(
                    "handled",
                    group=self.group,
                    topic=record.topic,
                    outcome=outcome,
                    seconds=time.perf_counter() - started,
                )
                await self._ack(message)
                return

    async def _invoke(self, event: Event[P]) -> str:
        if self.database is None:
            await self.handler(event)
            return "handled"
        async with self.database.pool.acquire() as conn, conn.transaction():
            if not await claim_inbox(conn, group=self.group, event_id=event.id, topic=event.topic):
                return "duplicate"
            await self.handler(event, conn)
        return "handled"

    def _retry_in_place(self, exc: Exception, attempt: int) -> bool:
        return (
            self.policy.blocking
            and is_retryable(exc)
            and attempt < self.policy.blocking_attempts
            and not self.bus.closing.is_set()
        )

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless the bus starts closing; False when it did."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.bus.closing.wait(), timeout=seconds)
        return not self.bus.closing.is_set()

    async def _defer_until_due(
        self, message: _Message, record: ConsumerRecord[bytes, bytes], headers: dict[str, str]
    ) -> bool:
        """Hold a retried message until its not-before time; True when deferred."""
        delay = _int_header(headers, Header.NOT_BEFORE) / 1000 - time.time()
        if delay <= 0:
            return False
        consumer = getattr(message, "consumer", None)
        if consumer is None or not hasattr(consumer, "pause"):
            # The in-memory test broker has no partitions to pause: wait in place.
            await self._sleep(delay)
            return False
        partition = TopicPartition(record.topic, record.partition)
        consumer.pause(partition)
        await message.nack()  # rewinds this partition to the deferred record
        asyncio.get_running_loop().call_later(delay, _resume, consumer, partition)
        return True

    async def _route_failure(
        self,
        record: ConsumerRecord[bytes, bytes],
        headers: dict[str, str],
        tier: int,
        attempt: int,
        exc: Exception,
    ) -> None:
        if not is_retryable(exc):
            await self._dead_letter(record, headers, tier, attempt, exc)
            return
        if self.policy.blocking or tier >= self.policy.tiers:
            await self._dead_letter(record, headers, tier, attempt, exc, error_class="exhausted")
            return
        delay = self.policy.tier_delays[tier]
        if isinstance(exc, MainstayError) and exc.retry_after:
            delay = max(delay, exc.retry_after)
        forward = {**headers, **_origin(record, headers, tier)}
        forward[Header.ATTEMPTS] = str(attempt)
        forward[Header.NOT_BEFORE] = str(int((time.time() + delay) * 1000))
        _log.warning(
            "retrying %s (ce_id %s) in tier %d after attempt %d: %s",
            self.group,
            headers.get(Header.ID),
            tier + 1,
            attempt,
            _describe(exc),
        )
        await self.bus.send_raw(
            self.retry_topics[tier], key=record.key, value=record.value, headers=forward
        )
        self.bus.observe("retried", group=self.group, tier=str(tier + 1))

    async def _dead_letter(
        self,
        record: ConsumerRecord[bytes, bytes],
        headers: dict[str, str],
        tier: int,
        attempt: int,
        exc: Exception,
        *,
        error_class: str | None = None,
    ) -> None:
        error_class = error_class or ("invalid" if isinstance(exc, InvalidMessage) else "permanent")
        letter = {k: v for k, v in headers.items() if k != Header.NOT_BEFORE}
        letter.update(_origin(record, headers, tier))
        letter.update(
            {
                Header.ERROR_CLASS: error_class,
                Header.ERROR_TYPE: type(exc).__name__,
                Header.ERROR_MESSAGE: _describe(exc)[:_MAX_ERROR_MESSAGE],
                Header.ATTEMPTS: str(attempt),
                Header.FAILED_AT: datetime.now(UTC).isoformat(),
            }
        )
        _log.error(
            "dead-lettering %s (ce_id %s) to %s after %d attempt(s), %s: %s",
            self.group,
            headers.get(Header.ID),
            self.dlq_topic,
            attempt,
            error_class,
            _describe(exc),
        )
        await self.bus.send_raw(self.dlq_topic, key=record.key, value=record.value, headers=letter)
        self.bus.observe("dead_lettered", group=self.group, error_class=error_class)

    async def _settle(self, message: _Message, outcome: Awaitable[None]) -> None:
        """Acknowledge once ``outcome`` (a retry or DLQ copy) is durable, else rewind."""
        try:
            await outcome
        except Exception:  # noqa: BLE001 - any failure to write the copy means: do not ack
            _log.exception(
                "could not write the retry/DLQ copy for %s; the message will be redelivered",
                self.group,
            )
            await self._sleep(self.redelivery_backoff)
            await message.nack()
            return
        await self._ack(message)

    async def _ack(self, message: _Message) -> None:
        try:
            await message.ack()
        except Exception:  # noqa: BLE001 - a failed commit only costs a redelivery
            # Lost the partition (rebalance) or the broker: the next owner
            # redelivers, and the inbox makes that redelivery a no-op.
            _log.warning(
                "offset commit failed for %s; expect a redelivery", self.group, exc_info=True
            )


def _resume(consumer: Any, partition: TopicPartition) -> None:
    # The partition may have moved to another member meanwhile; it then resumes there.
    with contextlib.suppress(Exception):
        consumer.resume(partition)


def _origin(
    record: ConsumerRecord[bytes, bytes], headers: dict[str, str], tier: int
) -> dict[str, str]:
    if tier and Header.ORIGIN_TOPIC in headers:
        return {
            name: headers[name]
            for name in (Header.ORIGIN_TOPIC, Header.ORIGIN_PARTITION, Header.ORIGIN_OFFSET)
            if name in headers
        }
    return {
        Header.ORIGIN_TOPIC: record.topic,
        Header.ORIGIN_PARTITION: str(record.partition),
        Header.ORIGIN_OFFSET: str(record.offset),
    }


def _int_header(headers: dict[str, str], name: str) -> int:
    try:
        return int(headers.get(name) or 0)
    except ValueError:
        return 0


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return text if isinstance(exc, MainstayError) else f"{type(exc).__name__}: {text}"
