"""The composition root: builds the ledger from its settings and runs it.

Start order: telemetry, PostgreSQL (+ migrations), the identity token source,
bus, heartbeats, outbox relay, the sweep (grace, timeouts, approval requests), HTTP. Stop
order is the reverse.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from mainstay_common.auth import TokenSource, TokenVerifier
from mainstay_common.db import Outbox, OutboxRelay
from mainstay_common.http import ReadinessCheck, create_http_app
from mainstay_common.lifecycle import cancel_and_wait, sweep_forever
from mainstay_common.service import ServiceApp
from mainstay_contracts.identity import SEND_MAIL
from mainstay_contracts.ledger import LEDGER_EVENTS
from mainstay_ledger.handlers.http import create_router
from mainstay_ledger.handlers.kafka import register_kafka_handlers
from mainstay_ledger.holds import Ledger
from mainstay_ledger.metrics import LedgerMetrics

if TYPE_CHECKING:
    import contextlib

    from mainstay_ledger.settings import LedgerSettings

__all__ = ["MIGRATIONS", "SCHEMA", "LedgerApp", "create_app"]

_log = logging.getLogger("mainstay.ledger")
MIGRATIONS = Path(__file__).parent / "store" / "migrations"
SCHEMA = "ledger"


class LedgerApp(ServiceApp):
    """One running instance of the ledger."""

    settings: LedgerSettings

    def __init__(self, settings: LedgerSettings) -> None:
        super().__init__(settings)
        self.ledger: Ledger | None = None

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        settings = self.settings
        # Bad credentials fail before anything starts.
        tokens = TokenSource.for_identity(
            settings.identity_url,
            settings.approval_credentials,
            settings.approval_credentials_file,
            what="approval credentials",
        )
        stack.push_async_callback(tokens.aclose)
        telemetry = self._telemetry(stack, "ledger")
        # The ledger leaves no session state behind (transaction-scoped locks only).
        database = await self._database(
            stack, schema=SCHEMA, migrations=MIGRATIONS, reset_sessions=False
        )
        bus = self._bus("ledger", telemetry)
        self.ledger = ledger = Ledger(
            database,
            bus,
            Outbox(database),
            settings,
            metrics=LedgerMetrics(telemetry.registry),
            tokens=tokens,
        )
        register_kafka_handlers(bus, database, ledger)
        await bus.start(extra_topics=[LEDGER_EVENTS, SEND_MAIL])
        stack.push_async_callback(bus.close)
        await self._heartbeats(stack, service="ledger")
        await stack.enter_async_context(OutboxRelay(database, bus.send_many))
        # Every instance sweeps: locked holds are skipped, each is changed once.
        sweep = asyncio.create_task(
            sweep_forever(
                ledger.sweep, interval_s=settings.sweep_interval_s, what="sweeping holds"
            ),
            name="ledger-sweep",
        )
        stack.push_async_callback(cancel_and_wait, sweep)
        verifier = TokenVerifier.from_settings(settings.auth)
        stack.push_async_callback(verifier.aclose)
        app = create_http_app(
            title="Mainstay ledger",
            version="v1",
            readiness=[ReadinessCheck("postgres", database.ping)],
            metrics_registry=telemetry.registry,
            tracer_provider=telemetry.tracer_provider,
            token_verifier=verifier,
        )
        app.include_router(create_router(database, settings))
        http = await self._serve_http(stack, app)
        _log.info("ledger serving HTTP on %s:%d", settings.http_host, http.port)


def create_app(settings: LedgerSettings) -> LedgerApp:
    return LedgerApp(settings)
