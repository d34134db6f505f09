"""Fast tier: the envelope, routing names and public API, without a broker."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import BaseModel

from mainstay_common import bus, db
from mainstay_common.bus import (
    Bus,
    RetryPolicy,
    asyncapi_document,
    build_message,
    group_id,
    parse_event,
)
from mainstay_common.bus._envelope import HEADER_RESERVE_BYTES
from mainstay_common.bus._routing import tier_of
from mainstay_common.bus._topics import unique_topics
from mainstay_common.errors import InvalidArgument, InvalidMessage
from mainstay_common.settings import KafkaSettings, RetrySettings

from .conftest import ORDERS, largest_note, order


def test_public_names_are_stable() -> None:
    assert bus.__all__ == [
        "Bus",
        "Consumer",
        "Event",
        "Handler",
        "OutgoingMessage",
        "RetryPolicy",
        "TransactionalHandler",
        "asyncapi_document",
        "build_message",
        "decode_headers",
        "dlq_topic",
        "group_id",
        "parse_event",
        "refuse_topic_auto_creation",
        "retry_topic",
        "start_kafka_client",
    ]
    assert db.__all__ == [
        "LIBRARY_MIGRATIONS",
        "Connection",
        "Database",
        "Listener",
        "Migration",
        "Outbox",
        "OutboxRelay",
        "after_commit",
        "claim_inbox",
        "claim_inbox_many",
        "commit_hooks",
        "load_migrations",
        "purge_inbox",
        "redact_dsn",
        "run_hooks",
    ]


def test_a_message_too_large_to_send_is_refused_where_it_is_built() -> None:
    """With a size limit, the largest message that leaves room for the headers added on
    the way is built; one byte more is refused, naming its size and the limit."""
    limit = 16_384
    allowed = limit - HEADER_RESERVE_BYTES
    fixed = {"source": "s", "event_id": "e-1", "time": datetime(2026, 1, 2, tzinfo=UTC)}
    note = largest_note(allowed, **fixed)
    fits = build_message(ORDERS, order("o-1", note=note), max_bytes=limit, **fixed)
    assert fits.size == allowed
    over = build_message(ORDERS, order("o-1", note=note + "x"), **fixed)
    with pytest.raises(InvalidArgument) as refused:
        build_message(ORDERS, order("o-1", note=note + "x"), max_bytes=limit, **fixed)
    assert str(refused.value) == (
        f"{ORDERS.name}: the message is {over.size} bytes, over the limit of {allowed}"
        f" ({limit} bytes, the Kafka setting max_message_bytes, less {HEADER_RESERVE_BYTES}"
        " kept for headers added on the way); send less, or raise the limit together with"
        " the broker's"
    )
    assert over.size == allowed + 1


def test_build_message_sets_the_envelope_and_the_key() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    message = build_message(
        ORDERS,
        order("o-1", 3),
        source="mainstay/shop/i-1",
        topic_prefix="p.",
        subject="orders/o-1",
        tenant="acme",
        correlation_id="task-1",
        causation_id="evt-0",
        time=when,
        event_id="evt-1",
    )
    assert message.topic == "p.shop.cmd.place-order.v1"
    assert message.key == b"o-1"
    assert json.loads(message.value) == {"order_id": "o-1", "amount": 3, "note": ""}
    assert message.headers == {
        "ce_specversion": "1.0",
        "ce_id": "evt-1",
        "ce_type": "mainstay.shop.cmd.place-order.v1",
        "ce_source": "mainstay/shop/i-1",
        "ce_time": "2026-01-02T03:04:05+00:00",
        "content-type": "application/json",
        "ce_subject": "orders/o-1",
        "ce_tenant": "acme",
        "ce_correlationid": "task-1",
        "ce_causationid": "evt-0",
    }


def test_build_message_rejects_an_invalid_payload_naming_each_field() -> None:
    with pytest.raises(InvalidMessage) as caught:
        build_message(ORDERS, {"order_id": "", "amount": -1}, source="s")
    assert "order_id" in str(caught.value)
    assert "amount" in str(caught.value)
    assert "shop.cmd.place-order.v1" in str(caught.value)


def test_build_message_rejects_a_model_mutated_into_an_invalid_state() -> None:
    payload = order("o-1")
    payload.amount = -5  # pydantic does not validate assignment by default
    with pytest.raises(InvalidMessage, match="amount"):
        build_message(ORDERS, payload, source="s")


def test_build_message_rejects_the_wrong_model() -> None:
    class Refund(BaseModel):
        order_id: str
        amount: int

    with pytest.raises(InvalidMessage, match="must be Order, not Refund"):
        build_message(ORDERS, Refund(order_id="x", amount=1), source="s")  # type: ignore[arg-type]


def test_parse_event_round_trips_a_built_message() -> None:
    message = build_message(ORDERS, order("o-2", 9), source="s", tenant="t")
    event = parse_event(
        ORDERS,
        value=message.value,
        headers=message.headers,
        topic=message.topic,
        key=message.key,
        partition=1,
        offset=7,
        attempt=1,
    )
    assert event.payload == order("o-2", 9)
    assert (event.id, event.key, event.tenant, event.partition, event.offset) == (
        message.event_id,
        "o-2",
        "t",
        1,
        7,
    )


@pytest.mark.parametrize(
    ("value", "headers", "problem"),
    [
        (b'{"order_id": "x", "amount": 1}', {}, "ce_id is missing"),
        (b"", {"ce_specversion": "1.0", "ce_id": "1", "ce_type": "t", "ce_source": "s"}, "empty"),
        (
            b"[1, 2]",
            {"ce_specversion": "1.0", "ce_id": "1", "ce_type": "t", "ce_source": "s"},
            "Order",
        ),
        (
            b'{"order_id": "x", "amount": 1}',
            {
                "ce_specversion": "1.0",
                "ce_id": "1",
                "ce_type": "t",
                "ce_source": "s",
                "content-type": "application/xml",
            },
            "application/xml",
        ),
        (
            b'{"order_id": "x", "amount": 1}',
            {
                "ce_specversion": "1.0",
                "ce_id": "1",
                "ce_type": "t",
                "ce_source": "s",
                "ce_time": "noon",
            },
            "ce_time",
        ),
    ],
)
def test_parse_event_names_what_is_wrong(
    value: bytes, headers: dict[str, str], problem: str
) -> None:
    with pytest.raises(InvalidMessage, match=problem):
        parse_event(
            ORDERS,
            value=value,
            headers=headers,
            topic="t",
            key=None,
            partition=0,
            offset=0,
            attempt=1,
        )


def test_routing_names() -> None:
    assert group_id("memory", "remember", prefix="t1.") == "t1.memory.remember"
    assert tier_of("t1.memory.remember.retry.2", "t1.memory.remember") == 2
    assert tier_of("memory.cmd.remember.v1", "t1.memory.remember") == 0
    with pytest.raises(ValueError, match="handler name"):
        group_id("memory", "Remember_It")


def test_retry_policy_backoff_is_capped() -> None:
    policy = RetryPolicy(blocking=True, blocking_backoff=0.5, blocking_backoff_max=3)
    assert [policy.blocking_delay(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert policy.tiers == 0
    assert RetryPolicy(tier_delays=(1, 2)).tiers == 2
    with pytest.raises(ValueError, match=">= 0"):
        RetryPolicy(tier_delays=(-1,))


def test_asyncapi_document_describes_what_the_bus_consumes_and_publishes() -> None:
    bus = Bus(
        service="shop",
        kafka=KafkaSettings(topic_prefix=""),
        retry=RetrySettings(tier_delays_s=[1, 2]),
    )

    @bus.subscriber(ORDERS, handler="place")
    async def place(event: object) -> None:
        raise NotImplementedError

    document = asyncapi_document(
        bus, title="Shop", version="v1", description="d", publishes=[ORDERS]
    )
    receive = document["operations"]["receive shop.place"]
    assert receive["action"] == "receive"
    assert receive["x-retry-topics"] == ["shop.place.retry.1", "shop.place.retry.2"]
    assert receive["x-dead-letter-topic"] == "shop.place.dlq"
    assert document["operations"]["send shop.cmd.place-order.v1"]["action"] == "send"
    assert document["channels"]["shop.cmd.place-order.v1"]["address"] == "shop.cmd.place-order.v1"
    order_schema = document["components"]["schemas"]["Order"]
    assert set(order_schema["required"]) == {"order_id", "amount"}
    assert "ce_id" in document["components"]["schemas"]["CloudEventHeaders"]["required"]


def test_a_topic_is_requested_once_even_when_declared_twice() -> None:
    bus = Bus(service="shop", kafka=KafkaSettings(topic_prefix=""))

    @bus.subscriber(ORDERS, handler="place")
    async def place(event: object) -> None:
        raise NotImplementedError

    wanted = [*bus.required_topics(), *bus.required_topics()]
    names = [topic.name for topic in unique_topics(wanted)]
    assert sorted(names) == sorted(set(names))
    assert "shop.cmd.place-order.v1" in names
