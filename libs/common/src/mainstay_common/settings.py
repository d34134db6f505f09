"""Settings shared by every service.

Each group reads its own environment prefix, so a platform team sets
``MAINSTAY_KAFKA_BOOTSTRAP`` once for the whole mesh, while a service's own
settings class (``env_prefix="MAINSTAY_<SERVICE>_"``) nests these groups and
adds what only it needs. Nothing here is built at import time: a service's
``create_app(settings)`` receives a constructed instance, so tests pass their own.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Sequence  # noqa: TC003 - pydantic resolves annotations
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "AuthSettings",
    "HeartbeatSettings",
    "KafkaSettings",
    "PostgresSettings",
    "RetrySettings",
    "ServiceSettings",
    "TelemetrySettings",
    "secret_values",
]


class KafkaSettings(BaseSettings):
    """Where the broker is and how to talk to it (``MAINSTAY_KAFKA_*``)."""

    model_config = SettingsConfigDict(env_prefix="MAINSTAY_KAFKA_", extra="ignore")

    bootstrap: str = Field(
        default="127.0.0.1:19092",
        description="Comma-separated host:port list of the Kafka bootstrap servers.",
    )
    topic_prefix: str = Field(
        default="",
        description="Prefix put before every topic and consumer group (isolates tests or tenants of one cluster).",
    )
    request_timeout_s: float = Field(default=30.0, gt=0)
    session_timeout_ms: int = Field(
        default=10_000,
        ge=1000,
        description="Consumer session timeout: how soon a dead member's partitions move to another.",
    )
    heartbeat_interval_ms: int = Field(default=3_000, ge=100)
    max_batch: int = Field(
        default=200,
        ge=1,
        description="Most records a consumer handles per poll (one transaction and one commit each).",
    )
    poll_timeout_ms: int = Field(
        default=25,
        ge=1,
        description="How long an idle consumer waits for records before polling again.",
    )
    fetch_max_wait_ms: int = Field(
        default=100,
        ge=1,
        le=30_000,
        description="Longest the broker may hold a fetch open while waiting for data. Kafka"
        " answers as soon as data arrives, so there it only paces idle polling; the embedded"
        " broker always waits this long, so there it also bounds delivery latency.",
    )
    idle_fetch_max_wait_ms: int = Field(
        default=500,
        ge=1,
        le=30_000,
        description="Fetch wait of a consumer that has had no record for idle_after_s; its"
        " next record switches it back to fetch_max_wait_ms. Idle consumers then cost the"
        " broker less; on the embedded broker the first record after a quiet spell may"
        " wait this long. Equal to fetch_max_wait_ms: off.",
    )
    idle_after_s: float = Field(
        default=2.0,
        gt=0,
        description="How long a consumer goes without records before it counts as idle.",
    )
    max_message_bytes: int = Field(
        default=1_048_576,
        ge=5_120,
        description="Largest record a producer sends (key, value and headers): the"
        " producers' max_request_size. A message that would not fit, with 4096 bytes"
        " kept for headers added on the way, is refused where it is built, naming its"
        " size, so it never reaches an outbox. Keep it at or below the broker's"
        " message.max.bytes (about 1 MiB by default on Kafka).",
    )
    replication_factor: int = Field(
        default=1,
        ge=1,
        description="Replicas of topics the bus creates (retry tiers, DLQs); 3 on a real cluster.",
    )
    idempotent_producer: bool = Field(
        default=False,
        description="Enable the idempotent producer; only when the broker supports it (the embedded one does not).",
    )


class PostgresSettings(BaseSettings):
    """PostgreSQL connection (``MAINSTAY_POSTGRES_*``)."""

    model_config = SettingsConfigDict(env_prefix="MAINSTAY_POSTGRES_", extra="ignore")

    dsn: str = Field(default="postgresql://postgres@127.0.0.1:15432/postgres")
    pool_min_size: int = Field(default=1, ge=0)
    pool_max_size: int = Field(default=10, ge=1)
    command_timeout_s: float = Field(default=30.0, gt=0)
    close_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="How long closing waits for connections still in use before it"
        " terminates them (a stuck query must not stop a shutdown).",
    )


class RetrySettings(BaseSettings):
    """Retry tiers and blocking retry (``MAINSTAY_RETRY_*``)."""

    model_config = SettingsConfigDict(env_prefix="MAINSTAY_RETRY_", extra="ignore")

    tier_delays_s: list[float] = Field(
        default=[1.0, 10.0, 60.0],
        description="Delay of each retry tier <group>.retry.<n>; the length is the number of tiers.",
    )
    blocking_attempts: int = Field(
        default=5, ge=1, description="Attempts of a blocking-retry consumer before the DLQ."
    )
    blocking_backoff_s: float = Field(default=0.2, gt=0)
    blocking_backoff_max_s: float = Field(default=10.0, gt=0)
    redelivery_backoff_s: float = Field(
        default=1.0,
        gt=0,
        description="Pause before a message is tried again when even its retry or DLQ publish failed.",
    )

    @field_validator("tier_delays_s")
    @classmethod
    def _delays_are_positive(cls, value: list[float]) -> list[float]:
        if any(delay < 0 for delay in value):
            raise ValueError("retry tier delays must be >= 0 seconds")
        return value


class TelemetrySettings(BaseSettings):
    """Traces, metrics and logs (``MAINSTAY_TELEMETRY_*``)."""

    model_config = SettingsConfigDict(env_prefix="MAINSTAY_TELEMETRY_", extra="ignore")

    otlp_endpoint: str | None = Field(
        default=None, description="OTLP/gRPC collector address; unset means no exporter."
    )
    log_level: str = "INFO"
    log_json: bool = True


class AuthSettings(BaseSettings):
    """Token verification (``MAINSTAY_AUTH_*``)."""

    model_config = SettingsConfigDict(env_prefix="MAINSTAY_AUTH_", extra="ignore")

    jwks_url: str | None = Field(default=None, description="HTTP(S) URL of the JWKS document.")
    jwks_file: str | None = Field(
        default=".mainstay/jwks.json",
        description="Path of a JWKS file, used when no URL is set. Nothing writes the default"
        " path: ./dev up sets jwks_url to the identity service's JWKS instead. Without a URL"
        " and without this file a service still starts, and every verification fails as an"
        " outage (DependencyUnavailable: HTTP 503, gRPC UNAVAILABLE) naming the file.",
    )
    issuer: str = "mainstay-identity"
    audience: str = "mainstay"
    leeway_s: float = Field(default=5.0, ge=0)
    jwks_cache_s: float = Field(default=300.0, gt=0)
    revocations_url: str | None = Field(
        default=None,
        description="The identity service's revocation feed (.../v1/revocations); when set,"
        " revoked tokens and clients are refused.",
    )
    revocations_poll_s: float = Field(
        default=5.0, gt=0, description="How often the revocation feed is read (at most)."
    )


class HeartbeatSettings(BaseSettings):
    """The heartbeats every instance sends the supervisor (``MAINSTAY_HEARTBEAT_*``)."""

    model_config = SettingsConfigDict(env_prefix="MAINSTAY_HEARTBEAT_", extra="ignore")

    interval_s: float = Field(
        default=5.0,
        ge=0,
        description="How often an instance sends a heartbeat; 0 sends none. The supervisor's"
        " SUPERVISOR_HEARTBEAT_INTERVAL_S should match.",
    )


def _default_instance_id() -> str:
    return f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


class ServiceSettings(BaseSettings):
    """What every service has; a service subclasses it with its own ``env_prefix``."""

    model_config = SettingsConfigDict(env_prefix="MAINSTAY_", extra="ignore")

    service_name: str = "mainstay"
    instance_id: str = Field(default_factory=_default_instance_id)
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8100, ge=0, le=65535)
    shutdown_grace_s: float = Field(
        default=20.0, gt=0, description="How long in-flight handlers may run on shutdown."
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    postgres: PostgresSettings = Field(default_factory=PostgresSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    heartbeat: HeartbeatSettings = Field(default_factory=HeartbeatSettings)


def secret_values(values: Sequence[SecretStr], file: str | None, *, what: str) -> list[str]:
    """Secrets given inline (``values``), else one per non-blank line of ``file``.

    ``[]`` when neither is set; ``ValueError`` naming ``what`` when the file
    cannot be read.
    """
    if values:
        return [value.get_secret_value() for value in values]
    if not file:
        return []
    try:
        text = Path(file).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read the {what} file {file}: {exc.strerror}") from exc
    return [line.strip() for line in text.splitlines() if line.strip()]
