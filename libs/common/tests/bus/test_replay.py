"""A replayed dead letter reaches only the consumer group that dead-lettered it."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest
from prometheus_client import CollectorRegistry

from mainstay_common.db import LIBRARY_MIGRATIONS, Database
from mainstay_common.settings import PostgresSettings
from mainstay_common.telemetry.metrics import BusMetrics
from mainstay_contracts import Header

from .conftest import ORDERS, Order, order, produce_raw, valid_headers, wait_for

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from mainstay_common.bus import Bus, Event
    from mainstay_common.db import Connection

pytestmark = pytest.mark.real


@pytest.fixture
async def database(postgres_dsn: str, pg_schema: str) -> AsyncIterator[Database]:
    async with Database(PostgresSettings(dsn=postgres_dsn), schema=pg_schema) as db:
        await db.migrate(LIBRARY_MIGRATIONS)
        yield db


def _two_groups(
    make_bus: Callable[..., Bus], database: Database, registry: CollectorRegistry
) -> tuple[Bus, dict[str, list[str]]]:
    """One plain and one transactional group on the same topic; what each handled."""
    bus = make_bus(metrics=BusMetrics(registry))
    handled: dict[str, list[str]] = {"plain": [], "inboxed": []}

    @bus.subscriber(ORDERS, handler="plain")
    async def plain(event: Event[Order]) -> None:
        handled["plain"].append(f"{event.payload.order_id}:{event.payload.note}")

    @bus.transactional_subscriber(ORDERS, handler="inboxed", database=database)
    async def inboxed(event: Event[Order], tx: Connection) -> None:
        handled["inboxed"].append(f"{event.payload.order_id}:{event.payload.note}")

    return bus, handled


async def _replay(kafka_bootstrap: str, topic_prefix: str, order_id: str, group: str) -> None:
    headers = [
        *valid_headers(uuid.uuid4().hex),
        (Header.REPLAY_OF, b"the-old-ce-id"),
        (Header.REPLAY_FOR, f"{topic_prefix}shop.{group}".encode()),
    ]
    await produce_raw(
        kafka_bootstrap,
        f"{topic_prefix}{ORDERS.name}",
        order(order_id, note="replay").model_dump_json().encode(),
        key=order_id.encode(),
        headers=headers,
    )


def _skipped(registry: CollectorRegistry, topic_prefix: str, group: str) -> float:
    value = registry.get_sample_value(
        "mainstay_messages_consumed_total",
        {
            "group": f"{topic_prefix}shop.{group}",
            "topic": f"{topic_prefix}{ORDERS.name}",
            "outcome": "skipped",
        },
    )
    return value or 0.0


async def test_a_replay_is_handled_by_its_group_and_skipped_by_the_others(
    make_bus: Callable[..., Bus], database: Database, kafka_bootstrap: str, topic_prefix: str
) -> None:
    registry = CollectorRegistry()
    bus, handled = _two_groups(make_bus, database, registry)
    async with bus:
        await _replay(kafka_bootstrap, topic_prefix, "for-plain", "plain")
        await _replay(kafka_bootstrap, topic_prefix, "for-inboxed", "inboxed")
        await _replay(kafka_bootstrap, topic_prefix, "for-nobody-here", "elsewhere")
        # a group sees one key's messages in order, so once it handled the marker
        # after each replay it has passed every replay, handled or skipped
        keys = ("for-plain", "for-inboxed", "for-nobody-here")
        for key in keys:
            await bus.publish(ORDERS, order(key, note="marker"))
        await wait_for(
            lambda: all(f"{k}:marker" in handled[g] for g in handled for k in keys),
            what="both groups to reach every marker",
        )
    assert sorted(handled["plain"]) == sorted(["for-plain:replay", *(f"{k}:marker" for k in keys)])
    assert sorted(handled["inboxed"]) == sorted(
        ["for-inboxed:replay", *(f"{k}:marker" for k in keys)]
    )
    assert _skipped(registry, topic_prefix, "plain") == 2
    assert _skipped(registry, topic_prefix, "inboxed") == 2

    # the skips were acknowledged: the groups resume after them, not before
    registry = CollectorRegistry()
    again, handled = _two_groups(make_bus, database, registry)
    async with again:
        await again.publish(ORDERS, order("after"))
        await wait_for(
            lambda: all("after:" in handled[g] for g in handled),
            what="both groups to handle the message after the replays",
        )
    assert handled == {"plain": ["after:"], "inboxed": ["after:"]}
    assert _skipped(registry, topic_prefix, "plain") == 0
    assert _skipped(registry, topic_prefix, "inboxed") == 0
