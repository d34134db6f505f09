"""The composition root: builds the memory service from its settings and runs it.

Start order: telemetry, PostgreSQL (+ migrations), embedder, vector index, bus
(consumers), heartbeats, outbox relay, expiry sweeper, gRPC, HTTP. Stop order is
the reverse, so nothing in flight loses a dependency while it finishes.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from mainstay.memory.v1 import memory_pb2_grpc
from mainstay_common.auth import AuthInterceptor, TokenVerifier
from mainstay_common.db import Outbox, OutboxRelay
from mainstay_common.grpc import GrpcServer
from mainstay_common.http import ReadinessCheck, create_http_app
from mainstay_common.lifecycle import cancel_and_wait, sweep_forever
from mainstay_common.service import ServiceApp
from mainstay_contracts.memory import MEMORY_EVENTS
from mainstay_memory.domain.curation import Thresholds
from mainstay_memory.handlers.curator import register_curator
from mainstay_memory.handlers.grpc import MemoryServicer
from mainstay_memory.handlers.kafka import register_kafka_handlers
from mainstay_memory.service import MemoryService
from mainstay_memory.store.curator_openai import create_fact_extractor
from mainstay_memory.store.embedding import create_embedder
from mainstay_memory.store.records import RecordStore
from mainstay_memory.store.vectors import create_vector_index

if TYPE_CHECKING:
    import contextlib

    from mainstay_memory.settings import MemorySettings

__all__ = ["MemoryApp", "create_app"]

_log = logging.getLogger("mainstay.memory")
MIGRATIONS = Path(__file__).parent / "store" / "migrations"
SCHEMA = "memory"


class MemoryApp(ServiceApp):
    """One running instance of the memory service."""

    settings: MemorySettings

    def __init__(self, settings: MemorySettings) -> None:
        super().__init__(settings)
        self.service: MemoryService | None = None
        self.grpc: GrpcServer | None = None

    @property
    def grpc_port(self) -> int:
        assert self.grpc is not None
        return self.grpc.port

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        settings = self.settings
        telemetry = self._telemetry(stack, "memory")
        database = await self._database(stack, schema=SCHEMA, migrations=MIGRATIONS)
        embedder = create_embedder(settings.embedding)
        stack.push_async_callback(embedder.aclose)
        vectors = await create_vector_index(
            settings.vectors, database, dimension=embedder.dimension
        )
        closer = getattr(vectors, "aclose", None)
        if closer is not None:
            stack.push_async_callback(closer)
        bus = self._bus("memory", telemetry, store=database)
        verifier = TokenVerifier.from_settings(settings.auth)
        stack.push_async_callback(verifier.aclose)
        self.service = service = MemoryService(
            records=RecordStore(database),
            vectors=vectors,
            embedder=embedder,
            bus=bus,
            outbox=Outbox(database),
            thresholds=Thresholds(
                duplicate_similarity=settings.curation.duplicate_similarity,
                merge_similarity=settings.curation.merge_similarity,
            ),
        )
        register_kafka_handlers(bus, service, verifier)
        if settings.curator.enabled:
            # Off by default (it sends episodes to a provider); a consumer of the
            # service's own events, never a step of the write path.
            extractor = create_fact_extractor(settings.curator)
            stack.push_async_callback(extractor.aclose)  # closed after the bus stops
            register_curator(bus, service, extractor)
        await bus.start(extra_topics=[MEMORY_EVENTS])
        stack.push_async_callback(bus.close)
        await self._heartbeats(stack, service="memory")
        await stack.enter_async_context(OutboxRelay(database, bus.send_many))
        sweeper = asyncio.create_task(
            sweep_forever(
                service.expire_due,
                interval_s=settings.curation.sweep_interval_s,
                what="the memory expiry sweep",
            ),
            name="memory-expiry-sweeper",
        )
        stack.push_async_callback(cancel_and_wait, sweeper)
        self.grpc = await stack.enter_async_context(
            GrpcServer(
                [(memory_pb2_grpc.add_MemoryServiceServicer_to_server, MemoryServicer(service))],
                host=settings.grpc_host,
                port=settings.grpc_port,
                interceptors=[AuthInterceptor(verifier)],
                grace=settings.shutdown_grace_s,
                tracer_provider=telemetry.tracer_provider,
            )
        )
        app = create_http_app(
            title="Mainstay memory",
            version="v1",
            readiness=[ReadinessCheck("postgres", database.ping)],
            metrics_registry=telemetry.registry,
            tracer_provider=telemetry.tracer_provider,
            token_verifier=verifier,
        )
        await self._serve_http(stack, app)
        _log.info("memory service serving gRPC on %s:%d", settings.grpc_host, self.grpc.port)


def create_app(settings: MemorySettings) -> MemoryApp:
    return MemoryApp(settings)
