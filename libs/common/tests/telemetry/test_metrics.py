"""The bus's metric families as a Prometheus scrape shows them."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from mainstay_common.telemetry.metrics import BusMetrics, ConsumeOutcome, HttpMetrics


def _scrape(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


def test_every_bus_family_shows_up_in_the_exposition() -> None:
    registry = CollectorRegistry()
    metrics = BusMetrics(registry)

    metrics.message_consumed(
        group="memory.writer", topic="memory.cmd.write.v1", outcome=ConsumeOutcome.OK
    )
    metrics.message_consumed(group="memory.writer", topic="memory.cmd.write.v1", outcome="ok")
    metrics.handler_finished(group="memory.writer", topic="memory.cmd.write.v1", seconds=0.02)
    metrics.message_retried(group="memory.writer", tier=2)
    metrics.message_dead_lettered(group="memory.writer", error_class="permanent")
    metrics.message_published(topic="memory.evt.memory.v1", count=3)
    metrics.set_outbox_pending(7)
    metrics.set_consumer_lag(
        group="memory.writer", topic="memory.cmd.write.v1", partition=0, lag=12
    )

    text = _scrape(registry)
    for line in [
        'mainstay_messages_consumed_total{group="memory.writer",outcome="ok",topic="memory.cmd.write.v1"} 2.0',
        'mainstay_handler_seconds_count{group="memory.writer",topic="memory.cmd.write.v1"} 1.0',
        'mainstay_handler_seconds_bucket{group="memory.writer",le="0.025",topic="memory.cmd.write.v1"} 1.0',
        'mainstay_messages_retried_total{group="memory.writer",tier="2"} 1.0',
        'mainstay_messages_dead_lettered_total{error_class="permanent",group="memory.writer"} 1.0',
        'mainstay_messages_published_total{topic="memory.evt.memory.v1"} 3.0',
        "mainstay_outbox_pending 7.0",
        'mainstay_consumer_lag{group="memory.writer",partition="0",topic="memory.cmd.write.v1"} 12.0',
    ]:
        assert line in text


def test_the_handler_timer_records_failures_too() -> None:
    registry = CollectorRegistry()
    metrics = BusMetrics(registry)

    with pytest.raises(RuntimeError), metrics.time_handler(group="g", topic="t"):
        raise RuntimeError("handler failed")

    assert 'mainstay_handler_seconds_count{group="g",topic="t"} 1.0' in _scrape(registry)


def test_two_facades_on_one_registry_share_the_families() -> None:
    registry = CollectorRegistry()
    BusMetrics(registry).message_published(topic="a.evt.b.v1")
    BusMetrics(registry).message_published(topic="a.evt.b.v1")
    HttpMetrics(registry)
    HttpMetrics(registry)

    assert 'mainstay_messages_published_total{topic="a.evt.b.v1"} 2.0' in _scrape(registry)


def test_registries_stay_independent() -> None:
    first, second = CollectorRegistry(), CollectorRegistry()
    BusMetrics(first).set_outbox_pending(5)
    BusMetrics(second)

    assert "mainstay_outbox_pending 5.0" in _scrape(first)
    assert "mainstay_outbox_pending 0.0" in _scrape(second)
