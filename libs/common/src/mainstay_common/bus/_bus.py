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
import contextlib
import dataclasses
import itertools
import logging
import time
from typing import TYPE_CHECKING, Any, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.admin import NewTopic
from aiokafka.conn import CloseReason
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage  # noqa: TC002 - FastStream resolves handler annotations at runtime
from opentelemetry import propagate, trace
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from mainstay_common.bus._activity import Activity
from mainstay_common.bus._clients import start_kafka_client
from mainstay_common.bus._consumer import Consumer, Handler, TransactionalHandler
from mainstay_common.bus._envelope import Event, OutgoingMessage, build_message, encode_headers
from mainstay_common.bus._routing import RetryPolicy, group_id
from mainstay_common.bus._topics import (
    create_missing_topics,
    refuse_topic_auto_creation,
    spec_topic,
    unique_topics,
)
from mainstay_common.errors import DependencyUnavailable
from mainstay_common.lifecycle import Resource, cancel_and_wait, within
from mainstay_common.settings import KafkaSettings, RetrySettings, ServiceSettings
from mainstay_common.telemetry._task import TASK_ID_ATTRIBUTE, task_context
from mainstay_common.telemetry.metrics import BusMetrics
from mainstay_contracts import Header

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
    from datetime import datetime

    from opentelemetry.sdk.trace import TracerProvider

    from mainstay_common.db import Database
    from mainstay_contracts import TopicSpec

__all__ = ["Bus"]

