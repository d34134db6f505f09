"""A running execution service (real PostgreSQL, broker and HTTP on loopback) and a
scripted model server speaking the providers' APIs (real providers are unreachable here)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest_asyncio

from mainstay_common.auth import TokenSigner
from mainstay_common.bus import Bus
from mainstay_common.db import LIBRARY_MIGRATIONS, Database, load_migrations
from mainstay_common.settings import (
    AuthSettings,
    HeartbeatSettings,
    KafkaSettings,
    PostgresSettings,
)
from mainstay_common.testing import temporary_database
from mainstay_contracts.execution import SUBMIT_TASK, SubmitTaskCommand
from mainstay_contracts.supervisor import AGENT_EVENTS, AgentDefinition, AgentEvent
from mainstay_execution.app import MIGRATIONS, ExecutionApp
from mainstay_execution.settings import ExecutionSettings
from mainstay_execution.testing.events import final_events, task_events
from mainstay_execution.testing.fake_models import FakeModelServer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    import pytest


@dataclass
class Mesh:
    """The execution service, the model server, and a bus to talk to them."""

    kafka: KafkaSettings
    models: FakeModelServer
    signer: TokenSigner
    bus: Bus
    dsn: str
    home: Path
    apps: list[ExecutionApp] = field(default_factory=list)

    def token(self, tenant: str, scopes: tuple[str, ...] = ("execution:submit",)) -> str:
        return self.signer.mint(subject="dev", tenant=tenant, scopes=list(scopes))

    def settings(self, **overrides: Any) -> ExecutionSettings:
        return ExecutionSettings(
            **{
                "http_port": 0,
                "shutdown_grace_s": 2.0,
                "kafka": self.kafka,
                "postgres": PostgresSettings(dsn=self.dsn),
                "auth": AuthSettings(jwks_file=str(self.home / "jwks.json")),
                "heartbeat": HeartbeatSettings(interval_s=0),
                "ownership_check_s": 0.2,
                "retry_base_s": 0.05,
                "retry_max_s": 0.2,
                "wait_poll_s": 0.2,
                "ledger": False,
                **overrides,
            }
        )

    @contextlib.asynccontextmanager
    async def instance(self, **overrides: Any) -> AsyncIterator[ExecutionApp]:
        async with ExecutionApp(self.settings(**overrides)) as app:
            self.apps.append(app)
            try:
                yield app
            finally:
                self.apps.remove(app)

    async def agent(
        self,
        tenant: str,
        name: str,
        *,
        version: int = 1,
        quarantined: bool = False,
        reason: str = "",
        **fields: Any,
    ) -> None:
        """Announce an agent as the supervisor would (the primary model is 'primary')."""
        definition = AgentDefinition.model_validate(
            {
                "name": name,
                "tenant": tenant,
                "identity": name,
                "models": [
                    self.models.model_ref("openai", "primary").model_dump(),
                    self.models.model_ref("anthropic", "backup").model_dump(),
                ],
                **fields,
            }
        )
        await self.bus.publish(
            AGENT_EVENTS,
            AgentEvent(
                type="agent.registered",
                name=name,
                tenant=tenant,
                version=version,
                definition=definition,
                quarantined=quarantined,
                reason=reason,
                occurred_at=datetime.now(UTC),
            ),
        )

    async def known(self, tenant: str, name: str, version: int = 1) -> None:
        """Wait until a running instance has read the agent's announcement."""
        connection = await asyncpg.connect(self.dsn)
        try:
            for _ in range(400):
                found = await connection.fetchval(
                    "SELECT 1 FROM execution.agent_versions WHERE tenant = $1 AND name = $2"
                    " AND version = $3",
                    tenant,
                    name,
                    version,
                )
                if found:
                    return
                await asyncio.sleep(0.05)
        finally:
            await connection.close()
        raise AssertionError(f"agent {tenant}/{name} v{version} never reached the service")

    async def submit(self, tenant: str, agent: str, text: str, **fields: Any) -> str:
        task_id = fields.pop("task_id", f"task-{uuid.uuid4().hex[:10]}")
        await self.bus.publish(
            SUBMIT_TASK,
            SubmitTaskCommand(
                task_id=task_id,
                tenant=tenant,
                agent=agent,
                input=text,
                token=fields.pop("token", None) or self.token(tenant),
                **fields,
            ),
        )
        return task_id

    async def events(
        self,
        task_id: str,
        until: Callable[[dict[str, Any]], bool],
        wait_s: float = 30,
    ) -> list[dict[str, Any]]:
        """The task's events, once one that ``until`` accepts is among them."""
        return await task_events(self.kafka, task_id, until, wait_s)

    async def final(self, task_id: str, wait_s: float = 30) -> list[dict[str, Any]]:
        return await final_events(self.kafka, task_id, wait_s)


@pytest_asyncio.fixture
async def database(postgres_dsn: str, pg_schema: str) -> AsyncIterator[Database]:
    """A schema of its own with execution's tables."""
    async with Database(PostgresSettings(dsn=postgres_dsn), schema=pg_schema) as db:
        await db.migrate(LIBRARY_MIGRATIONS, load_migrations(MIGRATIONS, namespace="execution"))
        yield db


def new_tenant() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def mesh(
    kafka_bootstrap: str, postgres_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Mesh]:
    home = tmp_path_factory.mktemp("execution")
    signer = TokenSigner.generate()
    (home / "jwks.json").write_text(json.dumps(signer.jwks()))
    kafka = KafkaSettings(
        bootstrap=kafka_bootstrap,
        topic_prefix=f"x{uuid.uuid4().hex[:8]}.",
        session_timeout_ms=2000,
        heartbeat_interval_ms=300,
    )
    async with (
        temporary_database(postgres_dsn, prefix="execution_test") as dsn,
        FakeModelServer() as models,
        Bus(service="tests", kafka=kafka) as bus,
    ):
        # It stands in for the supervisor and the users; their topics would otherwise
        # be created only by the first execution instance (nobody else creates them).
        await bus.ensure_topics([AGENT_EVENTS, SUBMIT_TASK])
        yield Mesh(kafka=kafka, models=models, signer=signer, bus=bus, dsn=dsn, home=home)
