"""The standard Prometheus metric families every Mainstay service exports.

Families are registered once per ``CollectorRegistry`` and shared: building
:class:`BusMetrics` twice on one registry (the bus and the outbox relay each
want one) returns facades over the same families instead of failing with a
duplicate-timeseries error, while separate registries (one per service in a
test process) stay independent.

Label values must stay bounded: a topic, a group, an outcome, a route template,
never an id.
"""

from __future__ import annotations

import contextlib
import enum
import threading
import time
import weakref
from typing import TYPE_CHECKING, TypeVar

from prometheus_client import Counter, Gauge, Histogram

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from prometheus_client import CollectorRegistry

__all__ = ["HANDLER_BUCKETS", "BusMetrics", "ConsumeOutcome", "HttpMetrics"]

HANDLER_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Handler latency buckets, seconds: model calls and tool calls run long, so the top is 60 s."""

_T = TypeVar("_T")
_families: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, object]] = (
    weakref.WeakKeyDictionary()
)
_lock = threading.Lock()


def _family(registry: CollectorRegistry, name: str, create: Callable[[], _T]) -> _T:
    with _lock:
        families = _families.setdefault(registry, {})
        if name not in families:
            families[name] = create()
        return families[name]  # type: ignore[return-value]  # each name is created with one type


class ConsumeOutcome(enum.StrEnum):
    """What became of a consumed message (the ``outcome`` label).

    The bus may record other values, but these are the ones dashboards expect.
    """

    OK = "ok"
    DUPLICATE = "duplicate"
    RETRIED = "retried"
    DEAD_LETTERED = "dead_lettered"
    SKIPPED = "skipped"
    """A replayed dead letter meant for another consumer group of the topic."""


class BusMetrics:
    """Throughput, latency, retries, dead letters and outbox backlog of the bus."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.consumed = _family(
            registry,
            "mainstay_messages_consumed_total",
            lambda: Counter(
                "mainstay_messages_consumed",
                "Messages a consumer group finished with, by outcome.",
                ["group", "topic", "outcome"],
                registry=registry,
            ),
        )
        self.handler_seconds = _family(
            registry,
            "mainstay_handler_seconds",
            lambda: Histogram(
                "mainstay_handler_seconds",
                "Time a handler took for one message.",
                ["group", "topic"],
                buckets=HANDLER_BUCKETS,
                registry=registry,
            ),
        )
        self.retried = _family(
            registry,
            "mainstay_messages_retried_total",
            lambda: Counter(
                "mainstay_messages_retried",
                "Messages sent to a retry tier.",
                ["group", "tier"],
                registry=registry,
            ),
        )
        self.dead_lettered = _family(
            registry,
            "mainstay_messages_dead_lettered_total",
            lambda: Counter(
                "mainstay_messages_dead_lettered",
                "Messages sent to a dead-letter topic, by error class.",
                ["group", "error_class"],
                registry=registry,
            ),
        )
        self.published = _family(
            registry,
            "mainstay_messages_published_total",
            lambda: Counter(
                "mainstay_messages_published",
                "Messages produced, by topic.",
                ["topic"],
                registry=registry,
            ),
        )
        self.outbox_pending = _family(
            registry,
            "mainstay_outbox_pending",
            lambda: Gauge(
                "mainstay_outbox_pending",
                "Outbox rows committed but not yet published.",
                registry=registry,
            ),
        )
        self.consumer_lag = _family(
            registry,
            "mainstay_consumer_lag",
            lambda: Gauge(
                "mainstay_consumer_lag",
                "Messages between a group's committed offset and the partition end.",
                ["group", "topic", "partition"],
                registry=registry,
            ),
        )

    def message_consumed(self, *, group: str, topic: str, outcome: str) -> None:
        """Count a message the group is done with (see :class:`ConsumeOutcome`)."""
        self.consumed.labels(group=group, topic=topic, outcome=str(outcome)).inc()

    def handler_finished(self, *, group: str, topic: str, seconds: float) -> None:
        """Record how long one handler call took, successful or not."""
        self.handler_seconds.labels(group=group, topic=topic).observe(seconds)

    @contextlib.contextmanager
    def time_handler(self, *, group: str, topic: str) -> Iterator[None]:
        """Record the duration of the ``with`` block as one handler call, even if it raises."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.handler_finished(group=group, topic=topic, seconds=time.perf_counter() - started)

    def message_retried(self, *, group: str, tier: int | str) -> None:
        """Count a message routed to retry tier ``tier`` (1-based)."""
        self.retried.labels(group=group, tier=str(tier)).inc()

    def message_dead_lettered(self, *, group: str, error_class: str) -> None:
        """Count a dead letter; ``error_class`` is its ``mainstay-error-class`` header."""
        self.dead_lettered.labels(group=group, error_class=error_class).inc()

    def message_published(self, *, topic: str, count: int = 1) -> None:
        """Count ``count`` messages produced to ``topic``."""
        self.published.labels(topic=topic).inc(count)

    def set_outbox_pending(self, rows: int) -> None:
        """Set the outbox backlog (the relay reads it each poll)."""
        self.outbox_pending.set(rows)

    def set_consumer_lag(self, *, group: str, topic: str, partition: int, lag: int) -> None:
        """Set one partition's consumer lag."""
        self.consumer_lag.labels(group=group, topic=topic, partition=str(partition)).set(lag)


class HttpMetrics:
    """Requests and latency of a service's HTTP port, by route template."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = _family(
            registry,
            "mainstay_http_requests_total",
            lambda: Counter(
                "mainstay_http_requests",
                "HTTP requests served, by route template and status code.",
                ["method", "route", "status"],
                registry=registry,
            ),
        )
        self.seconds = _family(
            registry,
            "mainstay_http_request_seconds",
            lambda: Histogram(
                "mainstay_http_request_seconds",
                "Time to serve an HTTP request.",
                ["method", "route"],
                buckets=HANDLER_BUCKETS,
                registry=registry,
            ),
        )

    def request_served(self, *, method: str, route: str, status: int, seconds: float) -> None:
        """Record one finished request."""
        self.requests.labels(method=method, route=route, status=str(status)).inc()
        self.seconds.labels(method=method, route=route).observe(seconds)