P = TypeVar("P", bound=BaseModel)
_log = logging.getLogger("mainstay.bus")
_DLQ_RETENTION_MS = 30 * 24 * 3600 * 1000
# A check asks for the metadata of every topic of the cluster, which costs the broker
# and the client in proportion to the cluster's topics: seconds apart it kept a test
# process (a broker of thousands of topics) busy decoding metadata.
_TOPIC_CHECK_S = 30.0
# While the broker is away (the producer's connection broke, or a check failed), checks
# come this often, so topics are created again within about a second of its return.
_AWAY_CHECK_S = 1.0
# Consumers notice a topic created again (after the embedded broker restarted) or a
# partition added within half a minute and rebalance onto it; the default is 5 minutes.
_METADATA_MAX_AGE_MS = 30_000
# How long after the broker's return sends check that their topics exist: long
# enough for every owner's topic check to have created its topics again.
_TOPICS_DOUBT_S = 2 * _TOPIC_CHECK_S
_REWIND_WAIT_S = 10.0
# After the broker's return, when a consumer still holding no partitions although its
# topics have some asks its group to rebalance (seconds apart, from the return).
_IDLE_CONSUMER_CHECKS_S = (5.0, 10.0, 20.0)
# The producer span replaces what the message was built with: the consumer's parent is
# the span of the publish, itself a child of the span that built (or staged) the message.
_CONTEXT_HEADERS = frozenset({Header.TRACEPARENT, Header.TRACESTATE, "baggage"})


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
        tracer_provider: TracerProvider | None = None,
        store: Database | None = None,
    ) -> None:
        self.service = service
        # The service's database: while it does not answer, a failed message of any of
        # this bus's consumers waits for it (see :meth:`subscriber`).
        self.store = store
        self.kafka = kafka or KafkaSettings()
        self.retry = retry or RetrySettings()
        self.source = f"mainstay/{service}/{instance_id}" if instance_id else f"mainstay/{service}"
        self.closing = asyncio.Event()
        # A service passes the metrics on its /metrics registry; otherwise they
        # are still kept, on a registry of this bus alone.
        self.metrics = metrics or BusMetrics(CollectorRegistry())
        # The service's own provider (its resource names the service); default: the global one.
        self.tracer = trace.get_tracer("mainstay_common.bus", tracer_provider=tracer_provider)
        self.activity = Activity()
        self._consumers: list[Consumer[Any]] = []
        self._subscribers: dict[str, Any] = {}
        self._started = False
        self._producer: AIOKafkaProducer | None = None
        self._topic_keeper: asyncio.Task[None] | None = None
        self._rewinding: asyncio.Task[None] | None = None
        self._idle_check: asyncio.Task[None] | None = None
        self._topics_in_doubt = False
        self._doubt_until = 0.0
        self._broker_lost = asyncio.Event()
        self.broker = KafkaBroker(
            self.kafka.bootstrap,
            client_id=f"mainstay-{service}",
            request_timeout_ms=int(self.kafka.request_timeout_s * 1000),
            acks="all",
            enable_idempotence=self.kafka.idempotent_producer,
            graceful_timeout=shutdown_grace_s,
            allow_auto_create_topics=False,
            metadata_max_age_ms=_METADATA_MAX_AGE_MS,
            logger=_broker_logger(service),
            log_level=logging.DEBUG,
        )

    @classmethod
    def for_service(
        cls,
        service: str,
        settings: ServiceSettings,
        *,
        registry: CollectorRegistry,
        tracer_provider: TracerProvider | None = None,
        store: Database | None = None,
    ) -> Bus:
        """The bus of a service instance, from its settings, with metrics on ``registry``,
        spans on ``tracer_provider`` and ``store`` as the database its consumers wait for."""
        return cls(
            service=service,
            kafka=settings.kafka,
            retry=settings.retry,
            instance_id=settings.instance_id,
            shutdown_grace_s=settings.shutdown_grace_s,
            metrics=BusMetrics(registry),
            tracer_provider=tracer_provider,
            store=store,
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
        store: Database | None = None,
    ) -> Callable[[Handler[P]], Handler[P]]:
        """Register ``fn(event)`` as consumer group ``<service>.<handler>`` of ``spec``.

        ``store``: the database the handler writes to (default: the bus's). While it
        does not answer, a failed message waits for it (its partition held, nothing
        committed) instead of spending its retry tiers, which would dead-letter it
        during an outage.
        """

        def register(fn: Handler[P]) -> Handler[P]:
            policy_ = policy or self.default_policy(blocking=blocking)
            self._add(spec, handler, fn, None, policy_, store=store or self.store)
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
        *,
        store: Database | None = None,
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
            store=store,
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
        _poll_without_pause(subscriber, _IdlePacing.from_settings(self.kafka))
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
            max_bytes=self.kafka.max_message_bytes,
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
        span, headers = self._publish_span(message)
        with trace.use_span(span, end_on_exit=True):
            await self.send_raw(
                message.topic, key=message.key, value=message.value, headers=headers
            )

    async def send_many(self, messages: Iterable[OutgoingMessage]) -> None:
        """Send in order, pipelined; returns when the broker acknowledged all of them.

        Each message gets a producer span whose parent is the context it was built
        in (for the outbox relay: the transaction that staged it), so the trace goes
        on from the staging handler to the consumers.
        """
        producer = self._require_producer()
        batch = list(messages)
        await self._check_destinations({message.topic for message in batch})
        spans = [self._publish_span(message) for message in batch]
        try:
            futures = [
                await producer.send(message.topic, message.value, key=message.key, headers=headers)
                for message, (_, headers) in zip(batch, spans, strict=True)
            ]
            await asyncio.gather(*futures)
        except Exception as exc:
            self._doubt(_TOPICS_DOUBT_S)
            for span, _ in spans:
                span.record_exception(exc)
                span.set_status(trace.StatusCode.ERROR, str(exc))
                span.end()
            raise DependencyUnavailable(
                f"could not publish {len(batch)} message(s): {exc}"
            ) from exc
        for span, _ in spans:
            span.end()
        for message in batch:
            self.metrics.message_published(topic=message.topic)

    def _publish_span(self, message: OutgoingMessage) -> tuple[trace.Span, list[tuple[str, bytes]]]:
        """A started producer span for ``message`` and the headers that carry it."""
        headers = message.headers
        task_id = headers.get(Header.CORRELATION_ID)
        parent = task_context(task_id, propagate.extract(headers))
        span = self.tracer.start_span(
            f"{message.topic} publish",
            context=parent,
            kind=trace.SpanKind.PRODUCER,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "send",
                "messaging.destination.name": message.topic,
                "messaging.message.id": headers.get(Header.ID, ""),
                **({TASK_ID_ATTRIBUTE: task_id} if task_id else {}),
            },
        )
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span, parent))
        kept = {name: value for name, value in headers.items() if name not in _CONTEXT_HEADERS}
        return span, encode_headers({**kept, **carrier})

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
        await self._check_destinations({topic})
        try:
            await producer.send_and_wait(topic, value, key=key, headers=list(headers))
        except Exception as exc:
            self._doubt(_TOPICS_DOUBT_S)
            raise DependencyUnavailable(f"could not publish to {topic}: {exc}") from exc
        self.metrics.message_published(topic=topic)

    def _doubt(self, seconds: float) -> None:
        """The broker was away or lost topics: sends check their destinations for the
        next ``seconds`` (each later sign of trouble starts the period again)."""
        self._topics_in_doubt = True
        self._doubt_until = time.monotonic() + seconds

    async def _check_destinations(self, topics: set[str]) -> None:
        """After the broker was away, publish only to topics it has again.

        The embedded broker comes back empty, yet acknowledges a write to a topic it
        no longer has (to a producer that still knows the topic) and drops that
        record when the topic is created again: the outbox row would be deleted and
        the message lost. So for a while after a failed send or topic check (see
        :meth:`_doubt`) a send first asks for the broker's metadata; a missing topic
        fails the send as retryable (the outbox relay tries again) until its owner's
        topic check has created it.
        """
        if not self._topics_in_doubt:
            return
        producer = self._require_producer()
        try:
            metadata = await producer.client.fetch_all_metadata()
        except Exception as exc:
            raise DependencyUnavailable(f"the broker does not answer: {exc}") from exc
        missing = sorted(topics - set(metadata.topics()))
        if missing:
            raise DependencyUnavailable(f"topics not there (yet): {', '.join(missing)}")
        if _partitions_differ(producer, metadata, topics):
            # A topic created again with other partitions: the producer would pick a
            # partition by the count it knew, which the broker may no longer have.
            await producer.client.force_metadata_update()
            if _partitions_differ(producer, metadata, topics):
                raise DependencyUnavailable(
                    f"the producer's view of {', '.join(sorted(topics))} is out of date"
                )

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

    def _wanted_topics(self, extra: Iterable[TopicSpec[Any]]) -> list[NewTopic]:
        return self.required_topics() + [
            spec_topic(
                spec,
                prefix=self.kafka.topic_prefix,
                replication_factor=self.kafka.replication_factor,
            )
            for spec in extra
        ]

    async def ensure_topics(self, extra: Iterable[TopicSpec[Any]] = ()) -> None:
        """Create missing topics (idempotent); existing ones are left as they are."""
        await create_missing_topics(
            self.kafka.bootstrap,
            unique_topics(self._wanted_topics(extra)),
            timeout_s=self.kafka.request_timeout_s,
        )

    async def start(self, *, extra_topics: Iterable[TopicSpec[Any]] = ()) -> None:
        extra = list(extra_topics)
        refuse_topic_auto_creation()
        await self.ensure_topics(extra)
        self.closing.clear()
        producer = AIOKafkaProducer(
            bootstrap_servers=self.kafka.bootstrap,
            client_id=f"mainstay-{self.service}",
            acks="all",
            enable_idempotence=self.kafka.idempotent_producer,
            request_timeout_ms=int(self.kafka.request_timeout_s * 1000),
            metadata_max_age_ms=_METADATA_MAX_AGE_MS,
            max_request_size=self.kafka.max_message_bytes,
        )
        self._notice_broken_connections(producer)
        await start_kafka_client(producer, timeout_s=self.kafka.request_timeout_s)
        self._producer = producer
        try:
            await self.broker.start()
        except BaseException:
            self._producer = None
            await producer.stop()
            raise
        self._started = True
        self._topic_keeper = asyncio.create_task(self._keep_topics(extra))

    def _notice_broken_connections(self, producer: AIOKafkaProducer) -> None:
        """Doubt the topics, and look for them again soon, as soon as the producer's
        connection to the broker breaks.

        A bus that does not send while the broker is away would otherwise learn of the
        absence only at its next topic check, up to half a minute later: its first
        sends after the broker's return would go unchecked (and the embedded broker
        drops them), and its topics would be missing for as long. aiokafka gives a
        connection its client's ``_on_connection_closed`` when it opens it, so the
        hook is set before the producer opens any.
        """
        client = producer.client
        if not hasattr(client, "_on_connection_closed"):
            raise RuntimeError("aiokafka's client has no connection-closed hook; check the pin")
        forward = client._on_connection_closed

        def on_connection_closed(conn: Any, reason: Any) -> None:
            if reason in (CloseReason.CONNECTION_BROKEN, CloseReason.CONNECTION_TIMEOUT):
                self._doubt(_TOPICS_DOUBT_S)
                self._broker_lost.set()
            forward(conn, reason)

        client._on_connection_closed = on_connection_closed

    async def _keep_topics(self, extra: list[TopicSpec[Any]]) -> None:
        """Create this bus's topics again whenever they are missing.

        A broker that keeps nothing across a restart (the embedded one) comes back
        without topics; its consumers would then wait for topics nobody creates,
        and it creates a topic a producer writes to with its own default partition
        count. Checking often keeps that window short; on a real cluster the
        check finds every topic and creates nothing.
        """
        wanted = unique_topics(self._wanted_topics(extra))
        away = False
        # The consumers that held partitions when the broker's absence was noticed (None:
        # it was not): only they are expected to hold some again after its return.
        held: set[int] | None = None
        while True:
            with contextlib.suppress(TimeoutError):
                await within(self._broker_lost.wait(), _AWAY_CHECK_S if away else _TOPIC_CHECK_S)
            if self._broker_lost.is_set():
                self._broker_lost.clear()
                held = self._consumers_holding_partitions() if not away else held
                away = True
            try:
                created: list[str] = []
                # One metadata request on the producer's connection (also a bus with no
                # topics of its own notices the broker's absence); an admin client only
                # when a topic is missing.
                metadata = await self._require_producer().client.fetch_all_metadata()
                if any(topic.name not in metadata.topics() for topic in wanted):
                    created = await create_missing_topics(
                        self.kafka.bootstrap, wanted, timeout_s=self.kafka.request_timeout_s
                    )
            except Exception as exc:  # noqa: BLE001 - the broker may be away; look again later
                self._doubt(_TOPICS_DOUBT_S)
                held = self._consumers_holding_partitions() if not away else held
                away = True
                _log.debug("%s: cannot check its topics: %s", self.service, exc)
                continue
            if created:
                self._refresh_consumer_metadata()
            if (away or created) and (self._rewinding is None or self._rewinding.done()):
                away = False
                # Apart from this loop: asking for committed offsets waits while the
                # groups join again, and topics may still need creating meanwhile.
                self._rewinding = asyncio.create_task(self._rewind_to_committed())
                # Counted from this return: one still counting from an earlier one stops.
                await cancel_and_wait(self._idle_check)
                self._idle_check = asyncio.create_task(self._rebalance_idle_consumers(held))
                held = None
            if created:
                self._doubt(_TOPICS_DOUBT_S)  # other services' topics may be missing too
                _log.warning("%s: created missing topics again: %s", self.service, created)
            elif self._topics_in_doubt and time.monotonic() > self._doubt_until:
                self._topics_in_doubt = False

    def _kafka_consumers(self) -> list[Any]:
        """The aiokafka consumers behind this bus's subscribers (those started)."""
        found: list[Any] = []
        for subscriber in self._subscribers.values():
            kafka_consumers = getattr(subscriber, "consumer_subgroup", None) or [
                getattr(subscriber, "consumer", None)
            ]
            found.extend(c for c in kafka_consumers if c is not None)
        return found

    def _consumers_holding_partitions(self) -> set[int]:
        return {id(c) for c in self._kafka_consumers() if c.assignment()}

    def _refresh_consumer_metadata(self) -> None:
        """Have the consumers ask for metadata now: the topics just created are theirs,
        and without it they would notice them at their next refresh (half a minute)."""
        for kafka_consumer in self._kafka_consumers():
            kafka_consumer._client.force_metadata_update()

    async def _rewind_to_committed(self) -> None:
        """After the broker was away: every consumer goes back to its group's committed
        offsets, or to the beginning of a partition without one.

        A consumer keeps its fetch position across a broker's absence. A broker that
        comes back without its logs (the embedded one) starts each partition again at
        offset 0 and has forgotten the committed offsets, so a position kept from before
        would skip the first records written since. On Kafka the committed offsets are
        still there, and going back to them re-reads at most what was in flight (the
        inboxes and idempotency keys make that harmless).
        """
        for kafka_consumer in self._kafka_consumers():
            for partition in list(kafka_consumer.assignment()):
                try:
                    committed = await within(kafka_consumer.committed(partition), _REWIND_WAIT_S)
                    if committed is None:
                        await kafka_consumer.seek_to_beginning(partition)
                    else:
                        kafka_consumer.seek(partition, committed)
                except Exception as exc:  # noqa: BLE001 - a rebalance resets positions too
                    _log.debug("%s: cannot rewind %s: %s", self.service, partition, exc)

    async def _rebalance_idle_consumers(self, held_before: set[int] | None) -> None:
        """After the broker was away: a consumer holding no partitions although its
        topics have some asks its group to rebalance, a few times.

        Its group may have been assigned while its topics were still missing (the
        embedded broker came back empty), with nothing to assign. aiokafka rebalances
        when the topics appear only if the member that computed that assignment sees
        their metadata change; a consumer was once seen to stay without partitions for
        over a minute after the return. Only consumers that held partitions before the
        absence ask (``held_before``; all when the absence went unnoticed and topics
        were found missing), so a member idle by right (its group has more members than
        partitions) does not make its group rebalance.
        """
        for delay in _IDLE_CONSUMER_CHECKS_S:
            await asyncio.sleep(delay)
            for kafka_consumer in self._kafka_consumers():
                if held_before is not None and id(kafka_consumer) not in held_before:
                    continue
                if kafka_consumer.assignment() or not (topics := kafka_consumer.subscription()):
                    continue
                cluster = kafka_consumer._client.cluster
                if not all(cluster.partitions_for_topic(topic) for topic in topics):
                    kafka_consumer._client.force_metadata_update()  # not seen yet: ask now
                    continue
                request_rejoin = getattr(kafka_consumer._coordinator, "request_rejoin", None)
                if request_rejoin is not None:  # a group consumer (the bus has only those)
                    _log.info(
                        "%s: a consumer of %s holds no partitions; its group rebalances",
                        self.service,
                        sorted(topics),
                    )
                    request_rejoin()

    async def close(self) -> None:
        """Stop consuming, let in-flight handlers finish (up to the grace), flush, close."""
        self.closing.set()
        keeper, self._topic_keeper = self._topic_keeper, None
        await cancel_and_wait(keeper)
        rewinding, self._rewinding = self._rewinding, None
        await cancel_and_wait(rewinding)
        idle_check, self._idle_check = self._idle_check, None
        await cancel_and_wait(idle_check)
        try:
            await self.broker.stop()  # in-flight handlers may still publish meanwhile
        finally:
            producer, self._producer = self._producer, None
            if producer is not None:
                await producer.stop()  # flushes what is still buffered
            self._started = False


