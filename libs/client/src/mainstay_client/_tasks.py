"""Submit agent tasks to the execution service and follow them, over Kafka.

A task is submitted as ``execution.cmd.submit-task.v1`` (its id is the
idempotency key: submitting the same id twice runs it once) and every
transition is an event on ``execution.evt.task.v1``, keyed by the task's id.
The client reads those events straight from the task's partition, so it needs
no consumer group and nothing of it is left on the broker.

Example::

    import asyncio
    from mainstay_client import Mainstay

    async def main() -> None:
        async with Mainstay() as mainstay:  # MAINSTAY_TOKEN, MAINSTAY_KAFKA_BOOTSTRAP
            task = await mainstay.submit_task("researcher", "Summarise the week's incidents")
            async for event in task.events():
                print(event.type, event.step or "", event.reason)
            final = await task.wait()
            print(final.answer, final.cost_micros)

    asyncio.run(main())
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from pydantic import ValidationError

from mainstay_client._settings import Caller, ClientError, ClientSettings
from mainstay_common.bus import build_message, refuse_topic_auto_creation, start_kafka_client
from mainstay_common.errors import InvalidArgument, InvalidMessage
from mainstay_contracts.execution import (
    CANCEL_TASK,
    SUBMIT_TASK,
    TASK_EVENTS,
    CancelTaskCommand,
    SubmitTaskCommand,
    TaskEvent,
)

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Mapping

    from mainstay_common.bus import OutgoingMessage

__all__ = ["FINAL_TYPES", "Mainstay", "TaskHandle"]

FINAL_TYPES = frozenset({"task.completed", "task.failed", "task.cancelled"})
"""The event types that end a task."""

_SOURCE = "mainstay-client"
_POLL_MS = 200


_Client = TypeVar("_Client", AIOKafkaConsumer, AIOKafkaProducer)


class Mainstay(Caller):
    """The mesh as an agent developer uses it: submit tasks, follow them, cancel them.

    An async context manager; ``settings`` default to :class:`ClientSettings` read from
    the environment, and ``token`` (else the settings' token) is the caller's.
    """

    def __init__(self, settings: ClientSettings | None = None, *, token: str | None = None) -> None:
        super().__init__(settings, token)
        self._producer: AIOKafkaProducer | None = None

    async def __aenter__(self) -> Mainstay:
        # A task submitted before the mesh created its topics must not create the
        # submit topic with the broker's default partition count.
        refuse_topic_auto_creation()
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka.bootstrap,
            acks="all",
            request_timeout_ms=int(self.settings.kafka.request_timeout_s * 1000),
            max_request_size=self.settings.kafka.max_message_bytes,
        )
        self._producer = await self._started(producer)
        return self

    async def _started(self, client: _Client) -> _Client:
        """``client`` started, or a ``ClientError`` naming the unreachable broker."""
        try:
            await start_kafka_client(client, timeout_s=self.settings.kafka.request_timeout_s)
        except (KafkaError, TimeoutError) as exc:
            raise ClientError(
                f"the Kafka broker at {self.settings.kafka.bootstrap} is unreachable: {exc!r}"
            ) from exc
        return client

    async def __aexit__(self, *exc: object) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    # -- tasks ---------------------------------------------------------------------------

    async def submit_task(
        self,
        agent: str,
        input: str,
        *,
        task_id: str | None = None,
        max_cost_micros: int | None = None,
        deadline: datetime | None = None,
        priority: int = 5,
        labels: Mapping[str, str] | None = None,
    ) -> TaskHandle:
        """Submit a task to ``agent``; a handle that follows it from this moment on.

        ``task_id`` is the idempotency key (a new one by default): the same id again
        changes nothing. Bad input raises :class:`ClientError` naming the field.
        """
        task_id = task_id or f"task-{uuid.uuid4().hex}"
        try:
            command = SubmitTaskCommand(
                task_id=task_id,
                tenant=self.tenant,
                agent=agent,
                input=input,
                token=self.token,
                max_cost_micros=max_cost_micros,
                deadline=deadline,
                priority=priority,
                labels=dict(labels or {}),
            )
        except ValidationError as exc:
            raise ClientError(_validation_problem("the task", exc)) from exc
        partition = await self._partition(task_id)
        start = await self._end_offset(partition)
        await self._send(self._message(SUBMIT_TASK, command, task_id))
        return TaskHandle(self, task_id, partition, start)

    async def task(self, task_id: str) -> TaskHandle:
        """A handle on a task submitted earlier (its events are read from the beginning)."""
        return TaskHandle(self, task_id, await self._partition(task_id), None)

    async def cancel_task(
        self, task_id: str, reason: str = "cancelled by its submitter", *, requested_by: str = ""
    ) -> None:
        """Ask the execution service to cancel the task; it ends with ``task.cancelled``."""
        try:
            command = CancelTaskCommand(
                task_id=task_id,
                tenant=self.tenant,
                reason=reason,
                requested_by=requested_by or _SOURCE,
                requested_at=datetime.now(UTC),
                token=self.token,
            )
        except ValidationError as exc:
            raise ClientError(_validation_problem("the cancellation", exc)) from exc
        await self._send(self._message(CANCEL_TASK, command, task_id))

    # -- the broker ----------------------------------------------------------------------

    @property
    def events_topic(self) -> str:
        return f"{self.settings.kafka.topic_prefix}{TASK_EVENTS.name}"

    async def started_consumer(self) -> AIOKafkaConsumer:
        """A started group-less consumer of the task events (the caller assigns and stops it)."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka.bootstrap,
            enable_auto_commit=False,
            fetch_max_wait_ms=self.settings.kafka.fetch_max_wait_ms,
            request_timeout_ms=int(self.settings.kafka.request_timeout_s * 1000),
        )
        return await self._started(consumer)

    async def _partition(self, task_id: str) -> int:
        """The partition of the task's events (the producers' default partitioner)."""
        producer = self._require_producer()
        try:
            partitions = await producer.partitions_for(self.events_topic)
        except KafkaError as exc:
            raise ClientError(
                f"the broker has no topic {self.events_topic} (is the execution service"
                f" running, with the same topic prefix?): {exc!r}"
            ) from exc
        ordered = sorted(partitions)
        picked = DefaultPartitioner()(task_id.encode(), ordered, ordered)
        return int(picked)

    async def _end_offset(self, partition: int) -> int:
        consumer = await self.started_consumer()
        try:
            tp = TopicPartition(self.events_topic, partition)
            offsets = await consumer.end_offsets([tp])
            return int(offsets[tp])
        finally:
            await consumer.stop()

    def _message(self, spec: Any, payload: Any, task_id: str) -> OutgoingMessage:
        try:
            return build_message(
                spec,
                payload,
                source=_SOURCE,
                topic_prefix=self.settings.kafka.topic_prefix,
                tenant=payload.tenant,
                correlation_id=task_id,
                max_bytes=self.settings.kafka.max_message_bytes,
            )
        except (InvalidMessage, InvalidArgument) as exc:
            raise ClientError(str(exc)) from exc

    async def _send(self, message: OutgoingMessage) -> None:
        producer = self._require_producer()
        try:
            await producer.send_and_wait(
                message.topic,
                message.value,
                key=message.key,
                headers=[(name, value.encode()) for name, value in message.headers.items()],
            )
        except KafkaError as exc:
            raise ClientError(f"could not publish to {message.topic}: {exc}") from exc

    def _require_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise ClientError("use the client as `async with Mainstay() as mainstay:`")
        return self._producer


