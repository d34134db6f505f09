"""Configuration of the supervisor (``SUPERVISOR_*``, plus the shared ``MAINSTAY_*`` groups)."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from mainstay_common.settings import ServiceSettings

__all__ = ["SupervisorSettings"]


class SupervisorSettings(ServiceSettings):
    """One supervisor instance."""

    model_config = SettingsConfigDict(env_prefix="SUPERVISOR_", extra="ignore")

    service_name: str = "supervisor"
    http_port: int = Field(default=8105, ge=0, le=65535)
    heartbeat_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="How often service instances send heartbeats (MAINSTAY_HEARTBEAT_INTERVAL_S"
        " of the services should match).",
    )
    stale_after_heartbeats: int = Field(
        default=3,
        ge=1,
        description="An instance whose last heartbeat is older than this many intervals is stale.",
    )
    dead_after_s: float = Field(
        default=60.0,
        gt=0,
        description="An instance silent for longer than this is dead.",
    )

    default_step_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="The step timeout of a task whose agent is not registered here.",
    )
    task_retention_s: float = Field(
        default=86_400.0,
        gt=0,
        description="How long a finished task is kept in the supervisor's view.",
    )
    monitor_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="How often consumer lag, throughput and dead letters are read from the broker.",
    )
    scale_drain_s: float = Field(
        default=60.0,
        gt=0,
        description="Scaling signal: replicas enough to clear a backlog within this many seconds.",
    )
    scale_lag_per_replica: int = Field(
        default=1000,
        ge=1,
        description="Scaling signal while a group's capacity is unknown: a replica per this"
        " many messages of lag.",
    )
    scale_min_replicas: int = Field(default=1, ge=0, description="The least replicas advised.")
    identity_url: str = Field(
        default="http://127.0.0.1:8103",
        description="The identity service: its token endpoint signs the supervisor's mail to"
        " escalation contacts.",
    )
    mail_credentials: list[SecretStr] = Field(
        default_factory=list,
        description="Client credentials the supervisor mails escalation contacts with, one per"
        " tenant: '<tenant>/<name>:<client secret>' of a principal of that tenant.",
    )
    mail_credentials_file: str | None = Field(
        default=None,
        description="A file with one '<tenant>/<name>:<client secret>' per line, read when"
        " mail_credentials is empty.",
    )

    @model_validator(mode="after")
    def _dead_after_stale(self) -> SupervisorSettings:
        if self.dead_after_s <= self.heartbeat_interval_s * self.stale_after_heartbeats:
            raise ValueError(
                "dead_after_s: must be longer than heartbeat_interval_s * stale_after_heartbeats"
            )
        return self
