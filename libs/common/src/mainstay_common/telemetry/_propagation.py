"""W3C trace context across Kafka: ``traceparent``/``tracestate`` message headers.

Kafka headers are ``(str, bytes)`` pairs, unlike the ``str`` carriers OTel's
propagators expect, hence these adapters. The W3C propagator is used directly
rather than the globally configured one: the envelope contract names exactly
``traceparent`` and ``tracestate``, whatever ``OTEL_PROPAGATORS`` says.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from collections.abc import Sequence

    from opentelemetry.context import Context

__all__ = ["TRACE_HEADERS", "current_trace_ids", "extract_trace_context", "inject_trace_headers"]

TRACE_HEADERS = ("traceparent", "tracestate")

_propagator = TraceContextTextMapPropagator()


def inject_trace_headers(context: Context | None = None) -> list[tuple[str, bytes]]:
    """The trace headers for a message produced in ``context`` (default: the current one).

    Empty when there is no valid span, so an untraced producer adds nothing.
    """
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=context)
    return [(name, carrier[name].encode("ascii")) for name in TRACE_HEADERS if name in carrier]


def extract_trace_context(
    headers: Sequence[tuple[str, bytes | None]], context: Context | None = None
) -> Context:
    """A context whose parent is the producer's span, for a consumer to start its span in.

    Header names are matched case-insensitively; headers that are absent,
    duplicated (first wins) or not ASCII are ignored, which yields a context
    with no remote parent rather than an error: a bad header must never fail a
    message.
    """
    carrier: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        if key not in TRACE_HEADERS or key in carrier or value is None:
            continue
        try:
            carrier[key] = value.decode("ascii")
        except UnicodeDecodeError:
            continue
    return _propagator.extract(carrier, context=context)


def current_trace_ids() -> tuple[str | None, str | None]:
    """The current span's trace id (32 hex) and span id (16 hex), or ``None``s."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None, None
    return format(span_context.trace_id, "032x"), format(span_context.span_id, "016x")
