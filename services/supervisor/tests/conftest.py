"""A running supervisor (real PostgreSQL, broker and HTTP on loopback)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import pytest_asyncio

from mainstay_common.auth import TokenSigner
from mainstay_common.bus import Bus
from mainstay_common.settings import (
    AuthSettings,
    HeartbeatSettings,
    KafkaSettings,
    PostgresSettings,
)
from mainstay_common.testing import read_records
from mainstay_supervisor.app import SupervisorApp
from mainstay_supervisor.settings import SupervisorSettings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable

    import pytest

    from mainstay_contracts import TopicSpec

ADMIN = ("supervisor:read", "supervisor:admin")


@dataclass
class Supervisor:
    app: SupervisorApp
    kafka: KafkaSettings
    signer: TokenSigner
    http: httpx.AsyncClient
    bus: Bus

    def token(self, tenant: str, scopes: Iterable[str] = ADMIN, subject: str = "ops") -> str:
        return self.signer.mint(subject=subject, tenant=tenant, scopes=list(scopes))

    def headers(self, tenant: str, scopes: Iterable[str] = ADMIN) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(tenant, scopes)}"}

    async def records(
        self, spec: TopicSpec[Any], count: int, accept: Callable[[Any], bool], wait_s: float = 20
    ) -> list[Any]:
        return await read_records(
            self.kafka.bootstrap,
            f"{self.kafka.topic_prefix}{spec.name}",
            count=count,
            accept=accept,
            wait_s=wait_s,
        )


def new_tenant() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def supervisor(
    kafka_bootstrap: str,
    postgres_dsn: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Supervisor]:
    home = tmp_path_factory.mktemp("supervisor")
    signer = TokenSigner.generate()
    (home / "jwks.json").write_text(json.dumps(signer.jwks()))
    kafka = KafkaSettings(
        bootstrap=kafka_bootstrap,
        topic_prefix=f"s{uuid.uuid4().hex[:8]}.",
        session_timeout_ms=2000,
        heartbeat_interval_ms=300,
    )
    schema_dsn = postgres_dsn
    settings = SupervisorSettings(
        http_port=0,
        shutdown_grace_s=2.0,
        kafka=kafka,
        postgres=PostgresSettings(dsn=schema_dsn),
        auth=AuthSettings(jwks_file=str(home / "jwks.json")),
        heartbeat_interval_s=1.0,
        stale_after_heartbeats=3,
        dead_after_s=10.0,
        monitor_interval_s=1.0,
        heartbeat=HeartbeatSettings(interval_s=0.5),  # the supervisor's own heartbeats
    )
    async with (
        SupervisorApp(settings) as app,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}", timeout=30) as http,
        Bus(service="tests", kafka=kafka) as bus,
    ):
        yield Supervisor(app=app, kafka=kafka, signer=signer, http=http, bus=bus)
