"""Log lines are JSON objects that carry the trace of the span they were written in."""

from __future__ import annotations

import io
import json
import logging
from typing import TYPE_CHECKING

import pytest
from opentelemetry.sdk.trace import TracerProvider

from mainstay_common.telemetry import configure_logging

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    buffer = io.StringIO()
    yield buffer
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def tracer_provider() -> Iterator[TracerProvider]:
    provider = TracerProvider()
    yield provider
    provider.shutdown()


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_log_line_in_a_span_is_json_with_its_trace_id(
    stream: io.StringIO, tracer_provider: TracerProvider
) -> None:
    configure_logging("INFO", json=True, service="memory", instance="memory-1", stream=stream)
    tracer = tracer_provider.get_tracer("test")

    with tracer.start_as_current_span("handle") as span:
        logging.getLogger("mainstay.test").info("stored %d records", 3, extra={"task_id": "t-1"})
    context = span.get_span_context()

    (line,) = _lines(stream)
    assert line["message"] == "stored 3 records"
    assert line["level"] == "INFO"
    assert line["logger"] == "mainstay.test"
    assert line["service"] == "memory"
    assert line["instance"] == "memory-1"
    assert line["task_id"] == "t-1"
    assert line["trace_id"] == format(context.trace_id, "032x")
    assert line["span_id"] == format(context.span_id, "016x")
    assert str(line["time"]).endswith("+00:00")


def test_a_log_line_outside_a_span_has_no_trace_id(stream: io.StringIO) -> None:
    configure_logging("INFO", json=True, service="memory", instance="m-1", stream=stream)

    logging.getLogger("mainstay.test").warning("no span here")

    (line,) = _lines(stream)
    assert "trace_id" not in line
    assert line["level"] == "WARNING"


def test_exceptions_are_kept_in_the_json(stream: io.StringIO) -> None:
    configure_logging("INFO", json=True, service="memory", instance="m-1", stream=stream)

    try:
        raise RuntimeError("disk full")
    except RuntimeError:
        logging.getLogger("mainstay.test").exception("write failed")

    (line,) = _lines(stream)
    assert "RuntimeError: disk full" in str(line["exc_info"])


def test_text_format_keeps_the_same_fields(
    stream: io.StringIO, tracer_provider: TracerProvider
) -> None:
    configure_logging("DEBUG", json=False, service="ledger", instance="l-1", stream=stream)

    logging.getLogger("mainstay.test").debug("outside")
    with tracer_provider.get_tracer("t").start_as_current_span("s") as span:
        logging.getLogger("mainstay.test").info("inside")

    outside, inside = stream.getvalue().splitlines()
    assert "[ledger/l-1 trace=- span=-] outside" in outside
    assert f"trace={format(span.get_span_context().trace_id, '032x')}" in inside


def test_reconfiguring_replaces_only_its_own_handler(stream: io.StringIO) -> None:
    root = logging.getLogger()
    foreign = logging.NullHandler()
    root.addHandler(foreign)
    try:
        first = configure_logging("INFO", json=True, service="a", instance="1", stream=stream)
        second = configure_logging("WARNING", json=True, service="a", instance="1", stream=stream)

        assert first not in root.handlers
        assert second in root.handlers
        assert foreign in root.handlers
        assert root.level == logging.WARNING
    finally:
        root.removeHandler(foreign)
