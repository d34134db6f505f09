"""The pipeline every consumed message goes through.

For one handler (one consumer group) and each polled batch of records it:

1. holds back a retried message until it is due, without blocking anything:
   its tier partition is paused and rewound, and resumed at the
   ``mainstay-not-before`` time while other partitions keep flowing; and
   acknowledges without handling a replayed dead letter whose
   ``mainstay-replay-for`` names another group (that group failed it; this
   one handled the original);
2. validates envelope and payload; an invalid message goes straight to the DLQ
   and is never retried;
3. runs the handler. A transactional handler runs inside a PostgreSQL
   transaction that also claims the ``(group, ce_id)`` inbox row, so a
   redelivered message changes state once. Consecutive valid messages of a
   batch share one transaction (group commit: one fsync for many messages, no
   round trip per message); if a handler of the group fails, the transaction
   is rolled back, the messages before it are redone, the failing one
   continues from its failed attempt, and the rest follow, so one failure
   never affects its neighbours' outcome. A handler's work outside the
   database goes through ``db.after_commit`` so a redo never repeats it;
4. on failure, forwards the message to the next retry tier, or retries in place
   (blocking mode), or dead-letters it with the reason;
5. commits, per partition, the offset after the last message whose outcome is
   durable: its transaction committed, or its retry/DLQ copy acknowledged by the
   broker. A message whose copy cannot be written is rewound, and so is
   everything after it on that partition: nothing is lost or reordered.
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
from aiokafka.errors import MessageSizeTooLargeError
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from pydantic import BaseModel

from mainstay_common.bus._envelope import Event, decode_headers, merge_headers, parse_event
from mainstay_common.bus._routing import RetryPolicy, dlq_topic, retry_topic, tier_of
from mainstay_common.db._hooks import commit_hooks, run_hooks
from mainstay_common.db._inbox import claim_inbox, claim_inbox_many
from mainstay_common.errors import (
    DependencyUnavailable,
    InvalidMessage,
    MainstayError,
    is_retryable,
    map_asyncpg_data_errors,
)
from mainstay_common.lifecycle import within
from mainstay_common.telemetry._task import TASK_ID_ATTRIBUTE, task_context
from mainstay_common.telemetry.metrics import ConsumeOutcome
from mainstay_contracts import Header

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator, Sequence

    from aiokafka import ConsumerRecord

    from mainstay_common.bus._activity import Activity
    from mainstay_common.db import Connection, Database
    from mainstay_common.telemetry.metrics import BusMetrics
    from mainstay_contracts import TopicSpec

__all__ = ["Consumer", "Handler", "Sender", "TransactionalHandler"]

P = TypeVar("P", bound=BaseModel)

Handler: TypeAlias = "Callable[[Event[P]], Awaitable[None]]"
"""``async def handle(event) -> None``."""

TransactionalHandler: TypeAlias = "Callable[[Event[P], Connection], Awaitable[None]]"
"""``async def handle(event, tx) -> None``; keep every effect inside ``tx`` (use the outbox)."""

_log = logging.getLogger("mainstay.bus")
_MAX_ERROR_MESSAGE = 2000
PAYLOAD_DROPPED = "mainstay-payload-dropped"
"""On a dead letter whose payload was too large to keep: the payload's size in bytes."""
_DATABASE_WAIT_FIRST_S = 0.2
_DATABASE_WAIT_MAX_S = 2.0
# A failure rolls its whole group back and redoes it message by message, so a
# group stays small enough that the redo is cheap.
_MAX_GROUP = 60


class Sender(Protocol):
    """What the consumer needs from the bus to forward and dead-letter."""

    closing: asyncio.Event
    activity: Activity
    tracer: trace.Tracer

    async def send_raw(
        self,
        topic: str,
        *,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]],
    ) -> None: ...

    @property
    def metrics(self) -> BusMetrics: ...


