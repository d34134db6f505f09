"""The Mainstay bus: FastStream's KafkaBroker with Mainstay's guarantees.

>>> bus = Bus(service="memory", kafka=settings.kafka, retry=settings.retry)
>>> @bus.transactional_subscriber(REMEMBER, handler="remember", database=db)
... async def remember(event: Event[RememberCommand], tx: asyncpg.Connection) -> None: ...
>>> async with bus:
...     await bus.publish(MEMORY_EVENTS, payload, caused_by=event)

Every subscriber acknowledges only after its work is durable (never
``ACK_FIRST``), retries through its own tiers or in place, and dead-letters
what cannot succeed; every publish is validated and enveloped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
from typing import TYPE_CHECKING, Any, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.admin import NewTopic
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage  # noqa: TC002 - FastStream resolves handler annotations at runtime
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from mainstay_common.bus._activity import Activity
from mainstay_common.bus._consumer import Consumer, Handler, TransactionalHandler
from mainstay_common.bus._envelope import Event, OutgoingMessage, build_message, encode_headers
from mainstay_common.bus._routing import RetryPolicy, group_id
from mainstay_common.bus._topics import create_missing_topics, spec_topic, unique_topics
from mainstay_common.errors import DependencyUnavailable
from mainstay_common.lifecycle import Resource
from mainstay_common.settings import KafkaSettings, RetrySettings, ServiceSettings
from mainstay_common.telemetry.metrics import BusMetrics

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
    from datetime import datetime

    from mainstay_common.db import Database
    from mainstay_contracts import TopicSpec

__all__ = ["Bus"]

P = TypeVar("P", bound=BaseModel)
_log = logging.getLogger("mainstay.bus")
_DLQ_RETENTION_MS = 30 * 24 * 3600 * 1000


class Bus(Resource):
    """A service's connection to the mesh; an async context manager."""

    def __init__(
        self,
        *,
        service: str,
        kafka: KafkaSettings | None = None,
        retry: RetrySettings | None = None,
        instance_id: str = "",
        shutdown_grace_s: float = 20.0,
        metrics: BusMetrics | None = None,
    ) -> None:
        self.service = service
        self.kafka = kafka or KafkaSettings()
        self.retry = retry or RetrySettings()
        self.source = f"mainstay/{service}/{instance_id}" if instance_id else f"mainstay/{service}"
        self.closing = asyncio.Event()
        # A service passes the metrics on its /metrics registry; otherwise they
        # are still kept, on a registry of this bus alone.
        self.metrics = metrics or BusMetrics(CollectorRegistry())
        self.activity = Activity()
        self._consumers: list[Consumer[Any]] = []
        self._subscribers: dict[str, Any] = {}
        self._started = False
        self._producer: AIOKafkaProducer | None = None
        self.broker = KafkaBroker(
            self.kafka.bootstrap,
            client_id=f"mainstay-{service}",
            request_timeout_ms=int(self.kafka.request_timeout_s * 1000),
            acks="all",
            enable_idempotence=self.kafka.idempotent_producer,
            graceful_timeout=shutdown_grace_s,
            allow_auto_create_topics=False,
            logger=_broker_logger(service),
            log_level=logging.DEBUG,
        )

    @classmethod
    def for_service(
        cls, service: str, settings: ServiceSettings, *, registry: CollectorRegistry
    ) -> Bus:
        """The bus of a service instance, from its settings, with metrics on ``registry``."""
        return cls(
            service=service,
            kafka=settings.kafka,
            retry=settings.retry,
            instance_id=settings.instance_id,
            shutdown_grace_s=settings.shutdown_grace_s,
            metrics=BusMetrics(registry),
        )

    # -- subscribing -------------------------------------------------------------

    def default_policy(self, *, blocking: bool = False) -> RetryPolicy:
        return RetryPolicy(
            tier_delays=tuple(self.retry.tier_delays_s),
            blocking=blocking,
            blocking_attempts=self.retry.blocking_attempts,
            blocking_backoff=self.retry.blocking_backoff_s,
            blocking_backoff_max=self.retry.blocking_backoff_max_s,
        )

    def subscriber(
        self,
        spec: TopicSpec[P],
        *,
        handler: str,
        blocking: bool = False,
        policy: RetryPolicy | None = None,
    ) -> Callable[[Handler[P]], Handler[P]]:
        """Register ``fn(event)`` as consumer group ``<service>.<handler>`` of ``spec``."""

        def register(fn: Handler[P]) -> Handler[P]:
            self._add(spec, handler, fn, None, policy or self.default_policy(blocking=blocking))
            return fn

        return register

    def transactional_subscriber(
        self,
        spec: TopicSpec[P],
        *,
        handler: str,
        database: Database,
        blocking: bool = False,
        policy: RetryPolicy | None = None,
    ) -> Callable[[TransactionalHandler[P]], TransactionalHandler[P]]:
        """Like :meth:`subscriber`, but ``fn(event, tx)`` runs in a transaction with the inbox.

        The handler's writes and the inbox row commit together, so a redelivered
        ``ce_id`` is acknowledged without running the handler again.
        """

        def register(fn: TransactionalHandler[P]) -> TransactionalHandler[P]:
            self._add(spec, handler, fn, database, policy or self.default_policy(blocking=blocking))
            return fn

        return register

    def _add(
        self,
        spec: TopicSpec[P],
        handler: str,
        fn: Callable[..., Any],
        database: Database | None,
        policy: RetryPolicy,
    ) -> None:
        if self._started:
            raise RuntimeError("subscribers must be registered before the bus starts")
        group = group_id(self.service, handler, prefix=self.kafka.topic_prefix)
        if any(c.group == group for c in self._consumers):
            raise ValueError(f"consumer group {group!r} is registered twice")
        consumer: Consumer[P] = Consumer(
            bus=self,
            spec=spec,
            group=group,
            origin_topic=f"{self.kafka.topic_prefix}{spec.name}",
            handler=fn,
            database=database,
            policy=policy,
            redelivery_backoff=self.retry.redelivery_backoff_s,
        )
        self._consumers.append(consumer)

        async def on_batch(message: KafkaMessage) -> None:
            await consumer.on_batch(message)

        on_batch.__name__ = f"{spec.name}:{handler}"
        subscriber = self.broker.subscriber(
            *consumer.topics,
            group_id=group,
            ack_policy=AckPolicy.MANUAL,
            auto_offset_reset="earliest",
            session_timeout_ms=self.kafka.session_timeout_ms,
            heartbeat_interval_ms=self.kafka.heartbeat_interval_ms,
            batch=True,
            max_records=self.kafka.max_batch,
            batch_timeout_ms=self.kafka.poll_timeout_ms,
            fetch_max_wait_ms=self.kafka.fetch_max_wait_ms,
            parser=_lenient_parser,
            decoder=_undecoded,
            title=f"{group}",
            description=spec.description or None,
        )
        _poll_without_pause(subscriber)
        subscriber(on_batch)
        self._subscribers[group] = subscriber

    @property
    def consumers(self) -> Sequence[Consumer[Any]]:
        return tuple(self._consumers)

    @property
    def in_flight(self) -> int:
        """Messages this bus's consumers are handling right now (polled, not yet finished)."""
        return self.activity.in_flight

    @property
    def last_progress_at(self) -> datetime | None:
        """When a consumer of this bus last finished a message (handled, skipped as a
        duplicate, retried or dead-lettered); None before the first."""
        return self.activity.last_progress_at

    def assignment(self) -> dict[str, set[tuple[str, int]]]:
        """The partitions each consumer group of this instance owns right now."""
        owned: dict[str, set[tuple[str, int]]] = {}
        for group, subscriber in self._subscribers.items():
            kafka_consumers = getattr(subscriber, "consumer_subgroup", None) or [
                getattr(subscriber, "consumer", None)
            ]
            owned[group] = {
                (tp.topic, tp.partition)
                for kafka_consumer in kafka_consumers
                if kafka_consumer is not None
                for tp in kafka_consumer.assignment()
            }
        return owned

    # -- publishing --------------------------------------------------------------

    def message(
        self,
        spec: TopicSpec[P],
        payload: P | Mapping[str, Any],
        *,
        caused_by: Event[Any] | None = None,
        key: str | None = None,
        event_type: str | None = None,
        event_id: str | None = None,
        subject: str | None = None,
        tenant: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        time: datetime | None = None,
    ) -> OutgoingMessage:
        """Build and validate a message without sending it (for the outbox).

        ``caused_by`` carries the tenant and correlation id forward and sets the
        causation id to the consumed event's id, unless given explicitly.
        """
        if caused_by is not None:
            tenant = tenant or caused_by.tenant
            correlation_id = correlation_id or caused_by.correlation_id
            causation_id = causation_id or caused_by.id
        return build_message(
            spec,
            payload,
            source=self.source,
            topic_prefix=self.kafka.topic_prefix,
            key=key,
            event_type=event_type,
            event_id=event_id,
            subject=subject,
            tenant=tenant,
            correlation_id=correlation_id,
            causation_id=causation_id,
            time=time,
        )

    async def publish(
        self,
        spec: TopicSpec[P],
        payload: P | Mapping[str, Any],
        **envelope: Any,
    ) -> str:
        """Validate, envelope and send one message; returns its ``ce_id``.

        Keyword arguments are those of :meth:`message`. Returns after the broker
        acknowledged the write.
        """
        message = self.message(spec, payload, **envelope)
        await self.send(message)
        return message.event_id

    async def send(self, message: OutgoingMessage) -> None:
        await self.send_raw(
            message.topic,
            key=message.key,
            value=message.value,
            headers=encode_headers(message.headers),
        )

    async def send_many(self, messages: Iterable[OutgoingMessage]) -> None:
        """Send in order, pipelined; returns when the broker acknowledged all of them."""
        producer = self._require_producer()
        batch = list(messages)
        try:
            futures = [
                await producer.send(
                    message.topic,
                    message.value,
                    key=message.key,
                    headers=encode_headers(message.headers),
                )
                for message in batch
            ]
            await asyncio.gather(*futures)
        except Exception as exc:
            raise DependencyUnavailable(
                f"could not publish {len(batch)} message(s): {exc}"
            ) from exc
        for message in batch:
            self.metrics.message_published(topic=message.topic)

    async def send_raw(
        self,
        topic: str,
        *,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]],
    ) -> None:
        """Send bytes exactly as given (retry tiers and dead letters keep the original)."""
        producer = self._require_producer()
        try:
            await producer.send_and_wait(topic, value, key=key, headers=list(headers))
        except Exception as exc:
            raise DependencyUnavailable(f"could not publish to {topic}: {exc}") from exc
        self.metrics.message_published(topic=topic)

    def _require_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("the bus is not started; use 'async with bus'")
        return self._producer

    # -- lifecycle ---------------------------------------------------------------

    def required_topics(self) -> list[NewTopic]:
        """The topics this bus consumes: origins, retry tiers and DLQs."""
        topics: dict[str, NewTopic] = {}
        rf = self.kafka.replication_factor
        for consumer in self._consumers:
            spec = consumer.spec
            topics[consumer.origin_topic] = spec_topic(
                spec, prefix=self.kafka.topic_prefix, replication_factor=rf
            )
            for name in consumer.retry_topics:
                topics[name] = NewTopic(name, spec.partitions, rf)
            topics[consumer.dlq_topic] = NewTopic(
                consumer.dlq_topic,
                spec.partitions,
                rf,
                topic_configs={"retention.ms": str(_DLQ_RETENTION_MS)},
            )
        return list(topics.values())

    async def ensure_topics(self, extra: Iterable[TopicSpec[Any]] = ()) -> None:
        """Create missing topics (idempotent); existing ones are left as they are."""
        wanted = self.required_topics() + [
            spec_topic(
                spec,
                prefix=self.kafka.topic_prefix,
                replication_factor=self.kafka.replication_factor,
            )
            for spec in extra
        ]
        await create_missing_topics(
            self.kafka.bootstrap, unique_topics(wanted), timeout_s=self.kafka.request_timeout_s
        )

    async def start(self, *, extra_topics: Iterable[TopicSpec[Any]] = ()) -> None:
        await self.ensure_topics(extra_topics)
        self.closing.clear()
        producer = AIOKafkaProducer(
            bootstrap_servers=self.kafka.bootstrap,
            client_id=f"mainstay-{self.service}",
            acks="all",
            enable_idempotence=self.kafka.idempotent_producer,
            request_timeout_ms=int(self.kafka.request_timeout_s * 1000),
        )
        await producer.start()
        self._producer = producer
        try:
            await self.broker.start()
        except BaseException:
            self._producer = None
            await producer.stop()
            raise
        self._started = True

    async def close(self) -> None:
        """Stop consuming, let in-flight handlers finish (up to the grace), flush, close."""
        self.closing.set()
        try:
            await self.broker.stop()  # in-flight handlers may still publish meanwhile
        finally:
            producer, self._producer = self._producer, None
            if producer is not None:
                await producer.stop()  # flushes what is still buffered
            self._started = False


