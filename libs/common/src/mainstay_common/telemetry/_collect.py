"""Every span of the process in one place: for a process hosting several services.

Each service builds its own tracer provider (see :mod:`._setup`), so a process
that runs several services in-process (the end-to-end tests, a demo) has
several providers, and spans made through the OTel globals (the asyncpg and
httpx instrumentations) go to yet another one. Every provider
:func:`~mainstay_common.telemetry.setup_telemetry` builds forwards its spans to
the processors registered with :func:`collect_spans`, so one exporter sees a
task's spans across all of them. With nothing registered, forwarding costs an
empty loop per span.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING

from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

if TYPE_CHECKING:
    from collections.abc import Iterator

    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import ReadableSpan, Span

__all__ = ["PROCESS_SPANS", "collect_spans"]


class _ProcessSpans(SpanProcessor):
    """Forwards to the processors registered at the moment; added to every provider once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._targets: tuple[SpanProcessor, ...] = ()

    def add(self, processor: SpanProcessor) -> None:
        with self._lock:
            self._targets = (*self._targets, processor)

    def remove(self, processor: SpanProcessor) -> None:
        with self._lock:
            self._targets = tuple(p for p in self._targets if p is not processor)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        for target in self._targets:
            target.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        for target in self._targets:
            target.on_end(span)

    def shutdown(self) -> None:
        """Nothing: the registered processors outlive any one provider."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return all(target.force_flush(timeout_millis) for target in self._targets)


PROCESS_SPANS = _ProcessSpans()
"""The forwarder every provider built by ``setup_telemetry`` carries."""


@contextlib.contextmanager
def collect_spans() -> Iterator[InMemorySpanExporter]:
    """Keep every span of the process that ends inside the block, in memory.

    >>> with collect_spans() as spans:
    ...     ...  # run services, a task
    >>> finished = spans.get_finished_spans()
    """
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    PROCESS_SPANS.add(processor)
    try:
        yield exporter
    finally:
        PROCESS_SPANS.remove(processor)
