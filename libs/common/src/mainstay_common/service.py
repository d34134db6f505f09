"""What every service's composition root shares.

A service's ``app.py`` subclasses :class:`ServiceApp` and implements ``_start``
with the helpers here, so telemetry, the database with its migrations, the
heartbeats and the HTTP server start (and close, in reverse) the same way in
every service.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mainstay_common.bus import Bus
from mainstay_common.db import LIBRARY_MIGRATIONS, Database, load_migrations
from mainstay_common.heartbeat import Heartbeats
from mainstay_common.http import HttpServer
from mainstay_common.lifecycle import StackedResource
from mainstay_common.telemetry import setup_telemetry

if TYPE_CHECKING:
    import contextlib
    from collections.abc import Callable
    from pathlib import Path

    from starlette.types import ASGIApp

    from mainstay_common.settings import ServiceSettings
    from mainstay_common.telemetry import Telemetry

__all__ = ["ServiceApp"]


class ServiceApp(StackedResource):
    """One running service instance: its settings, bus and HTTP server."""

    def __init__(self, settings: ServiceSettings) -> None:
        super().__init__()
        self.settings = settings
        self.bus: Bus | None = None
        self.heartbeats: Heartbeats | None = None
        self.http: HttpServer | None = None

    @property
    def http_port(self) -> int:
        assert self.http is not None
        return self.http.port

    def _telemetry(self, stack: contextlib.AsyncExitStack, service: str) -> Telemetry:
        telemetry = setup_telemetry(
            service, self.settings.telemetry, instance_id=self.settings.instance_id
        )
        stack.push_async_callback(telemetry.aclose)
        return telemetry

    def _bus(self, service: str, telemetry: Telemetry, *, store: Database | None = None) -> Bus:
        """The service's bus (``self.bus``), measured and traced with the rest of it.

        ``store``: the database its plain subscribers write to (see :meth:`Bus.subscriber`).
        """
        self.bus = Bus.for_service(
            service,
            self.settings,
            registry=telemetry.registry,
            tracer_provider=telemetry.tracer_provider,
            store=store,
        )
        return self.bus

    async def _database(
        self,
        stack: contextlib.AsyncExitStack,
        *,
        schema: str,
        migrations: Path,
        reset_sessions: bool = True,
    ) -> Database:
        """The service's schema, migrated (the library's tables first)."""
        database = await stack.enter_async_context(
            Database(self.settings.postgres, schema=schema, reset_sessions=reset_sessions)
        )
        await database.migrate(LIBRARY_MIGRATIONS, load_migrations(migrations, namespace=schema))
        return database

    async def _heartbeats(
        self,
        stack: contextlib.AsyncExitStack,
        *,
        service: str,
        in_flight: Callable[[], int] | None = None,
    ) -> Heartbeats | None:
        """Heartbeats of this instance on ``self.bus``; None when ``MAINSTAY_HEARTBEAT_INTERVAL_S`` is 0.

        Call it right after the bus started (and its close was pushed on
        ``stack``), so the heartbeats stop before the bus closes. ``in_flight``
        counts work in hand besides the bus's messages.
        """
        interval_s = self.settings.heartbeat.interval_s
        if interval_s <= 0:
            return None
        if self.bus is None:
            raise RuntimeError("start the bus before its heartbeats")
        self.heartbeats = await stack.enter_async_context(
            Heartbeats(
                self.bus,
                service=service,
                instance=self.settings.instance_id,
                interval_s=interval_s,
                in_flight=in_flight,
            )
        )
        return self.heartbeats

    async def _serve_http(self, stack: contextlib.AsyncExitStack, app: ASGIApp) -> HttpServer:
        self.http = await stack.enter_async_context(
            HttpServer(app, host=self.settings.http_host, port=self.settings.http_port)
        )
        return self.http
