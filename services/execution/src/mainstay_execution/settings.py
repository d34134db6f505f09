"""Configuration of the execution service (``EXECUTION_*``, plus the shared ``MAINSTAY_*`` groups)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from mainstay_common.settings import ServiceSettings

__all__ = ["ExecutionSettings"]


class ExecutionSettings(ServiceSettings):
    """One execution instance."""

    model_config = SettingsConfigDict(env_prefix="EXECUTION_", extra="ignore")

    service_name: str = "execution"
    http_port: int = Field(default=8106, ge=0, le=65535)
    model_keys: list[SecretStr] = Field(
        default_factory=list,
        description="API keys of the model providers, one per entry: '<credential>=<key>', where"
        " <credential> is the name an agent's model entry gives as 'credential'.",
    )
    model_keys_file: str | None = Field(
        default=None,
        description="A file with one '<credential>=<key>' per line, read when model_keys is empty.",
    )
    ownership_check_s: float = Field(
        default=0.5,
        gt=0,
        description="How often an instance compares the partitions it is assigned with the"
        " task leases it holds (takes over new ones, lets lost ones go).",
    )
    retry_base_s: float = Field(
        default=0.5, gt=0, description="First backoff of a transient failure (full jitter)."
    )
    retry_max_s: float = Field(default=30.0, gt=0, description="Longest backoff.")
    max_attempts: int = Field(
        default=6, ge=1, description="Attempts of one model call before the next model is tried."
    )
    max_corrections: int = Field(
        default=2,
        ge=0,
        description="Malformed outputs (bad JSON, unknown tool, invalid arguments) a model may"
        " correct in a row before the next model in the chain is tried.",
    )
    circuit_failures: int = Field(
        default=5, ge=1, description="Failures in a row that open a model's circuit."
    )
    circuit_open_s: float = Field(
        default=30.0, gt=0, description="How long an open circuit refuses calls."
    )