def _poll_without_pause(subscriber: Any) -> None:
    """Make a FastStream batch subscriber poll again at once after an empty poll.

    FastStream sleeps ``batch_timeout_ms`` after a poll that found nothing, on top
    of the poll's own wait for records, so a record arriving during that sleep
    waited up to ``poll_timeout_ms`` more on every hop. The poll itself waits
    for records, so nothing spins.
    """
    for name in ("get_msg", "batch_timeout_ms", "max_records"):
        if not hasattr(subscriber, name):
            raise RuntimeError(f"FastStream's batch subscriber has no {name!r}; check the pin")

    async def get_msg(consumer: Any) -> tuple[Any, ...]:
        records = await consumer.getmany(
            timeout_ms=subscriber.batch_timeout_ms, max_records=subscriber.max_records
        )
        return tuple(itertools.chain.from_iterable(records.values()))

    subscriber.get_msg = get_msg


async def _lenient_parser(message: Any, original_parser: Callable[[Any], Awaitable[Any]]) -> Any:
    """FastStream's parser, but a header that is not UTF-8 must not stop the batch.

    FastStream decodes every header strictly; one foreign producer's binary
    header would then fail the whole batch before the pipeline could dead-letter
    it. The pipeline reads the raw records, which are kept byte for byte.
    """
    try:
        return await original_parser(message)
    except UnicodeDecodeError:
        records = message if isinstance(message, tuple) else (message,)
        readable = tuple(
            dataclasses.replace(
                record,
                headers=tuple(
                    (name, value.decode("utf-8", "replace").encode())
                    for name, value in record.headers
                ),
            )
            for record in records
        )
        parsed = await original_parser(readable if isinstance(message, tuple) else readable[0])
        parsed.raw_message = message
        return parsed


async def _undecoded(message: Any) -> Any:
    """Leave the body as bytes: the consumer pipeline validates it, and garbage must reach the DLQ."""
    return message.body


class _TopicCreationNotice(logging.Filter):
    """Drops FastStream's notice that it will not create topics: the bus creates them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Auto create topics is disabled" not in record.getMessage()


def _broker_logger(service: str) -> logging.Logger:
    logger = logging.getLogger(f"mainstay.bus.{service}")
    if not any(isinstance(f, _TopicCreationNotice) for f in logger.filters):
        logger.addFilter(_TopicCreationNotice())
    return logger
