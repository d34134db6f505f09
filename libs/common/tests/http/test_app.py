"""create_http_app over a real uvicorn server on 127.0.0.1:0, driven with httpx."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, StatusCode, TraceFlags
from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel

from mainstay_common.errors import DependencyUnavailable, NotFound, RetryableError
from mainstay_common.http import HttpServer, ReadinessCheck, create_http_app

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from fastapi import FastAPI


@dataclass
class Service:
    """A toy service whose readiness and failures the tests steer."""

    spans: InMemorySpanExporter
    registry: CollectorRegistry
    widgets: Counter
    broker_error: Exception | None = None
    db_hangs: bool = False
    db_calls: list[str] = field(default_factory=list)
    client: httpx.AsyncClient = field(init=False)


class Thing(BaseModel):
    name: str
    count: int


def _build(service: Service, tracer_provider: TracerProvider) -> FastAPI:
    async def broker() -> None:
        if service.broker_error is not None:
            raise service.broker_error

    async def database() -> bool:
        service.db_calls.append("db")
        if service.db_hangs:
            await asyncio.sleep(30)
        return True

    app = create_http_app(
        title="toy",
        version="1.0",
        readiness=[broker, ReadinessCheck("postgres", database, timeout_s=0.2)],
        metrics_registry=service.registry,
        tracer_provider=tracer_provider,
    )

    @app.get("/items/{item_id}")
    async def get_item(item_id: str) -> dict[str, str]:
        raise NotFound(f"item {item_id} does not exist")

    @app.post("/widgets")
    async def make_widget() -> dict[str, int]:
        service.widgets.inc()
        return {"made": 1}

    @app.get("/busy")
    async def busy() -> None:
        raise RetryableError("the ledger is catching up", retry_after=2.5)

    @app.get("/boom")
    async def boom() -> None:
        raise ValueError("postgres://admin:hunter2@db/ledger refused")

    @app.post("/things")
    async def things(thing: Thing, limit: int = 10) -> dict[str, int]:
        return {"count": thing.count, "limit": limit}

    return app


@pytest.fixture(scope="module")
async def _service() -> AsyncIterator[Service]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    registry = CollectorRegistry()
    widgets = Counter("toy_widgets", "Widgets made.", registry=registry)
    service = Service(spans=spans, registry=registry, widgets=widgets)
    async with (
        HttpServer(_build(service, tracer_provider)) as server,
        httpx.AsyncClient(base_url=server.url, timeout=5) as client,
    ):
        service.client = client
        yield service
    tracer_provider.shutdown()


@pytest.fixture
def service(_service: Service) -> Service:
    _service.broker_error, _service.db_hangs = None, False
    _service.spans.clear()
    return _service


async def test_healthz_is_always_ok(service: Service) -> None:
    service.broker_error = DependencyUnavailable("broker unreachable")

    response = await service.client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_is_ok_when_every_check_passes(service: Service) -> None:
    response = await service.client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "passing": ["broker", "postgres"], "failing": []}


async def test_readyz_names_each_failing_check_and_why(service: Service) -> None:
    service.broker_error = DependencyUnavailable("broker unreachable at 127.0.0.1:19092")
    service.db_hangs = True

    response = await service.client.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "passing": [],
        "failing": [
            {"name": "broker", "reason": "broker unreachable at 127.0.0.1:19092"},
            {"name": "postgres", "reason": "timed out after 0.2s"},
        ],
    }


async def test_readyz_reports_unexpected_exceptions_by_type(service: Service) -> None:
    service.broker_error = ConnectionRefusedError("connection refused")

    body = (await service.client.get("/readyz")).json()

    assert body["failing"] == [
        {"name": "broker", "reason": "ConnectionRefusedError: connection refused"}
    ]


async def test_metrics_exposes_the_registry_and_request_counts(service: Service) -> None:
    for _ in range(3):
        assert (await service.client.post("/widgets")).status_code == 200
    await service.client.get("/items/42")

    response = await service.client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "toy_widgets_total 3.0" in text
    assert 'mainstay_http_requests_total{method="POST",route="/widgets",status="200"} 3.0' in text
    assert 'route="/items/{item_id}",status="404"' in text


async def test_a_mainstay_error_becomes_its_status_and_shape(service: Service) -> None:
    response = await service.client.get("/items/42")

    assert response.status_code == 404
    assert response.json() == {"error": {"type": "NotFound", "message": "item 42 does not exist"}}


async def test_a_retryable_error_carries_retry_after(service: Service) -> None:
    response = await service.client.get("/busy")

    assert response.status_code == 503
    assert response.headers["retry-after"] == "3"
    assert response.json()["error"] == {
        "type": "RetryableError",
        "message": "the ledger is catching up",
    }


async def test_an_unexpected_error_is_a_bare_500_logged_with_its_trace(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="mainstay_common.http"):
        response = await service.client.get("/boom")

    assert response.status_code == 500
    assert response.json() == {"error": {"type": "Internal", "message": "internal error"}}
    assert "hunter2" not in response.text
    (record,) = [r for r in caplog.records if r.name.startswith("mainstay_common.http")]
    assert record.exc_info is not None
    assert "GET /boom" in record.getMessage()
    (span,) = [
        s
        for s in service.spans.get_finished_spans()
        if (s.attributes or {}).get("url.path") == "/boom"
    ]
    assert record.__dict__["trace_id"] == format(span.context.trace_id, "032x")
    assert span.status.status_code == StatusCode.ERROR


async def test_a_validation_error_names_the_fields(service: Service) -> None:
    response = await service.client.post("/things?limit=many", json={"count": "x"})

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "InvalidArgument"
    fields = {item["field"] for item in error["fields"]}
    assert fields == {"body.name", "body.count", "query.limit"}
    assert "body.name: Field required" in error["message"]


async def test_an_unknown_route_has_the_same_shape(service: Service) -> None:
    response = await service.client.get("/nowhere")

    assert response.status_code == 404
    assert response.json() == {
        "error": {"type": "NotFound", "message": "no route matches GET /nowhere"}
    }


async def test_probes_are_not_traced_but_routes_are(service: Service) -> None:
    await service.client.get("/healthz")
    await service.client.get("/metrics")
    await service.client.post("/widgets")

    paths = [(s.attributes or {}).get("url.path") for s in service.spans.get_finished_spans()]
    assert paths == ["/widgets"]


async def test_an_incoming_traceparent_continues_the_callers_trace(service: Service) -> None:
    caller = SpanContext(
        trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736,
        span_id=0x00F067AA0BA902B7,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    headers = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}

    # The caller's span is also current, so an instrumented httpx (once the OTel
    # globals are set in this process) continues the same trace instead of a new one.
    with trace.use_span(NonRecordingSpan(caller)):
        await service.client.post("/widgets", headers=headers)

    (span,) = service.spans.get_finished_spans()
    assert span.context.trace_id == caller.trace_id
    assert span.parent is not None
    assert span.parent.is_remote


def test_duplicate_readiness_names_are_refused() -> None:
    async def check() -> None:
        return None

    with pytest.raises(ValueError, match="unique"):
        create_http_app(
            title="t",
            version="0",
            readiness=[check, ReadinessCheck("check", check)],
            metrics_registry=CollectorRegistry(),
        )
