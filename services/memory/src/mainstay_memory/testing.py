"""A memory service on loopback for other packages' tests: a real ``MemoryApp`` on a
temporary database, trusting a freshly generated signer."""

from __future__ import annotations

import contextlib
import json
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mainstay_common.auth import TokenSigner
from mainstay_common.settings import AuthSettings, KafkaSettings, PostgresSettings, RetrySettings
from mainstay_common.testing import temporary_database
from mainstay_memory.app import MemoryApp
from mainstay_memory.settings import CurationSettings, MemorySettings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

__all__ = ["RunningMemory", "running_memory"]


@dataclass(frozen=True)
class RunningMemory:
    """Where the service listens, and the signer whose tokens it accepts."""

    target: str
    signer: TokenSigner
    topic_prefix: str = ""

    def token(self, tenant: str, *scopes: str, subject: str = "agent") -> str:
        return self.signer.mint(subject=subject, tenant=tenant, scopes=list(scopes))


@contextlib.asynccontextmanager
async def running_memory(
    kafka_bootstrap: str, postgres_dsn: str, home: Path, **overrides: Any
) -> AsyncIterator[RunningMemory]:
    """The memory service on free ports, its JWKS file in ``home``, until the block ends;
    ``overrides`` replace fields of its settings."""
    prefix = f"m{uuid.uuid4().hex[:8]}."
    signer = TokenSigner.generate()
    (home / "jwks.json").write_text(json.dumps(signer.jwks()))
    async with temporary_database(postgres_dsn, prefix="memory_test") as dsn:
        fields: dict[str, Any] = {
            "grpc_port": 0,
            "http_port": 0,
            "shutdown_grace_s": 2.0,
            "kafka": KafkaSettings(
                bootstrap=kafka_bootstrap,
                topic_prefix=prefix,
                session_timeout_ms=2000,
                heartbeat_interval_ms=300,
            ),
            "postgres": PostgresSettings(dsn=dsn),
            "retry": RetrySettings(tier_delays_s=[0.2, 0.4, 0.6]),
            "auth": AuthSettings(jwks_file=str(home / "jwks.json")),
            "curation": CurationSettings(sweep_interval_s=0.2),
        }
        async with MemoryApp(MemorySettings(**{**fields, **overrides})) as app:
            yield RunningMemory(
                target=f"127.0.0.1:{app.grpc_port}", signer=signer, topic_prefix=prefix
            )