@dataclasses.dataclass
class _IdlePacing:
    """Slower fetches for a consumer that has had nothing for a while.

    Every consumer of a service fetches every ``fetch_max_wait_ms`` while idle; most of
    a mesh's consumers are idle most of the time, and on the embedded broker those
    fetches are what an idle mesh spends its CPU on. After ``idle_after_s`` without a
    record a consumer's fetches wait ``idle_ms`` instead; its first record switches it
    back. Kafka answers a waiting fetch as soon as data arrives, so there this costs
    nothing; on the embedded broker the first record after a quiet spell may wait up to
    ``idle_ms``.
    """

    busy_ms: int
    idle_ms: int
    idle_after_s: float
    quiet_since: float | None = None
    paced: bool = False

    @classmethod
    def from_settings(cls, kafka: KafkaSettings) -> _IdlePacing:
        return cls(
            busy_ms=kafka.fetch_max_wait_ms,
            idle_ms=max(kafka.idle_fetch_max_wait_ms, kafka.fetch_max_wait_ms),
            idle_after_s=kafka.idle_after_s,
        )

    def polled(self, consumer: Any, found: bool) -> None:
        """Account one poll of ``consumer`` (an aiokafka consumer) that ``found`` records."""
        if self.idle_ms == self.busy_ms:
            return
        if found:
            self.quiet_since = None
            if self.paced:
                self.paced = False
                _set_fetch_wait(consumer, self.busy_ms)
            return
        now = time.monotonic()
        if self.quiet_since is None:
            self.quiet_since = now
        elif not self.paced and now - self.quiet_since >= self.idle_after_s:
            self.paced = True
            _set_fetch_wait(consumer, self.idle_ms)


