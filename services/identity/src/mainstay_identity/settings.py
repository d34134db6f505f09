"""Configuration of the identity service (``IDENTITY_*``, plus the shared ``MAINSTAY_*`` groups)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from mainstay_common.auth import DEFAULT_AUDIENCE, DEFAULT_ISSUER
from mainstay_common.settings import ServiceSettings

__all__ = ["IdentitySettings"]


class IdentitySettings(ServiceSettings):
    """One identity service instance."""

    model_config = SettingsConfigDict(env_prefix="IDENTITY_", extra="ignore")

    service_name: str = "identity"
    http_port: int = Field(default=8103, ge=0, le=65535)
    issuer: str = Field(default=DEFAULT_ISSUER, min_length=1)
    audience: str = Field(default=DEFAULT_AUDIENCE, min_length=1)
    token_ttl_s: int = Field(
        default=900, ge=30, le=86_400, description="Lifetime of the access tokens issued."
    )
    key_secrets: list[SecretStr] = Field(
        default_factory=list,
        description="Fernet keys encrypting the signing keys at rest; the first encrypts,"
        " all decrypt (rotation).",
    )
    key_secret_file: str | None = Field(
        default=None,
        description="A file with one Fernet key per line, read when key_secrets is empty"
        " (./dev up writes one under .mainstay/).",
    )
    failed_attempts_per_minute: int = Field(
        default=10,
        ge=1,
        description="Failed client authentications allowed per client and minute before"
        " further attempts are refused for the rest of the minute.",
    )
