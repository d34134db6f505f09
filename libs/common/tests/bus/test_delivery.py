"""Delivery, retry tiers and dead letters against the real broker."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiokafka.partitioner import DefaultPartitioner
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry

from mainstay_common.bus import Event, dlq_topic, retry_topic
from mainstay_common.bus._envelope import HEADER_RESERVE_BYTES
from mainstay_common.errors import (
    DependencyTimeout,
    DependencyUnavailable,
    InvalidArgument,
    RuleViolation,
)
from mainstay_common.settings import RetrySettings, TelemetrySettings
from mainstay_common.telemetry import TASK_ID_ATTRIBUTE, collect_spans, setup_telemetry
from mainstay_common.telemetry.metrics import BusMetrics
from mainstay_contracts import DLQ_HEADERS, Header

from .conftest import (
    ORDERS,
    Order,
    largest_note,
    order,
    produce_raw,
    read_topic,
    valid_headers,
    wait_for,
)

pytestmark = pytest.mark.real


def _headers(record) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers}


async def test_valid_message_is_handled_once(make_bus, kafka_bootstrap, topic_prefix) -> None:
    bus = make_bus()
    seen: list[Event[Order]] = []

    @bus.subscriber(ORDERS, handler="place")
    async def place(event: Event[Order]) -> None:
        seen.append(event)

    async with bus:
        event_id = await bus.publish(
            ORDERS, order("o-1", 5), correlation_id="task-1", tenant="acme"
        )
        await wait_for(lambda: len(seen) >= 1, what="the handler")
        await bus.publish(ORDERS, order("o-2", 6))
        await wait_for(lambda: len(seen) >= 2, what="the second message")
    assert [e.payload for e in seen] == [order("o-1", 5), order("o-2", 6)]
    first = seen[0]
    assert (first.id, first.key, first.tenant, first.correlation_id, first.attempt) == (
        event_id,
        "o-1",
        "acme",
        "task-1",
        1,
    )
    records = await read_topic(kafka_bootstrap, f"{topic_prefix}{ORDERS.name}", count=2)
    [headers] = [_headers(r) for r in records if _headers(r)["ce_id"] == event_id]
    assert headers["ce_specversion"] == "1.0"
    assert headers["ce_id"] == event_id
    assert headers["ce_source"] == "mainstay/shop"
    assert headers["ce_type"] == "mainstay.shop.cmd.place-order.v1"
    assert headers["content-type"] == "application/json"
    assert headers["ce_tenant"] == "acme"
    assert headers["ce_correlationid"] == "task-1"
    assert "ce_time" in headers


async def test_retryable_failure_goes_through_tiers_and_succeeds_once(
    make_bus, kafka_bootstrap, topic_prefix
) -> None:
    bus = make_bus()
    attempts: list[tuple[int, float]] = []
    succeeded: list[str] = []

    @bus.subscriber(ORDERS, handler="flaky")
    async def flaky(event: Event[Order]) -> None:
        attempts.append((event.attempt, time.monotonic()))
        if event.attempt <= 2:
            raise DependencyUnavailable("payment service is down")
        succeeded.append(event.id)

    async with bus:
        event_id = await bus.publish(ORDERS, order("o-1"))
        await wait_for(lambda: len(succeeded) >= 1, what="success after two retries")
    assert [a for a, _ in attempts] == [1, 2, 3]
    assert succeeded == [event_id]
    # each tier waited at least its delay (0.3 s, then 0.6 s) before the next attempt
    assert attempts[1][1] - attempts[0][1] >= 0.3
    assert attempts[2][1] - attempts[1][1] >= 0.6
    group = f"{topic_prefix}shop.flaky"
    [tier1] = await read_topic(kafka_bootstrap, retry_topic(group, 1), count=1)
    [tier2] = await read_topic(kafka_bootstrap, retry_topic(group, 2), count=1)
    assert _headers(tier1)[Header.ATTEMPTS] == "1"
    assert _headers(tier2)[Header.ATTEMPTS] == "2"
    assert _headers(tier2)[Header.ORIGIN_TOPIC] == f"{topic_prefix}{ORDERS.name}"
    assert _headers(tier2)["ce_id"] == event_id


async def test_exhausted_retries_end_in_the_dlq_with_every_header(
    make_bus, kafka_bootstrap, topic_prefix
) -> None:
    registry = CollectorRegistry()
    bus = make_bus(metrics=BusMetrics(registry))
    calls: list[int] = []

    @bus.subscriber(ORDERS, handler="broken")
    async def broken(event: Event[Order]) -> None:
        calls.append(event.attempt)
        raise DependencyTimeout("inventory did not answer in 2s")

    async with bus:
        event_id = await bus.publish(ORDERS, order("o-9", 42, note="keep me"), correlation_id="t-9")
        group = f"{topic_prefix}shop.broken"
        [letter] = await read_topic(kafka_bootstrap, dlq_topic(group), count=1, wait_s=30)
    assert calls == [1, 2, 3, 4]
    group = f"{topic_prefix}shop.broken"
    for tier in ("1", "2", "3"):
        assert (
            registry.get_sample_value(
                "mainstay_messages_retried_total", {"group": group, "tier": tier}
            )
            == 1
        )
    assert (
        registry.get_sample_value(
            "mainstay_messages_dead_lettered_total", {"group": group, "error_class": "exhausted"}
        )
        == 1
    )
    headers = _headers(letter)
    for name in DLQ_HEADERS:
        assert name in headers, name
    assert headers[Header.ERROR_CLASS] == "exhausted"
    assert headers[Header.ERROR_TYPE] == "DependencyTimeout"
    assert headers[Header.ERROR_MESSAGE] == "inventory did not answer in 2s"
    assert headers[Header.ATTEMPTS] == "4"
    assert headers[Header.ORIGIN_TOPIC] == f"{topic_prefix}{ORDERS.name}"
    assert headers[Header.ORIGIN_OFFSET] == "0"
    assert int(headers[Header.ORIGIN_PARTITION]) in range(ORDERS.partitions)
    assert Header.NOT_BEFORE not in headers
    # the original message survives intact
    assert headers["ce_id"] == event_id
    assert headers["ce_correlationid"] == "t-9"
    assert letter.key == b"o-9"
    assert json.loads(letter.value) == {"order_id": "o-9", "amount": 42, "note": "keep me"}


async def test_permanent_error_is_dead_lettered_without_retry(
    make_bus, kafka_bootstrap, topic_prefix
) -> None:
    bus = make_bus()
    calls: list[int] = []

    @bus.subscriber(ORDERS, handler="strict")
    async def strict(event: Event[Order]) -> None:
        calls.append(event.attempt)
        raise RuleViolation("order exceeds the credit limit")

    async with bus:
        await bus.publish(ORDERS, order("o-2"))
        [letter] = await read_topic(
            kafka_bootstrap, dlq_topic(f"{topic_prefix}shop.strict"), count=1
        )
    assert calls == [1]
    headers = _headers(letter)
    assert headers[Header.ERROR_CLASS] == "permanent"
    assert headers[Header.ERROR_TYPE] == "RuleViolation"
    assert headers[Header.ATTEMPTS] == "1"


async def test_invalid_payload_goes_to_the_dlq_at_once(
    make_bus, kafka_bootstrap, topic_prefix
) -> None:
    bus = make_bus()
    calls: list[Event[Order]] = []

    @bus.subscriber(ORDERS, handler="check")
    async def check(event: Event[Order]) -> None:
        calls.append(event)

    async with bus:
        await produce_raw(
            kafka_bootstrap,
            f"{topic_prefix}{ORDERS.name}",
            b'{"order_id": "", "amount": -3}',
            key=b"bad",
            headers=valid_headers("evt-bad"),
        )
        [letter] = await read_topic(
            kafka_bootstrap, dlq_topic(f"{topic_prefix}shop.check"), count=1
        )
        await bus.publish(ORDERS, order("o-ok"))
        await wait_for(lambda: len(calls) == 1, what="the valid message after the invalid one")
    headers = _headers(letter)
    assert headers[Header.ERROR_CLASS] == "invalid"
    assert headers[Header.ERROR_TYPE] == "InvalidMessage"
    assert headers[Header.ATTEMPTS] == "1"
    assert "order_id" in headers[Header.ERROR_MESSAGE]
    assert "amount" in headers[Header.ERROR_MESSAGE]
    assert letter.value == b'{"order_id": "", "amount": -3}'
    assert [e.payload.order_id for e in calls] == ["o-ok"]


async def test_message_without_envelope_is_invalid(make_bus, kafka_bootstrap, topic_prefix) -> None:
    bus = make_bus()

    @bus.subscriber(ORDERS, handler="envelope")
    async def envelope(event: Event[Order]) -> None:
        raise AssertionError("must not be called")

    async with bus:
        await produce_raw(
            kafka_bootstrap,
            f"{topic_prefix}{ORDERS.name}",
            b'{"order_id": "x", "amount": 1}',
            key=b"x",
            headers=[("content-type", b"application/json")],
        )
        [letter] = await read_topic(
            kafka_bootstrap, dlq_topic(f"{topic_prefix}shop.envelope"), count=1
        )
    message = _headers(letter)[Header.ERROR_MESSAGE]
    assert "ce_id is missing" in message
    assert "ce_specversion" in message


async def test_poison_message_does_not_stall_its_partition(
    make_bus, kafka_bootstrap, topic_prefix
) -> None:
    bus = make_bus()
    handled: list[str] = []

    @bus.subscriber(ORDERS, handler="orders")
    async def orders(event: Event[Order]) -> None:
        if event.payload.note == "poison":
            raise DependencyUnavailable("always fails")
        handled.append(event.payload.note)

    async with bus:
        # all share one key, hence one partition, behind two kinds of poison
        await produce_raw(
            kafka_bootstrap,
            f"{topic_prefix}{ORDERS.name}",
            b"not json at all",
            key=b"same",
            headers=valid_headers("evt-garbage"),
        )
        await bus.publish(ORDERS, order("same", note="poison"))
        for n in range(3):
            await bus.publish(ORDERS, order("same", note=f"after-{n}"))
        await wait_for(lambda: len(handled) == 3, what="messages behind the poison")
        assert handled == ["after-0", "after-1", "after-2"]
        await read_topic(
            kafka_bootstrap, dlq_topic(f"{topic_prefix}shop.orders"), count=2, wait_s=30
        )


async def test_waiting_retry_does_not_block_newer_messages(make_bus, topic_prefix) -> None:
    bus = make_bus(retry=RetrySettings(tier_delays_s=[1.5], redelivery_backoff_s=0.2))
    order_of_events: list[tuple[str, int]] = []

    @bus.subscriber(ORDERS, handler="patient")
    async def patient(event: Event[Order]) -> None:
        order_of_events.append((event.payload.order_id, event.attempt))
        if event.payload.order_id == "slow" and event.attempt == 1:
            raise DependencyUnavailable("try later")

    async with bus:
        await bus.publish(ORDERS, order("slow"))
        await wait_for(lambda: len(order_of_events) == 1, what="the first attempt")
        for n in range(3):
            await bus.publish(ORDERS, order(f"fast-{n}"))
        await wait_for(lambda: len(order_of_events) == 5, what="all attempts")
    assert order_of_events[0] == ("slow", 1)
    assert order_of_events[-1] == ("slow", 2)
    assert sorted(order_of_events[1:4]) == [("fast-0", 1), ("fast-1", 1), ("fast-2", 1)]


async def test_retry_after_on_the_error_extends_the_tier_delay(make_bus) -> None:
    bus = make_bus()
    times: list[float] = []

    @bus.subscriber(ORDERS, handler="throttled")
    async def throttled(event: Event[Order]) -> None:
        times.append(time.monotonic())
        if event.attempt == 1:
            raise DependencyUnavailable("rate limited", retry_after=1.2)

    async with bus:
        await bus.publish(ORDERS, order("o-1"))
        await wait_for(lambda: len(times) == 2, what="the retry")
    assert times[1] - times[0] >= 1.2


async def test_dead_letter_keeps_the_original_headers_byte_for_byte(
    make_bus, kafka_bootstrap, topic_prefix
) -> None:
    bus = make_bus()

    @bus.subscriber(ORDERS, handler="exact")
    async def exact(event: Event[Order]) -> None:
        raise AssertionError("must not be called")

    original = [*valid_headers("evt-exact"), ("x-binary", b"\xff\xfe\x00raw")]
    async with bus:
        await produce_raw(
            kafka_bootstrap,
            f"{topic_prefix}{ORDERS.name}",
            b'{"order_id": 42}',
            key=b"k",
            headers=original,
        )
        [letter] = await read_topic(
            kafka_bootstrap, dlq_topic(f"{topic_prefix}shop.exact"), count=1
        )
    kept = [(name, value) for name, value in letter.headers if not name.startswith("mainstay-")]
    assert kept == original
    added = {name for name, _ in letter.headers if name.startswith("mainstay-")}
    assert added == set(DLQ_HEADERS)


async def test_a_failed_dlq_write_rewinds_and_loses_nothing(
    make_bus, kafka_bootstrap, topic_prefix
) -> None:
    bus = make_bus()
    seen: list[str] = []

    @bus.subscriber(ORDERS, handler="rewind")
    async def rewind(event: Event[Order]) -> None:
        seen.append(event.payload.note)
        if event.payload.note == "poison":
            raise RuleViolation("never valid")

    real_send = bus.send_raw
    dlq_writes = 0

    async def flaky_send(topic: str, **kwargs) -> None:
        nonlocal dlq_writes
        if topic.endswith(".dlq"):
            dlq_writes += 1
            if dlq_writes <= 2:
                raise DependencyUnavailable("broker rejected the write")
        await real_send(topic, **kwargs)

    bus.send_raw = flaky_send  # the broker refuses the first two dead-letter writes
    async with bus:
        await bus.publish(ORDERS, order("same", note="poison"))
        await bus.publish(ORDERS, order("same", note="after"))
        await wait_for(lambda: "after" in seen, what="the message behind the poison")
        letters = await read_topic(
            kafka_bootstrap, dlq_topic(f"{topic_prefix}shop.rewind"), count=1
        )
    assert dlq_writes == 3
    assert seen == ["poison", "poison", "poison", "after"]
    assert len(letters) == 1


async def test_the_trace_continues_from_publisher_to_handler(make_bus) -> None:
    bus = make_bus()
    handler_trace: list[int] = []

    @bus.subscriber(ORDERS, handler="traced")
    async def traced(event: Event[Order]) -> None:
        assert "traceparent" in event.headers
        handler_trace.append(trace.get_current_span().get_span_context().trace_id)

    tracer = TracerProvider().get_tracer("test")
    async with bus:
        with tracer.start_as_current_span("submit task") as span:
            await bus.publish(ORDERS, order("o-t"))
            publisher_trace = span.get_span_context().trace_id
        await wait_for(lambda: bool(handler_trace), what="the handler")
    assert handler_trace == [publisher_trace]


async def test_each_handler_span_is_a_child_of_its_publish_and_the_lag_is_recorded(
    make_bus, topic_prefix
) -> None:
    telemetry = setup_telemetry(
        "shop", TelemetrySettings(), instance_id="t", instrument_libraries=False
    )
    registry = CollectorRegistry()
    bus = make_bus(metrics=BusMetrics(registry), tracer_provider=telemetry.tracer_provider)
    handled: list[str] = []
    group = f"{topic_prefix}shop.spanned"

    @bus.subscriber(ORDERS, handler="spanned")
    async def spanned(event: Event[Order]) -> None:
        handled.append(event.id)

    def lags() -> list[float]:
        return [
            sample.value
            for family in registry.collect()
            for sample in family.samples
            if sample.name == "mainstay_consumer_lag" and sample.labels["group"] == group
        ]

    with collect_spans() as spans:
        async with bus:
            for n in range(3):
                await bus.publish(ORDERS, order(f"o-s{n}"), correlation_id="task-s")
            await wait_for(lambda: len(handled) == 3, what="the handler")
            await wait_for(lambda: bool(lags()), what="the lag gauge")
            await wait_for(lambda: sum(lags()) == 0, what="the lag to reach 0")
    telemetry.shutdown()
    finished = [
        s for s in spans.get_finished_spans() if s.resource == telemetry.tracer_provider.resource
    ]
    producers = {
        s.attributes["messaging.message.id"]: s for s in finished if s.kind is SpanKind.PRODUCER
    }
    consumers = [s for s in finished if s.kind is SpanKind.CONSUMER]
    assert sorted(producers) == sorted(handled)
    assert len(consumers) == 3
    for consumer in consumers:
        parent = producers[consumer.attributes["messaging.message.id"]]
        assert consumer.parent.span_id == parent.context.span_id
        assert consumer.context.trace_id == parent.context.trace_id
    assert {s.attributes[TASK_ID_ATTRIBUTE] for s in finished} == {"task-s"}


def _keys_on_two_partitions() -> tuple[str, str]:
    choose = DefaultPartitioner()
    parts = list(range(ORDERS.partitions))
    first = "o-slow"
    for n in range(1000):
        other = f"o-quick-{n}"
        if choose(other.encode(), parts, parts) != choose(first.encode(), parts, parts):
            return first, other
    raise AssertionError("no key on another partition")


async def test_a_slow_message_holds_up_only_its_own_partition_of_a_batch(make_bus) -> None:
    slow_key, quick_key = _keys_on_two_partitions()
    finished: list[str] = []
    bus = make_bus()

    @bus.subscriber(ORDERS, handler="place")
    async def place(event: Event[Order]) -> None:
        if event.payload.note == "slow":
            await asyncio.sleep(1.5)
        finished.append(event.payload.note)

    # Both wait before the consumer starts, so they arrive in one polled batch. The
    # topics are the owner's to create (a producer does not create them).
    await bus.ensure_topics()
    async with make_bus(service="producer") as producer:
        await producer.publish(ORDERS, order(slow_key, note="slow"))
        await producer.publish(ORDERS, order(slow_key, note="after-slow"))
        await producer.publish(ORDERS, order(quick_key, note="quick"))
    async with bus:
        await wait_for(lambda: len(finished) >= 3, what="all three messages")
    assert finished.index("quick") < finished.index("slow")
    assert finished.index("slow") < finished.index("after-slow")  # order within a partition


async def test_the_largest_message_allowed_keeps_its_payload_through_tiers_to_the_dlq(
    make_bus, kafka_bootstrap, topic_prefix
) -> None:
    """A bus whose records may be at most 16 KiB: the largest message it builds still fits
    with the headers of every retry tier and of the dead letter (the longest error message
    kept), so it reaches the DLQ whole; a larger message is refused at publish with its
    size and is not written."""
    limit = 16_384
    bus = make_bus(kafka_options={"max_message_bytes": limit})
    calls: list[int] = []

    @bus.subscriber(ORDERS, handler="heavy")
    async def heavy(event: Event[Order]) -> None:
        calls.append(event.attempt)
        raise DependencyTimeout("the warehouse did not answer: " + "w" * 3000)

    note = largest_note(limit - HEADER_RESERVE_BYTES)
    async with bus:
        with pytest.raises(InvalidArgument, match=r"the message is \d+ bytes, over the limit of"):
            await bus.publish(ORDERS, order("o-1", note=note + "x" * 64))
        event_id = await bus.publish(ORDERS, order("o-1", note=note))
        group = f"{topic_prefix}shop.heavy"
        [letter] = await read_topic(kafka_bootstrap, dlq_topic(group), count=1, wait_s=30)
        records = await read_topic(kafka_bootstrap, f"{topic_prefix}{ORDERS.name}", count=1)
    assert calls == [1, 2, 3, 4]
    headers = _headers(letter)
    assert headers["ce_id"] == event_id
    assert headers[Header.ERROR_CLASS] == "exhausted"
    assert len(headers[Header.ERROR_MESSAGE]) == 2000
    assert "mainstay-payload-dropped" not in headers
    assert json.loads(letter.value) == {"order_id": "o-1", "amount": 1, "note": note}
    assert [_headers(r)["ce_id"] for r in records] == [event_id]
