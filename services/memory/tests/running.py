"""A memory service on loopback ports (real PostgreSQL, broker and gRPC), as the tests run it."""

from __future__ import annotations

import contextlib
import json
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from mainstay.memory.v1 import memory_pb2 as pb
from mainstay.memory.v1 import memory_pb2_grpc
from mainstay_common.auth import TokenSigner
from mainstay_common.grpc import create_channel
from mainstay_common.settings import AuthSettings, KafkaSettings, PostgresSettings, RetrySettings
from mainstay_memory.app import MemoryApp
from mainstay_memory.settings import CurationSettings, MemorySettings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable
    from pathlib import Path

__all__ = ["Memory", "running_memory"]


@dataclass
class Memory:
    """What a test needs to talk to the running service."""

    app: MemoryApp
    stub: memory_pb2_grpc.MemoryServiceStub
    signer: TokenSigner
    kafka: KafkaSettings

    def token(self, tenant: str, scopes: Iterable[str], subject: str = "agent") -> str:
        return self.signer.mint(subject=subject, tenant=tenant, scopes=list(scopes))

    def auth(
        self, tenant: str, agent: str = "agent-1", ops: Iterable[str] = ("read", "write")
    ) -> list[tuple[str, str]]:
        token = self.token(tenant, [f"memory:{op}:{agent}" for op in ops], subject=agent)
        return [("authorization", f"Bearer {token}")]

    async def remember(
        self, tenant: str, content: str, *, agent: str = "agent-1", **fields: Any
    ) -> pb.RememberResponse:
        scope = fields.pop("scope", None) or pb.Scope(
            tenant=tenant, agent_id=agent, user_id="user-1"
        )
        request = pb.RememberRequest(
            scope=scope, content=content, kind=fields.pop("kind", pb.KIND_FACT), **fields
        )
        return await self.stub.Remember(request, metadata=self.auth(tenant, agent))

    async def recall(
        self, tenant: str, query: str, *, agent: str = "agent-1", **fields: Any
    ) -> pb.RecallResponse:
        scope = fields.pop("scope", None) or pb.Scope(
            tenant=tenant, agent_id=agent, user_id="user-1"
        )
        return await self.stub.Recall(
            pb.RecallRequest(scope=scope, query=query, **fields), metadata=self.auth(tenant, agent)
        )


M = TypeVar("M", bound=Memory)


@contextlib.asynccontextmanager
async def running_memory(
    kafka_bootstrap: str,
    postgres_dsn: str,
    home: Path,
    *,
    kind: type[M] = Memory,  # type: ignore[assignment]
    **settings: Any,
) -> AsyncIterator[M]:
    """Start a memory service whose tokens ``Memory.signer`` mints; ``settings`` override."""
    signer = TokenSigner.generate()
    (home / "jwks.json").write_text(json.dumps(signer.jwks()))
    kafka = KafkaSettings(
        bootstrap=kafka_bootstrap,
        topic_prefix=f"m{uuid.uuid4().hex[:8]}.",
        session_timeout_ms=2000,
        heartbeat_interval_ms=300,
    )
    config = MemorySettings(
        **{
            "grpc_port": 0,
            "http_port": 0,
            "shutdown_grace_s": 2.0,
            "kafka": kafka,
            "postgres": PostgresSettings(dsn=postgres_dsn),
            "retry": RetrySettings(tier_delays_s=[0.2, 0.4, 0.6]),
            "auth": AuthSettings(jwks_file=str(home / "jwks.json")),
            "curation": CurationSettings(sweep_interval_s=0.2),
            **settings,
        }
    )
    async with MemoryApp(config) as app:
        channel = create_channel(f"127.0.0.1:{app.grpc_port}")
        try:
            yield kind(
                app=app, stub=memory_pb2_grpc.MemoryServiceStub(channel), signer=signer, kafka=kafka
            )
        finally:
            await channel.close()
