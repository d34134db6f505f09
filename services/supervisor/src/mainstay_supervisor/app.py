"""The composition root: builds the supervisor from its settings and runs it.

Start order: telemetry, PostgreSQL (+ migrations), bus, heartbeats, outbox
relay, the broker monitor and the stuck-task sweep, HTTP. Stop order is the
reverse.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from mainstay_common.auth import TokenSource, TokenVerifier
from mainstay_common.db import Outbox, OutboxRelay
from mainstay_common.http import ReadinessCheck, create_http_app
from mainstay_common.lifecycle import cancel_and_wait, sweep_forever
from mainstay_common.service import ServiceApp
from mainstay_contracts.execution import CANCEL_TASK, RESUME_TASK
from mainstay_contracts.identity import SEND_MAIL
from mainstay_contracts.supervisor import AGENT_EVENTS
from mainstay_supervisor.dead_letters import DeadLetters
from mainstay_supervisor.fleet import Fleet
from mainstay_supervisor.handlers.dead_letters_http import create_dead_letters_router
from mainstay_supervisor.handlers.http import create_router
from mainstay_supervisor.handlers.kafka import register_kafka_handlers
from mainstay_supervisor.monitor import KafkaMonitor, MonitorMetrics
from mainstay_supervisor.progress import Supervision, SupervisionMetrics
from mainstay_supervisor.registry import Registry
from mainstay_supervisor.scaling import ScalingPolicy
from mainstay_supervisor.store.broker import Broker

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
        self.supervision: Supervision | None = None
        self.monitor: KafkaMonitor | None = None

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        settings = self.settings
        # Bad credentials fail before anything starts.
        tokens = TokenSource.for_identity(
            settings.identity_url,
            settings.mail_credentials,
            settings.mail_credentials_file,
            what="mail credentials",
        )
        stack.push_async_callback(tokens.aclose)
        telemetry = self._telemetry(stack, "supervisor")
        database = await self._database(stack, schema=SCHEMA, migrations=MIGRATIONS)
        bus = self._bus("supervisor", telemetry)
        outbox = Outbox(database)
        self.registry = registry = Registry(database, bus, outbox)
        self.supervision = supervision = Supervision(
            database,
            bus,
            outbox,
            registry,
            tokens=tokens,
            default_step_timeout_s=settings.default_step_timeout_s,
            retention=timedelta(seconds=settings.task_retention_s),
            metrics=SupervisionMetrics(telemetry.registry),
        )
        interval = timedelta(seconds=settings.heartbeat_interval_s)
        self.fleet = fleet = Fleet(
            database,
            stale_after=interval * settings.stale_after_heartbeats,
            dead_after=timedelta(seconds=settings.dead_after_s),
        )
        verifier = TokenVerifier.from_settings(settings.auth)
        stack.push_async_callback(verifier.aclose)
        register_kafka_handlers(bus, database, registry, fleet, verifier, supervision=supervision)
        await bus.start(extra_topics=[AGENT_EVENTS, RESUME_TASK, CANCEL_TASK, SEND_MAIL])
        stack.push_async_callback(bus.close)
        await self._heartbeats(stack, service="supervisor")
        await stack.enter_async_context(OutboxRelay(database, bus.send_many))
        broker = await stack.enter_async_context(Broker(settings.kafka))
        self.monitor = monitor = KafkaMonitor(
            broker,
            policy=ScalingPolicy(
                drain_s=settings.scale_drain_s,
                lag_per_replica=settings.scale_lag_per_replica,
                min_replicas=settings.scale_min_replicas,
            ),
            metrics=MonitorMetrics(telemetry.registry),
        )
        # Every instance sweeps: a task being acted on is locked, so each is acted on once.
        for name, step, interval_s in (
            ("supervisor-stuck-tasks", supervision.sweep, settings.heartbeat_interval_s),
            ("supervisor-monitor", lambda: monitor.observe(fleet), settings.monitor_interval_s),
        ):
            task = asyncio.create_task(
                sweep_forever(step, interval_s=interval_s, what=name), name=name
            )
            stack.push_async_callback(cancel_and_wait, task)
        dead_letters = DeadLetters(database, outbox, broker)
        app = create_http_app(
            title="Mainstay supervisor",
            version="v1",
            readiness=[ReadinessCheck("postgres", database.ping)],
            metrics_registry=telemetry.registry,
            tracer_provider=telemetry.tracer_provider,
            token_verifier=verifier,
        )
        app.include_router(create_router(registry, fleet, supervision, monitor))
        app.include_router(create_dead_letters_router(dead_letters))
        http = await self._serve_http(stack, app)
        _log.info("supervisor serving HTTP on %s:%d", settings.http_host, http.port)


def create_app(settings: SupervisorSettings) -> SupervisorApp:
    return SupervisorApp(settings)