class TaskHandle:
    """One task: its events as they happen, its end, its cancellation."""

    def __init__(self, client: Mainstay, task_id: str, partition: int, start: int | None) -> None:
        self.task_id = task_id
        self._client = client
        self._partition = partition
        self._start = start

    def __repr__(self) -> str:
        return f"TaskHandle({self.task_id!r})"

    async def events(self, *, timeout_s: float | None = None) -> AsyncGenerator[TaskEvent, None]:
        """The task's events in order, ending with the one that ends the task.

        :class:`ClientError` when ``timeout_s`` passes first (the task goes on).
        """
        client = self._client
        tp = TopicPartition(client.events_topic, self._partition)
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        consumer = await client.started_consumer()
        try:
            consumer.assign([tp])
            if self._start is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, self._start)
            while True:
                if deadline is not None and loop.time() >= deadline:
                    raise ClientError(
                        f"task {self.task_id} did not end within {timeout_s:g} s (it goes on)"
                    )
                batch = await consumer.getmany(tp, timeout_ms=_POLL_MS)
                for record in batch.get(tp, []):
                    event = _task_event(record.value)
                    if event is None or event.task_id != self.task_id:
                        continue
                    yield event
                    if event.type in FINAL_TYPES:
                        return
        finally:
            await consumer.stop()

    async def history(self) -> list[TaskEvent]:
        """The task's events published so far (from where the handle starts), without
        waiting for more."""
        client = self._client
        tp = TopicPartition(client.events_topic, self._partition)
        consumer = await client.started_consumer()
        try:
            consumer.assign([tp])
            end = (await consumer.end_offsets([tp]))[tp]
            if self._start is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, self._start)
            found: list[TaskEvent] = []
            while await consumer.position(tp) < end:
                batch = await consumer.getmany(tp, timeout_ms=_POLL_MS)
                for record in batch.get(tp, []):
                    event = _task_event(record.value)
                    if event is not None and event.task_id == self.task_id:
                        found.append(event)
            return found
        finally:
            await consumer.stop()

    async def wait(self, timeout_s: float | None = None) -> TaskEvent:
        """The event that ended the task: ``task.completed`` (with the answer and the cost),
        ``task.failed`` (with the reason) or ``task.cancelled``."""
        last: TaskEvent | None = None
        async for event in self.events(timeout_s=timeout_s):
            last = event
        assert last is not None
        return last

    async def cancel(self, reason: str = "cancelled by its submitter") -> None:
        await self._client.cancel_task(self.task_id, reason)


def _task_event(value: bytes | None) -> TaskEvent | None:
    """A task event, or None for a record that is not one (skipped, never fatal)."""
    if not value:
        return None
    try:
        return TaskEvent.model_validate(json.loads(value))
    except (ValueError, ValidationError):
        return None


def _validation_problem(what: str, exc: ValidationError) -> str:
    problems = "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'value'}: {error['msg']}"
        for error in exc.errors()
    )
    return f"{what} is invalid: {problems}"
