"""A running tools gateway (real PostgreSQL, broker and HTTP on loopback) and a real tool server."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import pytest_asyncio

from mainstay_common.auth import TokenSigner
from mainstay_common.settings import AuthSettings, KafkaSettings, PostgresSettings, RetrySettings
from mainstay_tools_gateway.app import ToolsGatewayApp
from mainstay_tools_gateway.settings import (
    BreakerSettings,
    BuiltinSettings,
    ToolsGatewaySettings,
)
from mainstay_tools_gateway.store.vault import Vault

from .toolserver import ToolServer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable
    from pathlib import Path

    import pytest

ADMIN_SCOPES = ("tools:admin", "tools:audit", "tools:call:*")


@dataclass
class Gateway:
    """What a test needs to talk to the running gateway."""

    app: ToolsGatewayApp
    signer: TokenSigner
    kafka: KafkaSettings
    tools: ToolServer
    http: httpx.AsyncClient

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.app.http_port}"

    def token(self, tenant: str, scopes: Iterable[str], subject: str = "agent-1") -> str:
        return self.signer.mint(subject=subject, tenant=tenant, scopes=list(scopes))

    def headers(
        self, tenant: str, scopes: Iterable[str], subject: str = "agent-1"
    ) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(tenant, scopes, subject)}"}

    def admin_headers(self, tenant: str = "acme") -> dict[str, str]:
        return self.headers(tenant, ADMIN_SCOPES, subject="admin")

    async def register(self, spec: dict[str, Any]) -> dict[str, Any]:
        response = await self.http.put(
            f"/v1/tools/{spec['name']}", json=spec, headers=self.admin_headers()
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def invoke(
        self,
        tool: str,
        arguments: dict[str, Any],
        *,
        tenant: str = "acme",
        subject: str = "agent-1",
        scopes: Iterable[str] | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        response = await self.http.post(
            f"/v1/tools/{tool}/invoke",
            json={"arguments": arguments, **fields},
            headers=self.headers(tenant, scopes or [f"tools:call:{tool}"], subject),
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def audit(
        self, tenant: str, *, count: int, params: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """The tenant's audit rows, once ``count`` are there (synchronous calls write theirs
        just behind the answer), newest first."""
        headers = self.headers(tenant, ["tools:audit"], subject="auditor")
        rows: list[dict[str, Any]] = []
        for _ in range(100):
            response = await self.http.get("/v1/audit", params=params or {}, headers=headers)
            assert response.status_code == 200, response.text
            rows = response.json()["calls"]
            if len(rows) >= count:
                break
            await asyncio.sleep(0.05)
        return rows

    def http_tool(self, name: str, path: str, **fields: Any) -> dict[str, Any]:
        """The spec of an HTTP tool on the test's tool server."""
        http = {"url": f"{self.tools.base_url}{path}", **fields.pop("http", {})}
        return {"name": name, "kind": "http", "http": http, **fields}


def unique(name: str) -> str:
    return f"{name}_{uuid.uuid4().hex[:6]}"


def gateway_settings(
    *, kafka: KafkaSettings, postgres_dsn: str, jwks: Path, vault_key: str, **extra: Any
) -> ToolsGatewaySettings:
    extra = {"shutdown_grace_s": 2.0, **extra}
    return ToolsGatewaySettings(
        http_port=0,
        kafka=kafka,
        postgres=PostgresSettings(dsn=postgres_dsn),
        retry=RetrySettings(tier_delays_s=[0.2, 0.4, 0.6]),
        auth=AuthSettings(jwks_file=str(jwks)),
        vault_keys=[vault_key],
        breaker=BreakerSettings(failure_threshold=3, open_s=1.0),
        builtin=BuiltinSettings(http_fetch_allow_hosts=["127.0.0.1"]),
        mcp_stdio_enabled=True,
        **extra,
    )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def tool_server() -> AsyncIterator[ToolServer]:
    async with ToolServer() as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gateway(
    kafka_bootstrap: str,
    postgres_dsn: str,
    tmp_path_factory: pytest.TempPathFactory,
    tool_server: ToolServer,
) -> AsyncIterator[Gateway]:
    home = tmp_path_factory.mktemp("gateway-auth")
    signer = TokenSigner.generate()
    (home / "jwks.json").write_text(json.dumps(signer.jwks()))
    kafka = KafkaSettings(
        bootstrap=kafka_bootstrap,
        topic_prefix=f"g{uuid.uuid4().hex[:8]}.",
        session_timeout_ms=2000,
        heartbeat_interval_ms=300,
    )
    settings = gateway_settings(
        kafka=kafka,
        postgres_dsn=postgres_dsn,
        jwks=home / "jwks.json",
        vault_key=Vault.generate_key(),
    )
    async with (
        ToolsGatewayApp(settings) as app,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}", timeout=30) as http,
    ):
        yield Gateway(app=app, signer=signer, kafka=kafka, tools=tool_server, http=http)
