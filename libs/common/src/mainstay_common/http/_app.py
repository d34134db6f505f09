"""The HTTP face every service shares: probes, metrics, tracing and error mapping.

A service adds its own routes to the app :func:`create_http_app` returns, so
``/healthz``, ``/readyz``, ``/metrics``, request metrics, spans and the error
shape are the same across the mesh without any service repeating them.

Tracing uses FastAPI's native OpenTelemetry support with the service's own
providers rather than the contrib instrumentor: the native layer already
wraps the whole middleware stack, and the contrib one would only switch it off.
Probe and scrape requests get no spans; they would drown the real traffic.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mainstay_common.auth import attach_verifier
from mainstay_common.http._errors import install_error_handlers
from mainstay_common.http._limits import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_JSON_DEPTH,
    BodyLimitMiddleware,
)
from mainstay_common.http._readiness import as_check, run_checks
from mainstay_common.telemetry.metrics import HttpMetrics

if TYPE_CHECKING:
    from collections.abc import MutableMapping, Sequence

    from fastapi.telemetry import TelemetryConfig
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider
    from prometheus_client import CollectorRegistry
    from starlette.types import ASGIApp, Lifespan, Message, Receive, Scope, Send

    from mainstay_common.auth import TokenVerifier
    from mainstay_common.http._readiness import ReadinessProbe

__all__ = ["PROBE_PATHS", "create_http_app"]

PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

# Methods outside this set share one label value, so junk methods cannot grow the series count.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestMetricsMiddleware:
    """Counts and times requests by route template (never by raw path: ids would explode it)."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client sees if nothing is sent
        started = time.perf_counter()

        async def observing_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observing_send)
        finally:
            method = scope.get("method", "")
            route = getattr(scope.get("route"), "path", None) or "<unmatched>"
            self.metrics.request_served(
                method=method if method in _METHODS else "OTHER",
                route=route,
                status=status,
                seconds=time.perf_counter() - started,
            )


def _is_probe(scope: MutableMapping[str, Any]) -> bool:
    return scope.get("path") in PROBE_PATHS


def create_http_app(
    *,
    title: str,
    version: str,
    readiness: Sequence[ReadinessProbe] = (),
    metrics_registry: CollectorRegistry,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    token_verifier: TokenVerifier | None = None,
    readiness_timeout_s: float = 2.0,
    lifespan: Lifespan[FastAPI] | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH,
) -> FastAPI:
    """A FastAPI app with the Mainstay probes, metrics, tracing and error mapping.

    ``readiness`` checks run on every ``/readyz`` (see :mod:`._readiness`);
    ``metrics_registry`` is what ``/metrics`` exposes and where request metrics
    go. Without providers the OTel globals are used (no spans if none is set).
    ``token_verifier`` is attached for the ``require_principal`` dependency.
    Request bodies past ``max_body_bytes``, and JSON bodies that are not UTF-8 or
    nest deeper than ``max_json_depth``, are refused before any route runs.
    """
    checks = [as_check(probe) for probe in readiness]
    names = [check.name for check in checks]
    if len(set(names)) != len(names):
        raise ValueError(f"readiness check names must be unique: {names}")

    telemetry: TelemetryConfig = {
        "tracer_provider": tracer_provider,
        "meter_provider": meter_provider,
        # One server span per request; per-dependency spans are noise at mesh scale.
        "operation_spans": False,
        "exclude": _is_probe,
    }
    app = FastAPI(title=title, version=version, lifespan=lifespan, telemetry=telemetry)
    # Innermost of the three: its refusals go through the error and metrics middleware.
    app.add_middleware(
        BodyLimitMiddleware, max_body_bytes=max_body_bytes, max_json_depth=max_json_depth
    )
    install_error_handlers(app)
    # Added after the error middleware so it wraps it and sees the 500s it produces.
    app.add_middleware(RequestMetricsMiddleware, metrics=HttpMetrics(metrics_registry))
    if token_verifier is not None:
        attach_verifier(app, token_verifier)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        results = await run_checks(checks, default_timeout_s=readiness_timeout_s)
        failing = [{"name": r.name, "reason": r.reason} for r in results if not r.ok]
        body = {
            "status": "unavailable" if failing else "ok",
            "passing": [r.name for r in results if r.ok],
            "failing": failing,
        }
        return JSONResponse(body, status_code=503 if failing else 200)

    # A plain def: FastAPI runs it in a worker thread, so collectors that read
    # /proc (or a slow custom one) never block the event loop.
    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(metrics_registry), media_type=CONTENT_TYPE_LATEST)

    return app
