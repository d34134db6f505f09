"""Inbox and outbox: effectively-once effects over at-least-once delivery."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

import pytest

from mainstay_common.db import (
    LIBRARY_MIGRATIONS,
    Database,
    Migration,
    Outbox,
    OutboxRelay,
    after_commit,
)
from mainstay_common.errors import DependencyUnavailable, InvalidMessage, RuleViolation
from mainstay_common.lifecycle import within
from mainstay_common.settings import PostgresSettings

from .conftest import ORDERS, Order, order, read_topic, wait_for

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence
    from typing import Any

    from mainstay_common.bus import Event, OutgoingMessage
    from mainstay_common.db import Connection

pytestmark = pytest.mark.real

TOTALS = Migration(
    id="shop/0001_totals",
    sql="CREATE TABLE totals (order_id text PRIMARY KEY, amount bigint NOT NULL)",
)


@pytest.fixture
async def database(postgres_dsn: str, pg_schema: str) -> AsyncIterator[Database]:
    async with Database(PostgresSettings(dsn=postgres_dsn), schema=pg_schema) as db:
        await db.migrate(LIBRARY_MIGRATIONS, [TOTALS])
        yield db


async def _add_to_total(tx: Connection, payload: Order) -> None:
    await tx.execute(
        "INSERT INTO totals (order_id, amount) VALUES ($1, $2)"
        " ON CONFLICT (order_id) DO UPDATE SET amount = totals.amount + EXCLUDED.amount",
        payload.order_id,
        payload.amount,
    )


async def _total(db: Database, order_id: str) -> int | None:
    rows = await db.fetch("SELECT amount FROM totals WHERE order_id = $1", order_id)
    return rows[0]["amount"] if rows else None


async def test_redelivered_ce_id_changes_state_once(make_bus, database: Database) -> None:
    bus = make_bus()
    calls: list[str] = []

    @bus.transactional_subscriber(ORDERS, handler="total", database=database)
    async def total(event: Event[Order], tx: Connection) -> None:
        calls.append(event.id)
        await _add_to_total(tx, event.payload)

    async with bus:
        # the same message delivered three times (a producer retry, a replay...)
        for _ in range(3):
            await bus.publish(ORDERS, order("o-1", 10), event_id="evt-1")
        await bus.publish(ORDERS, order("o-1", 5), event_id="evt-2")
        await wait_for(lambda: "evt-2" in calls, what="the second distinct event")
        await asyncio.sleep(0.5)  # give any stray redelivery the chance to show up
    assert calls == ["evt-1", "evt-2"]
    assert await _total(database, "o-1") == 15
    rows = await database.fetch("SELECT event_id FROM inbox ORDER BY event_id")
    assert [r["event_id"] for r in rows] == ["evt-1", "evt-2"]


async def test_failed_attempt_rolls_back_state_and_inbox(make_bus, database: Database) -> None:
    bus = make_bus()
    attempts: list[int] = []

    @bus.transactional_subscriber(ORDERS, handler="half", database=database)
    async def half(event: Event[Order], tx: Connection) -> None:
        attempts.append(event.attempt)
        await _add_to_total(tx, event.payload)
        if event.attempt == 1:
            raise DependencyUnavailable("crashed after writing")

    async with bus:
        await bus.publish(ORDERS, order("o-2", 7))
        await wait_for(lambda: len(attempts) == 2, what="the retry")
        await asyncio.sleep(0.3)
    assert attempts == [1, 2]
    assert await _total(database, "o-2") == 7


async def test_blocking_mode_retries_in_place_and_keeps_order(
    make_bus, database: Database, kafka_bootstrap, topic_prefix
) -> None:
    bus = make_bus()
    seen: list[tuple[str, int]] = []

    @bus.transactional_subscriber(ORDERS, handler="ledger", database=database, blocking=True)
    async def ledger(event: Event[Order], tx: Connection) -> None:
        seen.append((event.payload.note, event.attempt))
        if event.payload.note == "first" and event.attempt < 3:
            raise DependencyUnavailable("database busy")
        await _add_to_total(tx, event.payload)

    async with bus:
        await bus.publish(ORDERS, order("acct", 1, note="first"))
        await bus.publish(ORDERS, order("acct", 2, note="second"))
        await wait_for(lambda: ("second", 1) in seen, what="the second message")
    assert seen == [("first", 1), ("first", 2), ("first", 3), ("second", 1)]
    assert await _total(database, "acct") == 3
    assert not [c.retry_topics for c in bus.consumers if c.retry_topics]


async def test_blocking_mode_dead_letters_when_attempts_run_out(
    make_bus, database: Database, kafka_bootstrap, topic_prefix
) -> None:
    bus = make_bus()

    @bus.transactional_subscriber(ORDERS, handler="stuck", database=database, blocking=True)
    async def stuck(event: Event[Order], tx: Connection) -> None:
        raise DependencyUnavailable("never recovers")

    async with bus:
        await bus.publish(ORDERS, order("acct"))
        [letter] = await read_topic(kafka_bootstrap, f"{topic_prefix}shop.stuck.dlq", count=1)
    headers = {k: v.decode() for k, v in letter.headers}
    assert headers["mainstay-attempts"] == "3"
    assert headers["mainstay-error-class"] == "exhausted"


async def test_outbox_row_committed_before_a_crash_is_published_exactly_once(
    make_bus, database: Database, kafka_bootstrap, topic_prefix
) -> None:
    bus = make_bus()
    outbox = Outbox(database)
    message = bus.message(ORDERS, order("o-7", 3), correlation_id="task-7")
    async with database.pool.acquire() as tx, tx.transaction():
        await _add_to_total(tx, order("o-7", 3))
        await outbox.add(tx, message)

    async def broker_unreachable(messages: Sequence[OutgoingMessage]) -> None:
        raise DependencyUnavailable("broker unreachable")

    # the first process dies before it could publish anything
    crashed = OutboxRelay(database, broker_unreachable, poll_interval=0.05, error_backoff=0.05)
    async with crashed:
        await asyncio.sleep(0.3)
    assert crashed.published == 0
    assert await OutboxRelay(database, broker_unreachable).pending() == 1

    await bus.ensure_topics([ORDERS])  # no subscriber here creates it
    async with bus, OutboxRelay(database, bus.send_many, poll_interval=0.1) as relay:
        await wait_for(lambda: relay.published == 1, what="the relay")
        await asyncio.sleep(0.5)  # a second publish would happen in this window
        assert await relay.pending() == 0
    records = await read_topic(kafka_bootstrap, f"{topic_prefix}{ORDERS.name}", count=1)
    assert len(records) == 1
    headers = {k: v.decode() for k, v in records[0].headers}
    assert headers["ce_id"] == message.event_id
    assert headers["ce_correlationid"] == "task-7"
    assert json.loads(records[0].value) == {"order_id": "o-7", "amount": 3, "note": ""}


async def test_crash_after_publish_is_deduplicated_by_the_consumer_inbox(
    make_bus, database: Database, kafka_bootstrap, topic_prefix
) -> None:
    bus = make_bus()
    outbox = Outbox(database)
    handled: list[str] = []

    @bus.transactional_subscriber(ORDERS, handler="dedupe", database=database)
    async def dedupe(event: Event[Order], tx: Connection) -> None:
        handled.append(event.id)
        await _add_to_total(tx, event.payload)

    async with bus:
        message = bus.message(ORDERS, order("o-8", 4))
        async with database.pool.acquire() as tx, tx.transaction():
            await outbox.add(tx, message)

        async def publish_then_crash(messages: Sequence[OutgoingMessage]) -> None:
            await bus.send_many(messages)
            raise RuntimeError("process killed before the outbox row was deleted")

        crashed = OutboxRelay(database, publish_then_crash, poll_interval=0.05, error_backoff=5)
        async with crashed:
            await wait_for(lambda: len(handled) == 1, what="the first copy")
        async with OutboxRelay(database, bus.send_many, poll_interval=0.05) as relay:
            await wait_for(lambda: relay.published == 1, what="the republish")
        await read_topic(kafka_bootstrap, f"{topic_prefix}{ORDERS.name}", count=2)
        await asyncio.sleep(0.5)
    assert handled == [message.event_id]
    assert await _total(database, "o-8") == 4


async def test_rows_committed_while_a_batch_is_out_are_relayed_without_waiting_for_the_poll(
    make_bus, database: Database
) -> None:
    bus = make_bus()
    outbox = Outbox(database)
    batches: list[list[str]] = []
    first_out, go_on = asyncio.Event(), asyncio.Event()

    async def publish(messages: Sequence[OutgoingMessage]) -> None:
        batches.append([m.event_id for m in messages])
        first_out.set()
        await go_on.wait()

    async def commit(order_id: str) -> str:
        message = bus.message(ORDERS, order(order_id))
        async with database.pool.acquire() as tx, tx.transaction():
            await outbox.add(tx, message)
        return message.event_id

    # The poll would come only after an hour: only the commit's notice can bring the relay back.
    async with OutboxRelay(database, publish, poll_interval=3600) as relay:
        first = await commit("o-20")
        await within(first_out.wait(), timeout=10)
        second = await commit("o-21")  # its notice arrives while the first batch is out
        await asyncio.sleep(0.2)
        go_on.set()
        await wait_for(lambda: relay.published == 2, what="the row committed mid-batch")
    assert batches == [[first], [second]]


async def test_a_second_relay_waits_while_the_first_publishes_so_order_holds(
    make_bus, database: Database
) -> None:
    bus = make_bus()
    outbox = Outbox(database)
    sent: list[tuple[str, list[str]]] = []
    first_out, go_on = asyncio.Event(), asyncio.Event()

    def publisher(name: str, *, hold: bool) -> Callable[[Sequence[OutgoingMessage]], Any]:
        async def publish(messages: Sequence[OutgoingMessage]) -> None:
            sent.append((name, [m.event_id for m in messages]))
            if hold:
                first_out.set()
                await go_on.wait()

        return publish

    ids = []
    for n in range(3):
        message = bus.message(ORDERS, order(f"o-3{n}"))
        ids.append(message.event_id)
        async with database.pool.acquire() as tx, tx.transaction():
            await outbox.add(tx, message)
    one = OutboxRelay(database, publisher("one", hold=True), batch_size=2)
    two = OutboxRelay(database, publisher("two", hold=False), batch_size=2)
    first = asyncio.create_task(one.relay_once())
    try:
        await within(first_out.wait(), timeout=10)
        # The first relay's batch is out and not yet acknowledged: the third row is
        # there, but publishing it now would send it before the first two are in.
        assert await two.relay_once() == 0
    finally:
        go_on.set()
    assert await first == 2
    assert await two.relay_once() == 1
    assert sent == [("one", ids[:2]), ("two", ids[2:])]
    assert await two.pending() == 0


async def test_rolled_back_transaction_publishes_nothing(make_bus, database: Database) -> None:
    bus = make_bus()
    outbox = Outbox(database)

    async def change_then_fail() -> None:
        async with database.pool.acquire() as tx, tx.transaction():
            await outbox.add(tx, bus.message(ORDERS, order("o-9")))
            raise RuleViolation("the state change is refused")

    with pytest.raises(RuleViolation):
        await change_then_fail()
    assert await OutboxRelay(database, bus.send_many).pending() == 0


async def test_outbox_refuses_to_write_outside_a_transaction(make_bus, database: Database) -> None:
    bus = make_bus()
    async with database.pool.acquire() as conn:
        with pytest.raises(RuntimeError, match="inside the transaction"):
            await Outbox(database).add(conn, bus.message(ORDERS, order("o-10")))


def test_invalid_payload_is_rejected_before_publishing(make_bus) -> None:
    bus = make_bus()
    with pytest.raises(InvalidMessage, match="amount"):
        bus.message(ORDERS, {"order_id": "o-1", "amount": -1})


async def test_a_failure_in_a_group_commit_leaves_its_neighbours_committed_once(
    make_bus, database: Database, kafka_bootstrap, topic_prefix
) -> None:
    """Five messages wait on one partition, so one poll hands them over together and they
    share a transaction; the third fails for good. The group is rolled back and redone
    around it: the others commit once (their after-commit work runs once), the third
    goes to the DLQ and leaves nothing behind."""
    async with make_bus(service="producer") as producer:
        await producer.ensure_topics([ORDERS])  # before its consumer creates it
        for amount, note in ((1, "a"), (2, "b"), (4, "reject"), (8, "d"), (16, "e")):
            await producer.publish(ORDERS, order("g", amount, note=note))
    bus = make_bus()
    runs: list[str] = []
    committed: list[str] = []

    @bus.transactional_subscriber(ORDERS, handler="group", database=database)
    async def group(event: Event[Order], tx: Connection) -> None:
        note = event.payload.note
        runs.append(note)
        await _add_to_total(tx, event.payload)
        if note == "reject":
            raise RuleViolation("rejected")
        after_commit(lambda: committed.append(note))

    async with bus:
        await wait_for(lambda: len(committed) == 4, what="the four good messages")
        [letter] = await read_topic(kafka_bootstrap, f"{topic_prefix}shop.group.dlq", count=1)
        await asyncio.sleep(0.3)
    assert committed == ["a", "b", "d", "e"]
    assert json.loads(letter.value)["note"] == "reject"
    assert await _total(database, "g") == 27
    # the handler of a message before the failing one may run again (its first run was
    # rolled back); the failing one ran once: a permanent failure is not retried
    assert runs.count("reject") == 1
    assert set(runs) == {"a", "b", "reject", "d", "e"}


async def test_a_batched_transaction_inserts_its_messages_at_the_end_in_one_statement(
    make_bus, database: Database
) -> None:
    bus = make_bus()
    outbox = Outbox(database)
    statements: list[str] = []

    def log(record: Any) -> None:
        statements.append(record.query)

    async with database.pool.acquire() as tx:
        tx.add_query_logger(log)
        async with tx.transaction():
            async with outbox.batched(tx):
                await outbox.add(tx, bus.message(ORDERS, order("b-1")))
                await outbox.add(
                    tx, bus.message(ORDERS, order("b-2")), bus.message(ORDERS, order("b-3"))
                )
                # collected, not written yet
                assert await tx.fetchval("SELECT count(*) FROM outbox") == 0
            assert await tx.fetchval("SELECT count(*) FROM outbox") == 3
        tx.remove_query_logger(log)
    assert sum("INSERT INTO outbox" in sql for sql in statements) == 1
    keys = [
        json.loads(value)["order_id"]
        for value in await database.pool.fetchval("SELECT array_agg(value ORDER BY id) FROM outbox")
    ]
    assert keys == ["b-1", "b-2", "b-3"]


async def test_a_batched_transaction_that_fails_inserts_nothing_and_the_next_one_works(
    make_bus, database: Database
) -> None:
    bus = make_bus()
    outbox = Outbox(database)
    async with database.pool.acquire() as tx:

        async def change_then_fail() -> None:
            async with tx.transaction(), outbox.batched(tx):
                await outbox.add(tx, bus.message(ORDERS, order("f-1")))
                raise RuleViolation("the state change is refused")

        with pytest.raises(RuleViolation):
            await change_then_fail()
        async with tx.transaction(), outbox.batched(tx):
            await outbox.add(tx, bus.message(ORDERS, order("f-2")))
    rows = await database.pool.fetch("SELECT value FROM outbox")
    assert [json.loads(row["value"])["order_id"] for row in rows] == ["f-2"]


async def test_collecting_refuses_outside_a_transaction_and_twice_for_one(
    make_bus, database: Database
) -> None:
    outbox = Outbox(database)
    async with database.pool.acquire() as conn:
        with pytest.raises(RuntimeError, match="inside the transaction"):
            async with outbox.collecting(conn):
                pass
        async with conn.transaction(), outbox.collecting(conn):
            with pytest.raises(RuntimeError, match="already collecting"):
                async with outbox.batched(conn):
                    pass
