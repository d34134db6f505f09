"""A running identity service for tests: real PostgreSQL and HTTP on loopback.

Used by the identity service's own tests and by services that talk to it
(the ledger asks for approvals through it).
"""

from __future__ import annotations

import contextlib
import json
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
from cryptography.fernet import Fernet

from mainstay_common.auth import TokenSigner
from mainstay_common.settings import AuthSettings, KafkaSettings, PostgresSettings
from mainstay_common.testing import read_records, temporary_database
from mainstay_identity.app import IdentityApp
from mainstay_identity.settings import IdentitySettings

__all__ = ["Identity", "new_tenant", "running_identity"]

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from mainstay_contracts import TopicSpec


@dataclass
class Identity:
    app: IdentityApp
    kafka: KafkaSettings
    admin: TokenSigner
    """Signs the operators' admin tokens (the JWKS file the service trusts)."""
    http: httpx.AsyncClient

    def admin_headers(
        self, tenant: str, scopes: tuple[str, ...] = ("identity:admin",)
    ) -> dict[str, str]:
        token = self.admin.mint(subject="operator", tenant=tenant, scopes=list(scopes))
        return {"Authorization": f"Bearer {token}"}

    async def register(self, tenant: str, name: str, scopes: list[str], **fields: Any) -> str:
        """Register a principal and return its new client secret."""
        body = {"kind": "agent", "scopes": scopes, **fields}
        response = await self.http.put(
            f"/v1/tenants/{tenant}/principals/{name}", json=body, headers=self.admin_headers(tenant)
        )
        assert response.status_code in {200, 201}, response.text
        secret = await self.http.post(
            f"/v1/tenants/{tenant}/principals/{name}/secret", headers=self.admin_headers(tenant)
        )
        assert secret.status_code == 200, secret.text
        return str(secret.json()["client_secret"])

    async def bearer(
        self, tenant: str, name: str, scopes: list[str] | None = None, **fields: Any
    ) -> dict[str, str]:
        """Register ``name`` and return the ``Authorization`` header of a token it got."""
        secret = await self.register(tenant, name, scopes or [], **fields)
        answer = await self.token(f"{tenant}/{name}", secret)
        return {"Authorization": f"Bearer {answer.json()['access_token']}"}

    async def events(
        self,
        spec: TopicSpec[Any],
        count: int,
        accept: Callable[[dict[str, Any]], bool],
        wait_s: float = 20.0,
    ) -> list[dict[str, Any]]:
        """Up to ``count`` events of ``spec`` this service published that ``accept`` keeps."""
        records = await read_records(
            self.kafka.bootstrap,
            f"{self.kafka.topic_prefix}{spec.name}",
            count=count,
            accept=lambda r: accept(json.loads(r.value)),
            wait_s=wait_s,
        )
        return [json.loads(r.value) for r in records]

    async def token(self, client_id: str, secret: str, **form: str) -> httpx.Response:
        return await self.http.post(
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": secret,
                **form,
            },
        )


def new_tenant() -> str:
    return f"tenant-{uuid.uuid4().hex[:8]}"


@contextlib.asynccontextmanager
async def running_identity(
    kafka_bootstrap: str, postgres_dsn: str, home: Path, **overrides: Any
) -> AsyncIterator[Identity]:
    """An identity service on a database of its own (``overrides`` are settings)."""
    # A database of its own: signing keys are encrypted with this instance's
    # key secret, and another run's keys must not be in the way.
    admin = TokenSigner.generate()
    (home / "jwks.json").write_text(json.dumps(admin.jwks()))
    async with temporary_database(postgres_dsn, prefix="identity_test") as dsn:
        settings = IdentitySettings(
            **{
                "http_port": 0,
                "shutdown_grace_s": 2.0,
                "kafka": KafkaSettings(
                    bootstrap=kafka_bootstrap,
                    topic_prefix=f"i{uuid.uuid4().hex[:8]}.",
                    session_timeout_ms=2000,
                    heartbeat_interval_ms=300,
                ),
                "postgres": PostgresSettings(dsn=dsn),
                "auth": AuthSettings(jwks_file=str(home / "jwks.json")),
                "key_secrets": [Fernet.generate_key().decode()],
                "token_ttl_s": 60,
                "failed_attempts_per_minute": 5,
                "approval_sweep_s": 0.2,
                **overrides,
            }
        )
        async with (
            IdentityApp(settings) as app,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}", timeout=30) as http,
        ):
            yield Identity(app=app, kafka=settings.kafka, admin=admin, http=http)
