"""The plugin's fixtures, used the way a service's tests use them."""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

import mainstay_common.testing as testing

if TYPE_CHECKING:
    from mainstay_common.testing import StackAddresses

_schemas_seen: list[tuple[str, str]] = []


def test_public_names_are_stable() -> None:
    assert testing.__all__ == [
        "PrivateBroker",
        "StackAddresses",
        "TopicTail",
        "assign_from_beginning",
        "read_records",
        "start_test_stack",
        "temporary_database",
        "with_database",
    ]


def test_the_stack_addresses_are_a_frozen_value(mainstay_stack: StackAddresses) -> None:
    with pytest.raises(AttributeError):
        mainstay_stack.kafka_bootstrap = "elsewhere"  # type: ignore[misc]


async def test_a_message_goes_through_the_session_broker(
    kafka_bootstrap: str, topic_prefix: str, request: pytest.FixtureRequest
) -> None:
    assert request.node.get_closest_marker("real") is not None
    topic = f"{topic_prefix}plugin.evt.check.v1"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, request_timeout_ms=10_000)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"hello", key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest", request_timeout_ms=10_000
    )
    await consumer.start()
    try:
        # Assigned, not subscribed: a consumer-group join would only add seconds.
        consumer.assign([TopicPartition(topic, 0)])
        record = await consumer.getone()
    finally:
        await consumer.stop()
    assert record.value == b"hello"


async def test_a_topic_tail_hands_over_what_was_there_and_what_comes(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    topics = [f"{topic_prefix}plugin.evt.tail-{n}.v1" for n in (1, 2)]
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 2, 1) for topic in topics])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, request_timeout_ms=10_000)
    await producer.start()
    seen: list[tuple[str, bytes]] = []
    try:
        await producer.send_and_wait(topics[0], b"before", partition=1)
        async with testing.TopicTail(
            kafka_bootstrap, topics, lambda r: seen.append((r.topic, r.value))
        ):
            await producer.send_and_wait(topics[1], b"after", partition=0)
            for _ in range(200):
                if len(seen) >= 2:
                    break
                await asyncio.sleep(0.05)
        await producer.send_and_wait(topics[1], b"once stopped", partition=0)
        await asyncio.sleep(0.3)
    finally:
        await producer.stop()
    assert sorted(seen) == [(topics[0], b"before"), (topics[1], b"after")]


async def test_pg_schema_exists_during_the_test(postgres_dsn: str, pg_schema: str) -> None:
    assert re.fullmatch(r"t_[0-9a-f]{8}", pg_schema)
    connection = await asyncpg.connect(postgres_dsn, timeout=10)
    try:
        await connection.execute(f'CREATE TABLE "{pg_schema}".notes (body text)')
        found = await connection.fetchval(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1", pg_schema
        )
    finally:
        await connection.close()
    assert found == 1
    _schemas_seen.append((postgres_dsn, pg_schema))


async def test_pg_schema_is_dropped_after_its_test(postgres_dsn: str) -> None:
    # Runs after the previous test (file order) and checks what it left behind.
    if not _schemas_seen:
        pytest.skip("the test that creates the schema did not run")
    [(dsn, schema)] = _schemas_seen
    assert dsn == postgres_dsn
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        found = await connection.fetchval(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1", schema
        )
    finally:
        await connection.close()
    assert found == 0


def test_topic_prefixes_are_unique_lowercase_and_end_with_a_dot(
    topic_prefix: str, request: pytest.FixtureRequest
) -> None:
    assert re.fullmatch(r"t[0-9a-f]{8}\.", topic_prefix)
    assert request.getfixturevalue("topic_prefix") == topic_prefix  # one per test
    # a test that needs no server is not marked real
    assert request.node.get_closest_marker("real") is None
