"""Configuration of the tools gateway (``TOOLS_GATEWAY_*``, plus the shared ``MAINSTAY_*`` groups)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from mainstay_common.settings import ServiceSettings

__all__ = ["BreakerSettings", "BuiltinSettings", "ToolsGatewaySettings"]


class BreakerSettings(BaseSettings):
    """The circuit breaker every tool gets (``TOOLS_GATEWAY_BREAKER_*``)."""

    model_config = SettingsConfigDict(env_prefix="TOOLS_GATEWAY_BREAKER_", extra="ignore")

    failure_threshold: int = Field(
        default=5, ge=1, description="Consecutive TRANSIENT failures that open the circuit."
    )
    open_s: float = Field(
        default=30.0, gt=0, description="How long an open circuit refuses calls before a probe."
    )


class BuiltinSettings(BaseSettings):
    """The gateway's own tools (``TOOLS_GATEWAY_BUILTIN_*``)."""

    model_config = SettingsConfigDict(env_prefix="TOOLS_GATEWAY_BUILTIN_", extra="ignore")

    enabled: bool = Field(default=True, description="Register calculator and http_fetch at start.")
    http_fetch_allow_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts http_fetch may reach (exact names, or '*.example.com'); empty: none.",
    )
    http_fetch_max_bytes: int = Field(default=65_536, ge=1, le=10_000_000)


class ToolsGatewaySettings(ServiceSettings):
    """One tools gateway instance."""

    model_config = SettingsConfigDict(env_prefix="TOOLS_GATEWAY_", extra="ignore")

    service_name: str = "tools-gateway"
    http_port: int = Field(default=8102, ge=0, le=65535)
    registry_file: str | None = Field(
        default=None,
        description="YAML or JSON file of tools ({'tools': [...]}) registered at start.",
    )
    vault_keys: list[SecretStr] = Field(
        default_factory=list,
        description="Fernet keys (urlsafe base64 of 32 bytes) encrypting credentials at rest;"
        " the first encrypts, all decrypt (rotation). Without one, credentials cannot be stored.",
    )
    vault_key_file: str | None = Field(
        default=None,
        description="A file holding one Fernet key per line, read when vault_keys is empty"
        " (./dev up writes one under .mainstay/).",
    )
    max_output_bytes: int = Field(
        default=262_144, ge=1, le=100_000_000, description="Largest tool output returned."
    )
    claim_lease_s: float = Field(
        default=300.0,
        gt=0,
        description="How long an in-flight call holds its idempotency key before another"
        " delivery may take it over (after a crash mid-call).",
    )
    registry_refresh_s: float = Field(
        default=5.0, gt=0, description="Registry cache refresh, besides change notifications."
    )
    mcp_stdio_enabled: bool = Field(
        default=False,
        description="Allow MCP servers over stdio: their command runs as a process on the"
        " gateway's host, so only enable it where every tools admin may do that.",
    )
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    builtin: BuiltinSettings = Field(default_factory=BuiltinSettings)
