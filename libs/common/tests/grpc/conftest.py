"""A probe service on raw bytes (no generated code) served by a real GrpcServer on port 0.

Each method fails the way its request names, so one server covers every mapping:
``not-found``, ``conflict``, ``unavailable`` (with retry_after), ``value-error``
(a bug whose message must not leak), ``slow`` (never answers), anything else: ok.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import grpc
import grpc.aio
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mainstay_common.errors import Conflict, DependencyUnavailable, NotFound
from mainstay_common.grpc import GrpcServer, create_channel

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

PROBE_SERVICE = "mainstay.test.v1.Probe"
LEAKY_SECRET = "password=hunter2 in a driver message"


def _fail_as(kind: bytes) -> None:
    if kind == b"not-found":
        raise NotFound("record r-1 not found")
    if kind == b"conflict":
        raise Conflict("version 3 was superseded")
    if kind == b"unavailable":
        raise DependencyUnavailable("database unavailable", retry_after=2.5)
    if kind == b"value-error":
        raise ValueError(LEAKY_SECRET)


class ProbeServicer:
    async def Raise(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        if request == b"slow":
            await asyncio.sleep(30)
        _fail_as(request)
        return b"ok:" + request

    async def Stream(
        self, request: bytes, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        yield b"first"
        yield b"second"
        _fail_as(request)

    async def Collect(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> bytes:
        received = [request async for request in requests]
        _fail_as(received[-1])
        return b",".join(received)


def add_probe_to_server(servicer: ProbeServicer, server: grpc.aio.Server) -> None:
    """What grpcio-tools would generate, on raw bytes (identity (de)serializers)."""
    handlers = {
        "Raise": grpc.unary_unary_rpc_method_handler(servicer.Raise),
        "Stream": grpc.unary_stream_rpc_method_handler(servicer.Stream),
        "Collect": grpc.stream_unary_rpc_method_handler(servicer.Collect),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(PROBE_SERVICE, handlers),)
    )


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer_provider(spans: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    return provider


@pytest.fixture
def probe() -> tuple[Callable[[ProbeServicer, grpc.aio.Server], None], ProbeServicer]:
    """The ``(add_fn, servicer)`` pair GrpcServer takes."""
    return add_probe_to_server, ProbeServicer()


@pytest.fixture
async def probe_server(
    probe: tuple[Callable[[ProbeServicer, grpc.aio.Server], None], ProbeServicer],
    tracer_provider: TracerProvider,
) -> AsyncIterator[GrpcServer]:
    async with GrpcServer(
        [probe],
        grace=0.2,
        tracer_provider=tracer_provider,
    ) as server:
        yield server


@pytest.fixture
async def channel(
    probe_server: GrpcServer, tracer_provider: TracerProvider
) -> AsyncIterator[grpc.aio.Channel]:
    async with create_channel(probe_server.address, tracer_provider=tracer_provider) as channel:
        yield channel
