"""The task id reaches every span started in a task's context, from any provider."""

from __future__ import annotations

from opentelemetry import context as otel_context
from opentelemetry import propagate

from mainstay_common.settings import TelemetrySettings
from mainstay_common.telemetry import (
    TASK_ID_ATTRIBUTE,
    collect_spans,
    setup_telemetry,
    task_context,
    task_id_of,
)


def test_spans_started_in_a_task_context_carry_its_id_across_services() -> None:
    first = setup_telemetry(
        "first", TelemetrySettings(), instance_id="a", instrument_libraries=False
    )
    second = setup_telemetry(
        "second", TelemetrySettings(), instance_id="b", instrument_libraries=False
    )
    with collect_spans() as spans:
        token = otel_context.attach(task_context("task-7"))
        try:
            with first.tracer("t").start_as_current_span("outer"):
                carrier: dict[str, str] = {}
                propagate.inject(carrier)  # what an instrumented HTTP or gRPC client sends
        finally:
            otel_context.detach(token)
        remote = propagate.extract(carrier)  # what the server side continues in
        assert task_id_of(remote) == "task-7"
        token = otel_context.attach(remote)
        try:
            with second.tracer("t").start_as_current_span("inner"):
                pass
        finally:
            otel_context.detach(token)
        with second.tracer("t").start_as_current_span("unrelated"):
            pass
    by_name = {span.name: span for span in spans.get_finished_spans()}
    assert set(by_name) == {"outer", "inner", "unrelated"}
    outer, inner = by_name["outer"], by_name["inner"]
    assert outer.attributes is not None
    assert inner.attributes is not None
    assert outer.attributes[TASK_ID_ATTRIBUTE] == inner.attributes[TASK_ID_ATTRIBUTE] == "task-7"
    assert TASK_ID_ATTRIBUTE not in (by_name["unrelated"].attributes or {})
    assert inner.parent is not None
    assert outer.context is not None
    assert inner.parent.span_id == outer.context.span_id
    assert inner.resource.attributes["service.name"] == "second"
    first.shutdown()
    second.shutdown()


def test_collecting_stops_at_the_end_of_the_block() -> None:
    telemetry = setup_telemetry(
        "solo", TelemetrySettings(), instance_id="a", instrument_libraries=False
    )
    with collect_spans() as spans:
        pass
    with telemetry.tracer("t").start_as_current_span("after"):
        pass
    assert spans.get_finished_spans() == ()
    telemetry.shutdown()


def test_an_empty_task_id_leaves_the_context_alone() -> None:
    current = otel_context.get_current()
    assert task_context("", current) is current
    assert task_id_of(current) is None