@dataclasses.dataclass
class _Item(Generic[P]):
    record: ConsumerRecord[bytes, bytes]
    headers: dict[str, str]
    tier: int
    partition: TopicPartition
    event: Event[P] | None = None


class _GroupFailed(Exception):
    """The handler of message ``index`` of a group commit raised ``error``."""

    def __init__(self, index: int, error: Exception) -> None:
        super().__init__(f"message {index} of the group failed: {error!r}")
        self.index = index
        self.error = error


class _Progress:
    """Which records of a batch are settled, and where each partition must resume."""

    def __init__(self, items: Sequence[_Item[Any]], activity: Activity) -> None:
        self._items = items
        self._settled: set[tuple[TopicPartition, int]] = set()
        self.stopped: set[TopicPartition] = set()
        self._activity = activity
        self._in_hand = len(items)
        activity.take(len(items))

    def settle(self, item: _Item[Any]) -> None:
        key = (item.partition, item.record.offset)
        if key in self._settled:
            return
        self._settled.add(key)
        # after release() a straggler still counts as progress, but is no longer in hand
        done = min(self._in_hand, 1)
        self._in_hand -= done
        self._activity.finish(done)

    def release(self) -> None:
        """The batch is over: what was not settled is given back (redelivered later)."""
        self._activity.finish(self._in_hand, progressed=False)
        self._in_hand = 0

    def stop(self, item: _Item[Any], kafka_consumer: Any) -> None:
        """Nothing at or after ``item`` on its partition is handled in this batch."""
        if item.partition not in self.stopped:
            self.stopped.add(item.partition)
            if kafka_consumer is not None:
                kafka_consumer.seek(item.partition, item.record.offset)

    def commit_offsets(self) -> dict[TopicPartition, int]:
        offsets: dict[TopicPartition, int] = {}
        blocked: set[TopicPartition] = set()
        for item in self._items:  # records of one partition arrive in offset order
            if item.partition in blocked:
                continue
            if (item.partition, item.record.offset) in self._settled:
                offsets[item.partition] = item.record.offset + 1
            else:
                blocked.add(item.partition)
        return offsets


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
        store: Database | None = None,
    ) -> None:
        self.bus = bus
        self.store = store or database
        """The database the handler needs: while it does not answer, a failure waits for it."""
        self.spec = spec
        self.group = group
        self.origin_topic = origin_topic
        self.handler = handler
        self.database = database
        self.policy = policy
        self.redelivery_backoff = redelivery_backoff
        self.retry_topics = [retry_topic(group, n) for n in range(1, policy.tiers + 1)]
        self.dlq_topic = dlq_topic(group)

    @property
    def topics(self) -> list[str]:
        return [self.origin_topic, *self.retry_topics]

    async def on_batch(self, message: Any) -> None:
        """Entry point: FastStream calls this with every polled batch of the group's topics."""
        raw = message.raw_message
        records: Sequence[ConsumerRecord[bytes, bytes]] = raw if isinstance(raw, tuple) else (raw,)
        kafka_consumer = getattr(message, "consumer", None)
        items: list[_Item[P]] = [
            _Item(
                record=record,
                headers=decode_headers(record.headers),
                tier=tier_of(record.topic, self.group),
                partition=TopicPartition(record.topic, record.partition),
            )
            for record in records
        ]
        progress = _Progress(items, self.bus.activity)
        try:
            await self._handle_batch(items, progress, kafka_consumer)
        finally:
            progress.release()

    async def _handle_batch(
        self, items: list[_Item[P]], progress: _Progress, kafka_consumer: Any
    ) -> None:
        if self.database is None:
            # Plain handlers: the batch's partitions run side by side, each in
            # offset order, so one slow message delays only its own partition.
            partitions: dict[TopicPartition, list[_Item[P]]] = {}
            for item in items:
                partitions.setdefault(item.partition, []).append(item)
            await asyncio.gather(
                *(self._run_alone(part, progress, kafka_consumer) for part in partitions.values())
            )
            await self._commit(kafka_consumer, progress.commit_offsets())
            return
        group: list[_Item[P]] = []
        for item in items:
            if not await self._admit(item, progress, kafka_consumer):
                continue
            if (invalid := self._parse_into(item)) is not None:
                await self._flush(group, progress, kafka_consumer)
                group = []
                await self._reject(item, progress, kafka_consumer, invalid)
                continue
            group.append(item)
            if len(group) >= _MAX_GROUP:
                await self._flush(group, progress, kafka_consumer)
                group = []
        await self._flush(group, progress, kafka_consumer)
        await self._commit(kafka_consumer, progress.commit_offsets())

    async def _run_alone(
        self, items: Sequence[_Item[P]], progress: _Progress, kafka_consumer: Any
    ) -> None:
        for item in items:
            if not await self._admit(item, progress, kafka_consumer):
                continue
            if (invalid := self._parse_into(item)) is not None:
                await self._reject(item, progress, kafka_consumer, invalid)
                continue
            await self._handle_alone(item, progress, kafka_consumer)

    async def _admit(self, item: _Item[P], progress: _Progress, kafka_consumer: Any) -> bool:
        """Whether ``item`` is due now (not stopped, not shutting down, not held in a tier,
        not a replay meant for another group)."""
        if item.partition in progress.stopped:
            return False
        if self.bus.closing.is_set():
            progress.stop(item, kafka_consumer)  # the next owner handles it
            return False
        if item.headers.get(Header.REPLAY_FOR, self.group) not in {"", self.group}:
            # A replayed dead letter goes back to the origin topic, which every
            # group subscribed to it reads; only the group that failed it handles it.
            progress.settle(item)
            self.bus.metrics.message_consumed(
                group=self.group, topic=item.record.topic, outcome=ConsumeOutcome.SKIPPED
            )
            return False
        if item.tier and await self._defer_until_due(item, kafka_consumer):
            progress.stopped.add(item.partition)
            return False
        return True

    def _parse_into(self, item: _Item[P]) -> InvalidMessage | None:
        """Parse ``item.event``; the reason when the message is invalid."""
        try:
            item.event = self._parse(item)
        except InvalidMessage as exc:
            return exc
        return None

    async def _reject(
        self, item: _Item[P], progress: _Progress, kafka_consumer: Any, exc: InvalidMessage
    ) -> None:
        """An invalid message goes straight to the DLQ, never retried."""
        await self._settle(
            item, progress, kafka_consumer, self._dead_letter(item, item_attempt(item), exc)
        )

    def _parse(self, item: _Item[P]) -> Event[P]:
        record = item.record
        return parse_event(
            self.spec,
            value=record.value,
            headers=item.headers,
            topic=record.topic,
            key=record.key,
            partition=record.partition,
            offset=record.offset,
            attempt=item_attempt(item),
        )

    # -- handling ----------------------------------------------------------------

    async def _flush(self, group: list[_Item[P]], progress: _Progress, kafka_consumer: Any) -> None:
        """Handle consecutive transactional messages, many per transaction."""
        remaining = [item for item in group if item.partition not in progress.stopped]
        if len(remaining) == 1:
            await self._handle_alone(remaining[0], progress, kafka_consumer)
            return
        if not remaining:
            return
        try:
            await self._group_commit(remaining)
        except _GroupFailed as failed:
            # All was rolled back: redo the messages before the failing one, continue
            # the failing one after its failed attempt, then go on with the rest.
            await self._flush(remaining[: failed.index], progress, kafka_consumer)
            item = remaining[failed.index]
            if item.partition not in progress.stopped:
                assert item.event is not None
                await self._after_failure(
                    item, item.event.attempt, failed.error, progress, kafka_consumer
                )
            await self._flush(remaining[failed.index + 1 :], progress, kafka_consumer)
        except Exception:  # noqa: BLE001 - the transaction itself failed: go one by one
            _log.warning(
                "group commit in %s failed; handling one by one", self.group, exc_info=True
            )
            for item in remaining:
                if item.partition not in progress.stopped:
                    await self._handle_alone(item, progress, kafka_consumer)
        else:
            for item in remaining:
                progress.settle(item)

    async def _group_commit(self, group: list[_Item[P]]) -> None:
        """Run every handler of ``group`` in one transaction; a failing handler rolls the
        whole group back and raises :class:`_GroupFailed` naming it.

        Failures are rare, so the common case pays one commit (one fsync) for
        the group and no per-message round trip (no savepoints).
        """
        assert self.database is not None
        started = time.perf_counter()
        outcomes: list[ConsumeOutcome] = []
        with commit_hooks() as hooks:
            async with self.database.pool.acquire() as conn, conn.transaction():
                fresh = await claim_inbox_many(
                    conn,
                    group=self.group,
                    events=[(item.event.id, item.record.topic) for item in group if item.event],
                )
                for index, item in enumerate(group):
                    assert item.event is not None
                    if item.event.id not in fresh:
                        outcomes.append(ConsumeOutcome.DUPLICATE)
                        continue
                    # a repeat inside the same batch is a duplicate too
                    fresh.discard(item.event.id)
                    try:
                        with self._span(item), map_asyncpg_data_errors():
                            await self.handler(item.event, conn)
                    except Exception as exc:
                        self._count(item, None, time.perf_counter() - started)
                        raise _GroupFailed(index, exc) from exc
                    outcomes.append(ConsumeOutcome.OK)
        run_hooks(hooks)
        seconds = (time.perf_counter() - started) / max(len(outcomes), 1)
        for item, outcome in zip(group, outcomes, strict=True):
            self._count(item, outcome, seconds)

    async def _handle_alone(
        self,
        item: _Item[P],
        progress: _Progress,
        kafka_consumer: Any,
        *,
        attempt: int | None = None,
    ) -> None:
        """Handle one message with its own retries; settle it or rewind its partition."""
        assert item.event is not None
        attempt = attempt or item.event.attempt
        with self._span(item):
            while True:
                started = time.perf_counter()
                try:
                    outcome = await self._invoke(dataclasses.replace(item.event, attempt=attempt))
                except Exception as exc:  # noqa: BLE001 - every failure is classified below
                    self._count(item, None, time.perf_counter() - started)
                    if await self._database_down(exc):
                        if not await self._wait_for_database(exc):
                            progress.stop(item, kafka_consumer)  # shutting down
                            return
                        continue  # the same attempt: the message did not fail, its store did
                    if self._left_for_redelivery(exc, attempt):
                        progress.stop(item, kafka_consumer)  # shutting down
                        return
                    if self._retry_in_place(exc, attempt):
                        if not await self._sleep(self.policy.blocking_delay(attempt)):
                            progress.stop(item, kafka_consumer)  # shutting down
                            return
                        attempt += 1
                        continue
                    await self._settle(
                        item, progress, kafka_consumer, self._route_failure(item, attempt, exc)
                    )
                    return
                self._count(item, outcome, time.perf_counter() - started)
                progress.settle(item)
                return

    async def _after_failure(
        self, item: _Item[P], attempt: int, exc: Exception, progress: _Progress, kafka_consumer: Any
    ) -> None:
        """Continue after attempt ``attempt`` of ``item`` failed inside a group."""
        if await self._database_down(exc):
            if not await self._wait_for_database(exc):
                progress.stop(item, kafka_consumer)
                return
            await self._handle_alone(item, progress, kafka_consumer, attempt=attempt)
            return
        if self._left_for_redelivery(exc, attempt):
            progress.stop(item, kafka_consumer)
            return
        if self._retry_in_place(exc, attempt):
            if not await self._sleep(self.policy.blocking_delay(attempt)):
                progress.stop(item, kafka_consumer)
                return
            await self._handle_alone(item, progress, kafka_consumer, attempt=attempt + 1)
            return
        await self._settle(item, progress, kafka_consumer, self._route_failure(item, attempt, exc))

    async def _invoke(self, event: Event[P]) -> ConsumeOutcome:
        if self.database is None:
            await self.handler(event)
            return ConsumeOutcome.OK
        with commit_hooks() as hooks:
            async with self.database.pool.acquire() as conn, conn.transaction():
                if not await claim_inbox(
                    conn, group=self.group, event_id=event.id, topic=event.topic
                ):
                    return ConsumeOutcome.DUPLICATE
                # A value the database cannot hold is refused the same way on every
                # attempt: permanent, so it never holds up its partition with retries.
                with map_asyncpg_data_errors():
                    await self.handler(event, conn)
        run_hooks(hooks)
        return ConsumeOutcome.OK

    def _count(self, item: _Item[P], outcome: str | None, seconds: float) -> None:
        """Record one handler call; ``outcome`` None when it raised (counted where it is routed)."""
        metrics = self.bus.metrics
        metrics.handler_finished(group=self.group, topic=item.record.topic, seconds=seconds)
        if outcome is not None:
            metrics.message_consumed(group=self.group, topic=item.record.topic, outcome=outcome)

    @contextlib.contextmanager
    def _span(self, item: _Item[P]) -> Iterator[trace.Span]:
        """The consumer span, a child of the producer's; the handler runs in it, with the
        message's task id in the context so every span under it carries the task id too."""
        headers = item.headers
        task_id = headers.get(Header.CORRELATION_ID)
        parent = task_context(task_id, propagate.extract(headers))
        # Attached first: the span's own context keeps only the current context's
        # baggage, not that of a ``context=`` argument.
        token = otel_context.attach(parent) if parent is not None else None
        try:
            with self.bus.tracer.start_as_current_span(
                f"{self.spec.name} process",
                kind=trace.SpanKind.CONSUMER,
                attributes={
                    "messaging.system": "kafka",
                    "messaging.operation.type": "process",
                    "messaging.destination.name": item.record.topic,
                    "messaging.consumer.group.name": self.group,
                    "messaging.message.id": headers.get(Header.ID, ""),
                    **({TASK_ID_ATTRIBUTE: task_id} if task_id else {}),
                },
            ) as span:
                yield span
        finally:
            if token is not None:
                otel_context.detach(token)

    def _left_for_redelivery(self, exc: Exception, attempt: int) -> bool:
        """Whether a message that would be retried in place is left uncommitted instead
        because the bus is shutting down: the group's next owner tries it again (a
        transient failure at shutdown, a deadlock say, must not dead-letter it)."""
        return (
            self.policy.blocking
            and is_retryable(exc)
            and attempt < self.policy.blocking_attempts
            and self.bus.closing.is_set()
        )

    def _retry_in_place(self, exc: Exception, attempt: int) -> bool:
        return (
            self.policy.blocking
            and is_retryable(exc)
            and attempt < self.policy.blocking_attempts
            and not self.bus.closing.is_set()
        )

    async def _database_down(self, exc: Exception) -> bool:
        """Whether a retryable failure came with this group's own database not answering.

        Such an outage is no fault of the message: spending its retry tiers on it
        would dead-letter every message that arrives while PostgreSQL is away
        (the tiers are seconds long, an outage may be minutes).
        """
        if self.store is None or not is_retryable(exc):
            return False
        try:
            await self.store.ping()
        except Exception:  # noqa: BLE001 - whatever the ping raises, the database is not there
            return True
        return False

    async def _wait_for_database(self, exc: Exception) -> bool:
        """Hold the partition (its offset uncommitted) until the database answers again;
        False when the bus started closing meanwhile. ``exc``: the handler's failure."""
        assert self.store is not None
        _log.warning(
            "%s: the database does not answer; waiting for it (the handler failed: %s)",
            self.group,
            _describe(exc),
            # An error not classified (not a MainstayError) may be a bug: where it came from.
            exc_info=None if isinstance(exc, MainstayError) else exc,
        )
        delay = _DATABASE_WAIT_FIRST_S
        while await self._sleep(delay):
            try:
                await self.store.ping()
            except Exception:  # noqa: BLE001 - still away
                delay = min(delay * 2, _DATABASE_WAIT_MAX_S)
                continue
            _log.info("%s: the database answers again", self.group)
            return True
        return False

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless the bus starts closing; False when it did."""
        with contextlib.suppress(TimeoutError):
            await within(self.bus.closing.wait(), timeout=seconds)
        return not self.bus.closing.is_set()

    async def _defer_until_due(self, item: _Item[P], kafka_consumer: Any) -> bool:
        """Hold a retried message until its not-before time; True when deferred."""
        delay = _int_header(item.headers, Header.NOT_BEFORE) / 1000 - time.time()
        if delay <= 0:
            return False
        if kafka_consumer is None or not hasattr(kafka_consumer, "pause"):
            # The in-memory test broker has no partitions to pause: wait in place.
            await self._sleep(delay)
            return False
        kafka_consumer.pause(item.partition)
        kafka_consumer.seek(item.partition, item.record.offset)
        asyncio.get_running_loop().call_later(delay, _resume, kafka_consumer, item.partition)
        return True

    # -- failures ----------------------------------------------------------------

    async def _route_failure(self, item: _Item[P], attempt: int, exc: Exception) -> None:
        if not is_retryable(exc):
            await self._dead_letter(item, attempt, exc)
            return
        if self.policy.blocking or item.tier >= self.policy.tiers:
            await self._dead_letter(item, attempt, exc, error_class="exhausted")
            return
        delay = self.policy.tier_delays[item.tier]
        if isinstance(exc, MainstayError) and exc.retry_after:
            delay = max(delay, exc.retry_after)
        forward = merge_headers(
            item.record.headers,
            {
                **_origin(item),
                Header.ATTEMPTS: str(attempt),
                Header.NOT_BEFORE: str(int((time.time() + delay) * 1000)),
            },
        )
        _log.warning(
            "retrying %s (ce_id %s) in tier %d after attempt %d: %s",
            self.group,
            item.headers.get(Header.ID),
            item.tier + 1,
            attempt,
            _describe(exc),
        )
        await self.bus.send_raw(
            self.retry_topics[item.tier],
            key=item.record.key,
            value=item.record.value,
            headers=forward,
        )
        self.bus.metrics.message_retried(group=self.group, tier=item.tier + 1)
        self.bus.metrics.message_consumed(
            group=self.group, topic=item.record.topic, outcome=ConsumeOutcome.RETRIED
        )

    async def _dead_letter(
        self, item: _Item[P], attempt: int, exc: Exception, *, error_class: str | None = None
    ) -> None:
        error_class = error_class or ("invalid" if isinstance(exc, InvalidMessage) else "permanent")
        letter = merge_headers(
            item.record.headers,
            {
                **_origin(item),
                Header.ERROR_CLASS: error_class,
                Header.ERROR_TYPE: type(exc).__name__,
                Header.ERROR_MESSAGE: _describe(exc)[:_MAX_ERROR_MESSAGE],
                Header.ATTEMPTS: str(attempt),
                Header.FAILED_AT: datetime.now(UTC).isoformat(),
            },
            drop=(Header.NOT_BEFORE,),
        )
        _log.error(
            "dead-lettering %s (ce_id %s) to %s after %d attempt(s), %s: %s",
            self.group,
            item.headers.get(Header.ID),
            self.dlq_topic,
            attempt,
            error_class,
            _describe(exc),
        )
        try:
            await self.bus.send_raw(
                self.dlq_topic, key=item.record.key, value=item.record.value, headers=letter
            )
        except DependencyUnavailable as failure:
            if not isinstance(failure.__cause__, MessageSizeTooLargeError):
                raise
            # A record the broker took but this producer may not send: keep the reason and
            # the headers without the payload, or the record would be redelivered forever
            # and stall its partition.
            size = len(item.record.value or b"")
            note = f"; the payload ({size} bytes) is too large to dead-letter and was dropped"
            reason = _describe(exc)[: _MAX_ERROR_MESSAGE - len(note)] + note
            letter = merge_headers(
                letter, {Header.ERROR_MESSAGE: reason, PAYLOAD_DROPPED: str(size)}
            )
            await self.bus.send_raw(self.dlq_topic, key=item.record.key, value=b"", headers=letter)
        self.bus.metrics.message_dead_lettered(group=self.group, error_class=error_class)
        self.bus.metrics.message_consumed(
            group=self.group, topic=item.record.topic, outcome=ConsumeOutcome.DEAD_LETTERED
        )

    async def _settle(
        self, item: _Item[P], progress: _Progress, kafka_consumer: Any, outcome: Awaitable[None]
    ) -> None:
        """Settle ``item`` once its retry/DLQ copy is durable; else rewind its partition."""
        try:
            await outcome
        except Exception:  # noqa: BLE001 - any failure to write the copy means: do not commit
            _log.exception(
                "could not write the retry/DLQ copy for %s; the message will be redelivered",
                self.group,
            )
            progress.stop(item, kafka_consumer)
            await self._sleep(self.redelivery_backoff)
            return
        progress.settle(item)

    async def _commit(self, kafka_consumer: Any, offsets: dict[TopicPartition, int]) -> None:
        if not offsets or kafka_consumer is None:
            return
        try:
            await kafka_consumer.commit(offsets)
        except Exception:  # noqa: BLE001 - a failed commit only costs a redelivery
            # Lost the partition (rebalance) or the broker: the next owner
            # redelivers, and the inbox makes that redelivery a no-op.
            _log.warning(
                "offset commit failed for %s; expect a redelivery", self.group, exc_info=True
            )
            return
        self._record_lag(kafka_consumer, offsets)

    def _record_lag(self, kafka_consumer: Any, offsets: dict[TopicPartition, int]) -> None:
        """Lag of each committed partition: the partition end the last fetch saw, minus
        the committed offset (no extra request to the broker)."""
        highwater = getattr(kafka_consumer, "highwater", None)
        if highwater is None:
            return
        for partition, offset in offsets.items():
            # A partition revoked meanwhile makes aiokafka assert; a gauge never fails a batch.
            with contextlib.suppress(Exception):
                end = highwater(partition)
                if end is not None:
                    self.bus.metrics.set_consumer_lag(
                        group=self.group,
                        topic=partition.topic,
                        partition=partition.partition,
                        lag=max(end - offset, 0),
                    )


def item_attempt(item: _Item[Any]) -> int:
    """The attempt this delivery is: one more than the attempts recorded on the message."""
    return _int_header(item.headers, Header.ATTEMPTS) + 1


def _resume(consumer: Any, partition: TopicPartition) -> None:
    # The partition may have moved to another member meanwhile; it then resumes there.
    with contextlib.suppress(Exception):
        consumer.resume(partition)


def _origin(item: _Item[Any]) -> dict[str, str]:
    headers = item.headers
    if item.tier and Header.ORIGIN_TOPIC in headers:
        return {
            name: headers[name]
            for name in (Header.ORIGIN_TOPIC, Header.ORIGIN_PARTITION, Header.ORIGIN_OFFSET)
            if name in headers
        }
    return {
        Header.ORIGIN_TOPIC: item.record.topic,
        Header.ORIGIN_PARTITION: str(item.record.partition),
        Header.ORIGIN_OFFSET: str(item.record.offset),
    }


def _int_header(headers: dict[str, str], name: str) -> int:
    try:
        return int(headers.get(name) or 0)
    except ValueError:
        return 0


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return text if isinstance(exc, MainstayError) else f"{type(exc).__name__}: {text}"
