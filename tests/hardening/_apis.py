"""Every service of the mesh on loopback (real broker and PostgreSQL), for the hardening tests.

One operator key signs every token: each service trusts it through its JWKS file,
so a test mints a token with exactly the scopes it wants. :func:`running_services`
starts the services with an HTTP API (and memory, whose sync API is gRPC); each
is described by a :class:`RunningService` with its base URL and the scopes that
reach its handlers.

Also here: :func:`error_problem`, the one judgement every test makes about a
rejection: does its body, in the Mainstay error shape, name the problem?
"""

from __future__ import annotations

import contextlib
import json
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography.fernet import Fernet
from hypothesis import HealthCheck, Phase, settings

from mainstay_common.auth import TokenSigner
from mainstay_common.settings import (
    AuthSettings,
    HeartbeatSettings,
    KafkaSettings,
    PostgresSettings,
    RetrySettings,
)
from mainstay_common.testing import temporary_database
from mainstay_execution.app import ExecutionApp
from mainstay_execution.settings import ExecutionSettings
from mainstay_identity.app import IdentityApp
from mainstay_identity.settings import IdentitySettings
from mainstay_ledger.app import LedgerApp
from mainstay_ledger.settings import LedgerSettings
from mainstay_memory.app import MemoryApp
from mainstay_memory.settings import CurationSettings, MemorySettings
from mainstay_supervisor.app import SupervisorApp
from mainstay_supervisor.settings import SupervisorSettings
from mainstay_tools_gateway.app import ToolsGatewayApp
from mainstay_tools_gateway.settings import ToolsGatewaySettings
from mainstay_tools_gateway.store.vault import Vault


def explore(examples: int) -> settings:
    """Hypothesis settings for sending ``examples`` generated requests to a live service:
    the same requests every run (derandomized, no example database), no deadline (the
    service answers in its own time), no shrinking (a problem is reported as found)."""
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )


if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Mapping
    from pathlib import Path

    from mainstay_common.service import ServiceApp

__all__ = [
    "TENANT",
    "Operator",
    "RunningService",
    "error_problem",
    "explore",
    "new_kafka",
    "running_services",
]

TENANT = "acme"
"""The tenant of every token the tests mint."""

# The scopes that let a caller reach every handler of each service.
_SCOPES: dict[str, tuple[str, ...]] = {
    "identity": ("identity:admin",),
    "ledger": ("ledger:read", "ledger:admin"),
    "supervisor": ("supervisor:read", "supervisor:admin"),
    "tools-gateway": ("tools:admin", "tools:audit", "tools:call:*"),
    "execution": ("execution:submit",),
    "memory": ("memory:read:*", "memory:write:*"),
}


@dataclass
class Operator:
    """Signs every token of the run; its JWKS file is what each service trusts."""

    signer: TokenSigner
    jwks: Path

    @classmethod
    def create(cls, home: Path) -> Operator:
        signer = TokenSigner.generate()
        jwks = home / "jwks.json"
        jwks.write_text(json.dumps(signer.jwks()))
        return cls(signer=signer, jwks=jwks)

    def token(self, scopes: Iterable[str], *, tenant: str = TENANT, subject: str = "ops") -> str:
        return self.signer.mint(subject=subject, tenant=tenant, scopes=list(scopes))

    def headers(
        self, scopes: Iterable[str], *, tenant: str = TENANT, subject: str = "ops"
    ) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(scopes, tenant=tenant, subject=subject)}"}


@dataclass
class RunningService:
    name: str
    app: ServiceApp
    scopes: tuple[str, ...]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.app.http_port}"


def new_kafka(kafka_bootstrap: str, letter: str = "h") -> KafkaSettings:
    """Kafka settings with topics of their own."""
    return KafkaSettings(
        bootstrap=kafka_bootstrap,
        topic_prefix=f"{letter}{uuid.uuid4().hex[:8]}.",
        session_timeout_ms=2000,
        heartbeat_interval_ms=300,
    )


