"""setup_telemetry can run many times in one process and always yields real trace ids."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc
from opentelemetry import trace
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from prometheus_client import generate_latest

from mainstay_common.settings import TelemetrySettings
from mainstay_common.telemetry import current_trace_ids, setup_telemetry

if TYPE_CHECKING:
    from mainstay_common.telemetry import Telemetry


def _span_ids(telemetry: Telemetry) -> tuple[str | None, str | None]:
    with telemetry.tracer("test").start_as_current_span("work"):
        return current_trace_ids()


async def test_without_an_endpoint_spans_exist_but_nothing_is_exported() -> None:
    async with setup_telemetry(
        "memory", TelemetrySettings(otlp_endpoint=None), instance_id="memory-1"
    ) as telemetry:
        trace_id, span_id = _span_ids(telemetry)

        assert trace_id is not None
        assert len(trace_id) == 32
        assert span_id is not None
        assert len(span_id) == 16
        resource = telemetry.tracer_provider.resource.attributes
        assert resource["service.name"] == "memory"
        assert resource["service.instance.id"] == "memory-1"
        assert "process_cpu_seconds_total" in generate_latest(telemetry.registry).decode()


async def test_setting_up_twice_keeps_each_service_apart() -> None:
    first = setup_telemetry("memory", TelemetrySettings(), instance_id="m-1")
    second = setup_telemetry("ledger", TelemetrySettings(), instance_id="l-1")
    try:
        assert not second.is_global  # the globals belong to the first setup in the process
        assert first.registry is not second.registry
        assert second.tracer_provider.resource.attributes["service.name"] == "ledger"
        assert _span_ids(first)[0] is not None
        assert _span_ids(second)[0] is not None
        assert not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    finally:
        await first.aclose()
        await second.aclose()
        second.shutdown()  # idempotent


class _Collector(
    trace_service_pb2_grpc.TraceServiceServicer, metrics_service_pb2_grpc.MetricsServiceServicer
):
    """The two OTLP/gRPC export services of a collector, recording what they receive."""

    def __init__(self) -> None:
        self.spans: list[Any] = []

    async def Export(self, request: Any, context: Any) -> Any:
        if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
            self.spans.extend(request.resource_spans)
            return trace_service_pb2.ExportTraceServiceResponse()
        return metrics_service_pb2.ExportMetricsServiceResponse()


async def test_with_an_endpoint_spans_reach_the_collector() -> None:
    collector = _Collector()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)  # type: ignore[no-untyped-call]
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(collector, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        settings = TelemetrySettings(otlp_endpoint=f"http://127.0.0.1:{port}")
        telemetry = setup_telemetry("tools-gateway", settings, instance_id="tg-1")
        trace_id, _ = _span_ids(telemetry)

        await telemetry.aclose()  # flushes the batch from a worker thread
    finally:
        await server.stop(grace=None)

    (resource_spans,) = collector.spans
    attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert attributes["service.name"] == "tools-gateway"
    (span,) = resource_spans.scope_spans[0].spans
    assert span.name == "work"
    assert span.trace_id.hex() == trace_id
