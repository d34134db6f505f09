"""The composition root: builds the supervisor from its settings and runs it.

Start order: telemetry, PostgreSQL (+ migrations), bus, outbox relay, HTTP.
Stop order is the reverse.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from mainstay_common.auth import TokenVerifier
from mainstay_common.bus import Bus
from mainstay_common.db import Outbox, OutboxRelay
from mainstay_common.http import ReadinessCheck, create_http_app
from mainstay_common.service import ServiceApp
from mainstay_contracts.supervisor import AGENT_EVENTS
from mainstay_supervisor.fleet import Fleet
from mainstay_supervisor.handlers.http import create_router
from mainstay_supervisor.handlers.kafka import register_kafka_handlers
from mainstay_supervisor.registry import Registry

if TYPE_CHECKING:
    import contextlib

    from mainstay_supervisor.settings import SupervisorSettings

__all__ = ["MIGRATIONS", "SCHEMA", "SupervisorApp", "create_app"]

_log = logging.getLogger("mainstay.supervisor")
MIGRATIONS = Path(__file__).parent / "store" / "migrations"
SCHEMA = "supervisor"


class SupervisorApp(ServiceApp):
    """One running instance of the supervisor."""

    settings: SupervisorSettings

    def __init__(self, settings: SupervisorSettings) -> None:
        super().__init__(settings)
        self.registry: Registry | None = None
        self.fleet: Fleet | None = None

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        settings = self.settings
        telemetry = self._telemetry(stack, "supervisor")
        database = await self._database(stack, schema=SCHEMA, migrations=MIGRATIONS)
        self.bus = bus = Bus.for_service("supervisor", settings, registry=telemetry.registry)
        self.registry = registry = Registry(database, bus, Outbox(database))
        interval = timedelta(seconds=settings.heartbeat_interval_s)
        self.fleet = fleet = Fleet(
            database,
            stale_after=interval * settings.stale_after_heartbeats,
            dead_after=timedelta(seconds=settings.dead_after_s),
        )
        verifier = TokenVerifier.from_settings(settings.auth)
        stack.push_async_callback(verifier.aclose)
        register_kafka_handlers(bus, database, registry, fleet, verifier)
        await bus.start(extra_topics=[AGENT_EVENTS])
        stack.push_async_callback(bus.close)
        await stack.enter_async_context(OutboxRelay(database, bus.send_many))
        app = create_http_app(
            title="Mainstay supervisor",
            version="v1",
            readiness=[ReadinessCheck("postgres", database.ping)],
            metrics_registry=telemetry.registry,
            token_verifier=verifier,
        )
        app.include_router(create_router(registry, fleet))
        http = await self._serve_http(stack, app)
        _log.info("supervisor serving HTTP on %s:%d", settings.http_host, http.port)


def create_app(settings: SupervisorSettings) -> SupervisorApp:
    return SupervisorApp(settings)