def _common(kafka: KafkaSettings, dsn: str, operator: Operator, **extra: Any) -> dict[str, Any]:
    return {
        "http_port": 0,
        "shutdown_grace_s": 2.0,
        "kafka": kafka,
        "postgres": PostgresSettings(dsn=dsn),
        "auth": AuthSettings(jwks_file=str(operator.jwks)),
        "retry": RetrySettings(tier_delays_s=[0.2, 0.4]),
        "heartbeat": HeartbeatSettings(interval_s=0),
        **extra,
    }


ALL_SERVICES = ("identity", "ledger", "supervisor", "tools-gateway", "execution", "memory")


@contextlib.asynccontextmanager
async def running_services(
    kafka_bootstrap: str,
    postgres_dsn: str,
    operator: Operator,
    names: Iterable[str] = ALL_SERVICES,
    *,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> AsyncIterator[dict[str, RunningService]]:
    """The services ``names`` (in that order), each on its own topics; identity, ledger and
    execution on databases of their own, as their own tests run them."""
    overrides = overrides or {}
    running: dict[str, RunningService] = {}
    async with contextlib.AsyncExitStack() as stack:
        for name in names:
            extra = dict(overrides.get(name, {}))
            kafka = new_kafka(kafka_bootstrap)
            app: ServiceApp
            if name == "identity":
                dsn = await stack.enter_async_context(
                    temporary_database(postgres_dsn, prefix="identity_test")
                )
                app = IdentityApp(
                    IdentitySettings(
                        **_common(kafka, dsn, operator),
                        key_secrets=[Fernet.generate_key().decode()],
                        **extra,
                    )
                )
            elif name == "ledger":
                dsn = await stack.enter_async_context(
                    temporary_database(postgres_dsn, prefix="ledger_test")
                )
                app = LedgerApp(LedgerSettings(**_common(kafka, dsn, operator), **extra))
            elif name == "supervisor":
                app = SupervisorApp(
                    SupervisorSettings(**_common(kafka, postgres_dsn, operator), **extra)
                )
            elif name == "tools-gateway":
                app = ToolsGatewayApp(
                    ToolsGatewaySettings(
                        **_common(kafka, postgres_dsn, operator),
                        vault_keys=[Vault.generate_key()],
                        **extra,
                    )
                )
            elif name == "execution":
                dsn = await stack.enter_async_context(
                    temporary_database(postgres_dsn, prefix="execution_test")
                )
                app = ExecutionApp(
                    ExecutionSettings(**_common(kafka, dsn, operator), ledger=False, **extra)
                )
            elif name == "memory":
                app = MemoryApp(
                    MemorySettings(
                        **_common(kafka, postgres_dsn, operator),
                        grpc_port=0,
                        curation=CurationSettings(sweep_interval_s=0.5),
                        **extra,
                    )
                )
            else:
                raise ValueError(f"no such service: {name}")
            await stack.enter_async_context(app)
            running[name] = RunningService(name=name, app=app, scopes=_SCOPES[name])
        yield running


def error_problem(status: int, body: bytes, content_type: str) -> str | None:
    """What is wrong with a rejection's body, or None when it names the problem.

    The Mainstay shape is ``{"error": {"type": <name>, "message": <text>}}``; the
    message must say something (a bare status phrase or "internal error" does not).
    """
    if "json" not in content_type:
        return f"a {status} answered {content_type or 'no content type'}, not the error shape"
    try:
        document = json.loads(body)
    except ValueError:
        return f"a {status} answered a body that is not JSON: {body[:200]!r}"
    error = document.get("error") if isinstance(document, dict) else None
    if isinstance(error, str) and isinstance(document.get("error_description"), str):
        # OAuth 2.0's own error shape (RFC 6749 section 5.2), which token clients expect.
        error = {"type": error, "message": document["error_description"]}
    if not isinstance(error, dict):
        return f"a {status} answered no 'error' object: {document!r:.300}"
    kind, message = error.get("type"), error.get("message")
    if not isinstance(kind, str) or not kind:
        return f"a {status} answered an error without a type: {error!r:.300}"
    if not isinstance(message, str) or len(message.strip()) < 8:
        return f"a {status} answered an error whose message names nothing: {error!r:.300}"
    if message.strip().lower() in {"internal error", "bad request", "not found", "error"}:
        return f"a {status} answered only a generic message: {error!r:.300}"
    return None
