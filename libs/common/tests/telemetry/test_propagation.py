"""Trace context survives a trip through Kafka headers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider

from mainstay_common.telemetry import extract_trace_context, inject_trace_headers

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def tracer() -> Iterator[trace.Tracer]:
    provider = TracerProvider()
    yield provider.get_tracer("test")
    provider.shutdown()


def test_inject_then_extract_keeps_the_trace(tracer: trace.Tracer) -> None:
    with tracer.start_as_current_span("publish") as producer:
        headers = inject_trace_headers()

    assert [name for name, _ in headers] == ["traceparent"]
    assert all(isinstance(value, bytes) for _, value in headers)

    with tracer.start_as_current_span(
        "consume", context=extract_trace_context(headers)
    ) as consumer:
        pass

    assert isinstance(consumer, ReadableSpan)
    assert consumer.get_span_context().trace_id == producer.get_span_context().trace_id
    assert consumer.parent is not None
    assert consumer.parent.span_id == producer.get_span_context().span_id
    assert consumer.parent.is_remote


def test_tracestate_travels_too(tracer: trace.Tracer) -> None:
    incoming = [
        ("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ("tracestate", b"vendor=abc,other=1"),
    ]

    with tracer.start_as_current_span("hop", context=extract_trace_context(incoming)):
        outgoing = dict(inject_trace_headers())

    assert outgoing["traceparent"].startswith(b"00-4bf92f3577b34da6a3ce929d0e0e4736-")
    assert outgoing["tracestate"] == b"vendor=abc,other=1"


def test_no_span_means_no_headers() -> None:
    assert inject_trace_headers() == []


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [("traceparent", b"garbage")],
        [("traceparent", b"\xff\xfe")],
        [("traceparent", None)],
        [("ce_id", b"abc")],
    ],
)
def test_missing_or_bad_headers_give_an_empty_context(
    headers: list[tuple[str, bytes | None]],
) -> None:
    context = extract_trace_context(headers)

    assert not trace.get_current_span(context).get_span_context().is_valid


def test_header_names_are_case_insensitive_and_the_first_wins() -> None:
    first = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    second = b"00-11111111111111111111111111111111-2222222222222222-01"

    context = extract_trace_context([("TraceParent", first), ("traceparent", second)])

    span_context = trace.get_current_span(context).get_span_context()
    assert format(span_context.trace_id, "032x") == "4bf92f3577b34da6a3ce929d0e0e4736"
