"""Running ledgers (real PostgreSQL, broker and HTTP on loopback) and what tests ask of them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx
import pytest
import pytest_asyncio

from mainstay_common.auth import TokenSigner
from mainstay_common.bus import Bus
from mainstay_common.settings import AuthSettings, KafkaSettings, PostgresSettings, RetrySettings
from mainstay_common.testing import read_records, temporary_database
from mainstay_contracts.ledger import LEDGER_EVENTS
from mainstay_ledger.app import LedgerApp
from mainstay_ledger.settings import LedgerSettings
from mainstay_ledger.testing import check_invariants

from .machines import DSN

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable, Iterator
    from pathlib import Path

    from mainstay_contracts import TopicSpec

READ = ("ledger:read",)
ADMIN = ("ledger:read", "ledger:admin")


@dataclass
class Ledgers:
    """One or more ledger instances on one database and one set of topics."""

    kafka: KafkaSettings
    dsn: str
    signer: TokenSigner
    jwks: Path
    apps: list[LedgerApp] = field(default_factory=list)
    http: httpx.AsyncClient | None = None
    bus: Bus | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    def settings(self, **overrides: Any) -> LedgerSettings:
        return LedgerSettings(
            **{
                "http_port": 0,
                "shutdown_grace_s": 2.0,
                "kafka": self.kafka,
                "postgres": PostgresSettings(dsn=self.dsn),
                "auth": AuthSettings(jwks_file=str(self.jwks)),
                "retry": RetrySettings(
                    tier_delays_s=[0.2, 0.4], blocking_attempts=4, blocking_backoff_s=0.05
                ),
                "close_grace_s": 0,
                "usage_events": True,
                "sweep_interval_s": 0.2,
                **self.overrides,
                **overrides,
            }
        )

    async def start(self, **overrides: Any) -> LedgerApp:
        app = LedgerApp(self.settings(**overrides))
        await app.start()
        self.apps.append(app)
        return app

    async def stop(self, app: LedgerApp) -> None:
        self.apps.remove(app)
        await app.close()

    def headers(
        self, tenant: str, scopes: Iterable[str] = ADMIN, subject: str = "operator"
    ) -> dict[str, str]:
        token = self.signer.mint(subject=subject, tenant=tenant, scopes=list(scopes))
        return {"Authorization": f"Bearer {token}"}

    async def send(self, spec: TopicSpec[Any], payload: Any, **envelope: Any) -> str:
        assert self.bus is not None
        return await self.bus.publish(spec, payload, **envelope)

    async def records(
        self, topic: str, count: int, accept: Callable[[dict[str, Any]], bool], wait_s: float = 20
    ) -> list[dict[str, Any]]:
        records = await read_records(
            self.kafka.bootstrap,
            f"{self.kafka.topic_prefix}{topic}",
            count=count,
            accept=lambda r: accept(json.loads(r.value)),
            wait_s=wait_s,
        )
        return [json.loads(r.value) for r in records]

    async def events(
        self, count: int, accept: Callable[[dict[str, Any]], bool], wait_s: float = 20
    ) -> list[dict[str, Any]]:
        """Up to ``count`` ledger events that ``accept`` keeps."""
        return await self.records(LEDGER_EVENTS.name, count, accept, wait_s)

    async def task_events(self, task_id: str, *types: str, wait_s: float = 20) -> list[str]:
        """The types of ``task_id``'s events, once those of ``types`` all showed."""
        found = await self.events(
            len(types), lambda e: e["task_id"] == task_id and e["type"] in types, wait_s
        )
        return [e["type"] for e in found]

    async def dead_letters(
        self, handler: str, count: int, accept: Callable[[Any], bool]
    ) -> list[Any]:
        records = await read_records(
            self.kafka.bootstrap,
            f"{self.kafka.topic_prefix}ledger.{handler}.dlq",
            count=count,
            accept=accept,
        )
        return list(records)

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        connection = await asyncpg.connect(self.dsn, server_settings={"search_path": "ledger"})
        try:
            return list(await connection.fetch(query, *args))
        finally:
            await connection.close()

    async def hold(self, tenant: str, task_id: str) -> asyncpg.Record | None:
        rows = await self.fetch(
            "SELECT * FROM holds WHERE tenant = $1 AND task_id = $2", tenant, task_id
        )
        return rows[0] if rows else None

    async def wait_hold(
        self,
        tenant: str,
        task_id: str,
        accept: Callable[[asyncpg.Record], bool],
        wait_s: float = 20,
    ) -> asyncpg.Record:
        """The hold once ``accept`` takes it."""
        deadline = asyncio.get_running_loop().time() + wait_s
        while True:
            hold = await self.hold(tenant, task_id)
            if hold is not None and accept(hold):
                return hold
            assert asyncio.get_running_loop().time() < deadline, f"hold now: {hold and dict(hold)}"
            await asyncio.sleep(0.05)

    async def wait_usage(self, tenant: str, count: int, wait_s: float = 30) -> int:
        """Waits until ``tenant`` has ``count`` usage rows; returns how many it has then."""
        deadline = asyncio.get_running_loop().time() + wait_s
        while True:
            rows = await self.fetch("SELECT count(*) AS n FROM usage WHERE tenant = $1", tenant)
            if rows[0]["n"] >= count or asyncio.get_running_loop().time() > deadline:
                return int(rows[0]["n"])
            await asyncio.sleep(0.05)

    async def check_invariants(self) -> None:
        await check_invariants(self.fetch)


def new_tenant() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


@contextlib.asynccontextmanager
async def running_ledgers(
    kafka_bootstrap: str,
    postgres_dsn: str,
    home: Path,
    *,
    instances: int = 1,
    kafka: KafkaSettings | None = None,
    **overrides: Any,
) -> AsyncIterator[Ledgers]:
    """``instances`` ledgers sharing a fresh database and fresh topics (or ``kafka``'s)."""
    signer = TokenSigner.generate()
    jwks = home / "jwks.json"
    jwks.write_text(json.dumps(signer.jwks()))
    kafka = kafka or KafkaSettings(
        bootstrap=kafka_bootstrap,
        topic_prefix=f"l{uuid.uuid4().hex[:8]}.",
        session_timeout_ms=2000,
        heartbeat_interval_ms=300,
    )
    async with temporary_database(postgres_dsn, prefix="ledger_test") as dsn:
        ledgers = Ledgers(kafka=kafka, dsn=dsn, signer=signer, jwks=jwks, overrides=overrides)
        try:
            for _ in range(instances):
                await ledgers.start()
            async with (
                Bus(service="tests", kafka=kafka) as bus,
                httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{ledgers.apps[0].http_port}", timeout=30
                ) as http,
            ):
                ledgers.bus, ledgers.http = bus, http
                yield ledgers
        finally:
            for app in list(ledgers.apps):
                await ledgers.stop(app)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def ledger(
    kafka_bootstrap: str, postgres_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Ledgers]:
    home = tmp_path_factory.mktemp("ledger")
    async with running_ledgers(kafka_bootstrap, postgres_dsn, home) as running:
        yield running


@pytest.fixture
def machine_dsn(postgres_dsn: str) -> Iterator[None]:
    """Points the state machines of :mod:`.machines` at the test server."""
    DSN[:] = [postgres_dsn]
    yield
    DSN.clear()
