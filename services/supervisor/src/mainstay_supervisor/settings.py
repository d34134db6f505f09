"""Configuration of the supervisor (``SUPERVISOR_*``, plus the shared ``MAINSTAY_*`` groups)."""

from __future__ import annotations

from pydantic import Field, model_validator
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

    @model_validator(mode="after")
    def _dead_after_stale(self) -> SupervisorSettings:
        if self.dead_after_s <= self.heartbeat_interval_s * self.stale_after_heartbeats:
            raise ValueError(
                "dead_after_s: must be longer than heartbeat_interval_s * stale_after_heartbeats"
            )
        return self