def _set_fetch_wait(consumer: Any, wait_ms: int) -> None:
    """The wait of ``consumer``'s next fetches (aiokafka reads it for each request)."""
    fetcher = getattr(consumer, "_fetcher", None)
    if fetcher is None or not hasattr(fetcher, "_fetch_max_wait_ms"):
        raise RuntimeError("aiokafka's consumer has no fetch wait to set; check the pin")
    fetcher._fetch_max_wait_ms = wait_ms


def _partitions_differ(producer: AIOKafkaProducer, metadata: Any, topics: set[str]) -> bool:
    """Whether the producer knows another partition count than ``metadata`` for a topic
    (a topic it has not sent to yet it learns when it first does)."""
    known = producer.client.cluster
    for topic in topics:
        cached = known.partitions_for_topic(topic)
        if cached is not None and cached != metadata.partitions_for_topic(topic):
            return True
    return False


def _poll_without_pause(subscriber: Any, pacing: _IdlePacing) -> None:
    """Make a FastStream batch subscriber poll again at once after an empty poll.

    FastStream sleeps ``batch_timeout_ms`` after a poll that found nothing, on top
    of the poll's own wait for records, so a record arriving during that sleep
    waited up to ``poll_timeout_ms`` more on every hop. The poll itself waits
    for records, so nothing spins. Each poll is also accounted to ``pacing``.
    """
    for name in ("get_msg", "batch_timeout_ms", "max_records"):
        if not hasattr(subscriber, name):
            raise RuntimeError(f"FastStream's batch subscriber has no {name!r}; check the pin")

    async def get_msg(consumer: Any) -> tuple[Any, ...]:
        records = await consumer.getmany(
            timeout_ms=subscriber.batch_timeout_ms, max_records=subscriber.max_records
        )
        pacing.polled(consumer, bool(records))
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
