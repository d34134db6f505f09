"""Per-service telemetry: tracer and meter providers plus the Prometheus registry.

OTel's global providers can be set only once per process, yet a test process
builds many services (and an end-to-end test may run several in one process).
So a :class:`Telemetry` owns its providers and registry, and callers pass them
explicitly (``create_http_app(tracer_provider=...)``, gRPC interceptors); the
*first* setup in a process also installs its providers as the OTel globals,
with the httpx and asyncpg instrumentations, so code that uses
``trace.get_tracer`` works in a deployed service, which runs one setup.

Spans are always recorded, so trace ids exist for logs and propagation; they
are exported (OTLP/gRPC, batched) only when ``otlp_endpoint`` is set. Every
provider also stamps each span with its task id (:mod:`._task`) and forwards
its spans to the process's collectors (:mod:`._collect`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Self

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from mainstay_common.telemetry._collect import PROCESS_SPANS
from mainstay_common.telemetry._task import TaskIdSpanProcessor

if TYPE_CHECKING:
    from mainstay_common.settings import TelemetrySettings

__all__ = ["Telemetry", "setup_telemetry"]

logger = logging.getLogger(__name__)

_EXPORT_TIMEOUT_S = 10.0
_globals_lock = threading.Lock()
_globals_owner: list[Telemetry] = []  # at most one: the setup whose providers are global


@dataclass(eq=False)
class Telemetry:
    """What :func:`setup_telemetry` built; ``async with`` it, or call :meth:`shutdown`."""

    service_name: str
    instance_id: str
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    registry: CollectorRegistry
    is_global: bool = False
    _closed: bool = field(default=False, repr=False)

    def tracer(self, name: str) -> trace.Tracer:
        """A tracer of this service's provider (prefer it over ``trace.get_tracer``)."""
        return self.tracer_provider.get_tracer(name)

    def meter(self, name: str) -> metrics.Meter:
        """A meter of this service's provider."""
        return self.meter_provider.get_meter(name)

    def shutdown(self) -> None:
        """Flush and stop the exporters. Blocking (bounded by the export timeout); idempotent."""
        if self._closed:
            return
        self._closed = True
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown(timeout_millis=_EXPORT_TIMEOUT_S * 1000)

    async def aclose(self) -> None:
        """:meth:`shutdown` off the event loop, since flushing waits on the network."""
        await asyncio.to_thread(self.shutdown)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()


def _exporters(endpoint: str) -> tuple[BatchSpanProcessor, MetricReader]:
    # Imported here so a service without a collector never loads the gRPC exporter.
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (  # noqa: PLC0415
        OTLPMetricExporter,
    )
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )

    insecure = not endpoint.startswith("https://")
    spans = BatchSpanProcessor(
        OTLPSpanExporter(endpoint=endpoint, insecure=insecure, timeout=_EXPORT_TIMEOUT_S)
    )
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=endpoint, insecure=insecure, timeout=_EXPORT_TIMEOUT_S)
    )
    return spans, reader


def _instrument_libraries(tracer_provider: TracerProvider, meter_provider: MeterProvider) -> None:
    # Process-wide monkeypatches: done once, with the first (the deployed) service's providers.
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor  # noqa: PLC0415
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor  # noqa: PLC0415

    options: dict[str, Any] = {"tracer_provider": tracer_provider, "meter_provider": meter_provider}
    HTTPXClientInstrumentor().instrument(**options)
    AsyncPGInstrumentor().instrument(**options)  # type: ignore[no-untyped-call]  # untyped upstream


def _install_globals(telemetry: Telemetry, *, instrument_libraries: bool) -> bool:
    with _globals_lock:
        if _globals_owner:
            return False
        _globals_owner.append(telemetry)
    trace.set_tracer_provider(telemetry.tracer_provider)
    metrics.set_meter_provider(telemetry.meter_provider)
    if instrument_libraries:
        _instrument_libraries(telemetry.tracer_provider, telemetry.meter_provider)
    return True


def setup_telemetry(
    service_name: str,
    settings: TelemetrySettings,
    *,
    instance_id: str,
    instrument_libraries: bool = True,
) -> Telemetry:
    """Build the telemetry of one service instance (see the module docstring).

    ``registry`` comes with the process, platform and GC collectors, so
    ``/metrics`` shows memory, CPU and file descriptors without extra work.
    """
    resource = Resource.create(
        {
            "service.name": service_name,
            "service.namespace": "mainstay",
            "service.instance.id": instance_id,
        }
    )
    tracer_provider = TracerProvider(resource=resource)
    # First, so the exporters and collectors see the task id it sets.
    tracer_provider.add_span_processor(TaskIdSpanProcessor())
    tracer_provider.add_span_processor(PROCESS_SPANS)
    readers: list[MetricReader] = []
    if settings.otlp_endpoint:
        spans, reader = _exporters(settings.otlp_endpoint)
        tracer_provider.add_span_processor(spans)
        readers.append(reader)
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)

    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)

    telemetry = Telemetry(
        service_name=service_name,
        instance_id=instance_id,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        registry=registry,
    )
    telemetry.is_global = _install_globals(telemetry, instrument_libraries=instrument_libraries)
    if not telemetry.is_global:
        logger.debug("OTel globals already set; %s keeps its providers local", service_name)
    return telemetry
