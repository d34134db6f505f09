"""The composition root: builds the execution service from its settings and runs it.

Start order: telemetry, PostgreSQL (+ migrations), model providers, bus,
heartbeats, outbox relay, the ownership loop (partition leases and a runner
per live task), HTTP. Stop order is the reverse.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from mainstay_common.auth import TokenSource, TokenVerifier
from mainstay_common.bus import group_id
from mainstay_common.db import Outbox, OutboxRelay
from mainstay_common.errors import InvalidArgument
from mainstay_common.http import ReadinessCheck, create_http_app
from mainstay_common.lifecycle import cancel_and_wait, sweep_forever
from mainstay_common.service import ServiceApp
from mainstay_common.settings import secret_values
from mainstay_execution.agents import AgentBook
from mainstay_execution.budget import Budget
from mainstay_execution.escalations import Escalations
from mainstay_execution.handlers.kafka import (
    PUBLISHES,
    SUBMIT_HANDLER,
    register_kafka_handlers,
)
from mainstay_execution.healing import Circuits
from mainstay_execution.memory import MemoryClient
from mainstay_execution.metrics import model_circuit_metrics
from mainstay_execution.ownership import Leases
from mainstay_execution.providers import Providers
from mainstay_execution.retention import compact_finished
from mainstay_execution.runner import Runner, Wakeups
from mainstay_execution.service import Execution
from mainstay_execution.tasks import Tasks
from mainstay_execution.toolcalls import ToolCalls

if TYPE_CHECKING:
    import contextlib

    from mainstay_execution.settings import ExecutionSettings

__all__ = ["MIGRATIONS", "SCHEMA", "ExecutionApp", "create_app", "parse_model_keys"]

_log = logging.getLogger("mainstay.execution")
MIGRATIONS = Path(__file__).parent / "store" / "migrations"
SCHEMA = "execution"


def parse_model_keys(lines: list[str]) -> dict[str, str]:
    """``<credential>=<key>`` per entry, by credential name; a malformed entry is named."""
    keys: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        name, sep, key = line.partition("=")
        if not (sep and name.strip() and key.strip()):
            raise InvalidArgument(f"model keys, entry {number}: expected '<credential>=<key>'")
        keys[name.strip()] = key.strip()
    return keys


class ExecutionApp(ServiceApp):
    """One running instance of the execution service."""

    settings: ExecutionSettings

    def __init__(self, settings: ExecutionSettings) -> None:
        super().__init__(settings)
        self.execution: Execution | None = None

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        settings = self.settings
        keys = parse_model_keys(
            secret_values(settings.model_keys, settings.model_keys_file, what="model keys")
        )
        # Bad credentials fail before anything starts.
        tokens = None
        if settings.mail_credentials or settings.mail_credentials_file:
            tokens = TokenSource.for_identity(
                settings.identity_url,
                settings.mail_credentials,
                settings.mail_credentials_file,
                what="mail credentials",
            )
            stack.push_async_callback(tokens.aclose)
        telemetry = self._telemetry(stack, "execution")
        # Nothing here leaves session state on a pooled connection (advisory locks are
        # transaction-scoped, no SET, the outbox listener unlistens at close).
        database = await self._database(
            stack, schema=SCHEMA, migrations=MIGRATIONS, reset_sessions=False
        )
        providers = Providers()
        stack.push_async_callback(providers.aclose)
        bus = self._bus("execution", telemetry)
        outbox = Outbox(database)
        tasks = Tasks(database, bus, outbox)
        agents = AgentBook()
        leases = Leases(database, owner=settings.instance_id)
        verifier = TokenVerifier.from_settings(settings.auth)
        stack.push_async_callback(verifier.aclose)
        memory = None
        if settings.memory_target is not None:
            memory = MemoryClient(
                settings.memory_target,
                timeout_s=settings.memory_timeout_s,
                tracer_provider=telemetry.tracer_provider,
            )
            stack.push_async_callback(memory.aclose)
        budget = Budget(database, bus, outbox, enabled=settings.ledger)
        tools = ToolCalls(database, bus, outbox, settings)
        escalations = Escalations(bus, outbox, tokens, timeout_s=settings.escalation_timeout_s)
        wakeups = Wakeups()
        runner = Runner(
            database=database,
            outbox=outbox,
            tasks=tasks,
            leases=leases,
            provider=providers,
            circuits=Circuits(
                failures=settings.circuit_failures,
                open_s=settings.circuit_open_s,
                on_change=model_circuit_metrics(telemetry.registry),
            ),
            budget=budget,
            tools=tools,
            escalations=escalations,
            memory=memory,
            wakeups=wakeups,
            settings=settings,
            api_keys=keys,
        )
        self.execution = execution = Execution(
            tasks=tasks,
            agents=agents,
            leases=leases,
            runner=runner,
            budget=budget,
            wakeups=wakeups,
            verifier=verifier,
            bus=bus,
            submit_group=group_id("execution", SUBMIT_HANDLER, prefix=settings.kafka.topic_prefix),
        )
        register_kafka_handlers(
            bus,
            database,
            execution,
            agents=agents,
            tools=tools,
            budget=budget,
            escalations=escalations,
        )
        await bus.start(extra_topics=PUBLISHES)
        stack.push_async_callback(bus.close)
        await self._heartbeats(stack, service="execution", in_flight=lambda: len(execution.running))
        await stack.enter_async_context(OutboxRelay(database, bus.send_many))
        stack.push_async_callback(execution.close)
        ownership = asyncio.create_task(
            sweep_forever(
                execution.reconcile, interval_s=settings.ownership_check_s, what="task ownership"
            ),
            name="execution-ownership",
        )
        stack.push_async_callback(cancel_and_wait, ownership)
        retention = asyncio.create_task(
            sweep_forever(
                functools.partial(compact_finished, database, older_than_s=settings.retention_s),
                interval_s=settings.retention_sweep_s,
                what="task retention",
            ),
            name="execution-retention",
        )
        stack.push_async_callback(cancel_and_wait, retention)
        app = create_http_app(
            title="Mainstay execution",
            version="v1",
            readiness=[ReadinessCheck("postgres", database.ping)],
            metrics_registry=telemetry.registry,
            tracer_provider=telemetry.tracer_provider,
            token_verifier=verifier,
        )
        http = await self._serve_http(stack, app)
        _log.info("execution serving HTTP on %s:%d", settings.http_host, http.port)


def create_app(settings: ExecutionSettings) -> ExecutionApp:
    return ExecutionApp(settings)
