"""The composition root: builds the tools gateway from its settings and runs it.

Start order: telemetry, PostgreSQL (+ migrations), bus, heartbeats, registry (and the
registry file, the builtins), outbox relay, HTTP (API + MCP). Stop order is
the reverse, so nothing in flight loses a dependency while it finishes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.routing import Route

from mainstay_common.auth import TokenVerifier
from mainstay_common.db import Outbox, OutboxRelay
from mainstay_common.http import ReadinessCheck, create_http_app
from mainstay_common.service import ServiceApp
from mainstay_common.settings import secret_values
from mainstay_contracts.ledger import RECORD_USAGE
from mainstay_contracts.tools import TOOL_CALLS, TOOL_EVENTS
from mainstay_tools_gateway.domain.breaker import CircuitBreakers
from mainstay_tools_gateway.handlers.http import create_router
from mainstay_tools_gateway.handlers.kafka import register_kafka_handlers
from mainstay_tools_gateway.handlers.mcp_server import create_mcp_endpoint
from mainstay_tools_gateway.metrics import gateway_metrics
from mainstay_tools_gateway.registry_file import load_registry_file
from mainstay_tools_gateway.service import ToolsGateway
from mainstay_tools_gateway.store.builtins import BUILTIN_NAMES, BuiltinInvoker, builtin_specs
from mainstay_tools_gateway.store.calls import CallStore
from mainstay_tools_gateway.store.invoke_http import HttpInvoker
from mainstay_tools_gateway.store.invoke_mcp import McpInvoker
from mainstay_tools_gateway.store.ratelimits import RateLimiter
from mainstay_tools_gateway.store.registry import RegistryStore
from mainstay_tools_gateway.store.vault import Vault

if TYPE_CHECKING:
    import contextlib

    from mainstay_tools_gateway.settings import ToolsGatewaySettings

__all__ = ["MIGRATIONS", "SCHEMA", "ToolsGatewayApp", "create_app"]

_log = logging.getLogger("mainstay.tools")
MIGRATIONS = Path(__file__).parent / "store" / "migrations"
SCHEMA = "tools"
STARTUP_PRINCIPAL = "startup"


def vault_keys(settings: ToolsGatewaySettings) -> list[str]:
    """The configured vault keys: ``vault_keys``, else the lines of ``vault_key_file``."""
    return secret_values(settings.vault_keys, settings.vault_key_file, what="vault key")


class ToolsGatewayApp(ServiceApp):
    """One running instance of the tools gateway."""

    settings: ToolsGatewaySettings

    def __init__(self, settings: ToolsGatewaySettings) -> None:
        super().__init__(settings)
        self.gateway: ToolsGateway | None = None

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        settings = self.settings
        registry_file = (
            load_registry_file(settings.registry_file) if settings.registry_file else None
        )
        keys = vault_keys(settings)
        telemetry = self._telemetry(stack, "tools-gateway")
        # The gateway leaves no session state behind (SET LOCAL only, transaction-scoped
        # locks), so pooled connections skip the reset round trip on release.
        database = await self._database(
            stack, schema=SCHEMA, migrations=MIGRATIONS, reset_sessions=False
        )
        bus = self._bus("tools", telemetry, store=database)
        outbox = Outbox(database)
        observer = gateway_metrics(telemetry.registry)
        registry = RegistryStore(database, bus, outbox, refresh_s=settings.registry_refresh_s)
        http_invoker = HttpInvoker()
        stack.push_async_callback(http_invoker.aclose)
        builtin_invoker = BuiltinInvoker(
            allow_hosts=settings.builtin.http_fetch_allow_hosts,
            max_bytes=settings.builtin.http_fetch_max_bytes,
        )
        stack.push_async_callback(builtin_invoker.aclose)
        mcp_invoker = McpInvoker()
        stack.push_async_callback(mcp_invoker.aclose)
        verifier = TokenVerifier.from_settings(settings.auth)
        stack.push_async_callback(verifier.aclose)
        self.gateway = gateway = ToolsGateway(
            registry=registry,
            vault=Vault(database, keys),
            limiter=RateLimiter(database),
            calls=CallStore(database, outbox),
            breakers=CircuitBreakers(
                failure_threshold=settings.breaker.failure_threshold,
                open_s=settings.breaker.open_s,
                on_change=observer.breaker_changed,
            ),
            invokers={"http": http_invoker, "builtin": builtin_invoker, "mcp": mcp_invoker},
            bus=bus,
            max_output_bytes=settings.max_output_bytes,
            claim_lease_s=settings.claim_lease_s,
            builtin_names=BUILTIN_NAMES,
            mcp_stdio_enabled=settings.mcp_stdio_enabled,
            observer=observer,
        )
        # Closed after the HTTP server and the bus, before the database.
        stack.push_async_callback(gateway.drain, settings.shutdown_grace_s)
        register_kafka_handlers(bus, gateway, verifier)
        await bus.start(extra_topics=[TOOL_CALLS, TOOL_EVENTS, RECORD_USAGE])
        stack.push_async_callback(bus.close)
        await self._heartbeats(stack, service="tools-gateway")
        await stack.enter_async_context(registry)
        if settings.builtin.enabled:
            for spec in builtin_specs():
                await gateway.register(spec, changed_by=STARTUP_PRINCIPAL)
        if registry_file is not None:
            for spec in registry_file.tools:
                await gateway.register(spec, changed_by=STARTUP_PRINCIPAL)
            _log.info(
                "registered %d tools from %s", len(registry_file.tools), settings.registry_file
            )
        await stack.enter_async_context(OutboxRelay(database, bus.send_many))
        # The MCP endpoint's session manager runs in the HTTP app's lifespan: it is
        # started before the server answers and stopped after it has drained.
        mcp_endpoint = create_mcp_endpoint(gateway, verifier)
        app = create_http_app(
            title="Mainstay tools gateway",
            version="v1",
            readiness=[ReadinessCheck("postgres", database.ping)],
            metrics_registry=telemetry.registry,
            tracer_provider=telemetry.tracer_provider,
            token_verifier=verifier,
            lifespan=mcp_endpoint.lifespan,
        )
        app.include_router(create_router(gateway))
        app.router.routes.append(Route("/mcp", mcp_endpoint.app, include_in_schema=False))
        http = await self._serve_http(stack, app)
        _log.info("tools gateway serving HTTP on %s:%d", settings.http_host, http.port)


def create_app(settings: ToolsGatewaySettings) -> ToolsGatewayApp:
    return ToolsGatewayApp(settings)
