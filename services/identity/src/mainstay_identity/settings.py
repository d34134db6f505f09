"""Configuration of the identity service (``IDENTITY_*``, plus the shared ``MAINSTAY_*`` groups)."""

from __future__ import annotations

from typing import Literal

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
    operator_token_ttl_s: int = Field(
        default=86_400,
        ge=30,
        description="Lifetime of operator tokens minted by mainstay_identity.bootstrap (the"
        " admin token of ./dev up); rotated keys stay published at least this long.",
    )
    approval_sweep_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="How often approvals past their deadline are looked for and expired.",
    )
    # The email bridge: outbound copies of mail for principals with an email
    # address, and an SMTP listener for the replies (and new mail) of humans.
    mail_domain: str = Field(
        default="mainstay.localhost",
        min_length=1,
        pattern=r"^[A-Za-z0-9.-]+$",
        description="The domain of the bridge's addresses: replies come back to"
        " reply+<token>@<domain>, new mail to <name>+<tenant>@<domain>.",
    )
    smtp_host: str | None = Field(
        default=None, description="The SMTP server outbound email goes to; unset: no email."
    )
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_security: Literal["auto", "none", "starttls", "tls"] = Field(
        default="auto",
        description="auto: STARTTLS when the server offers it; tls: TLS from the start.",
    )
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_s: float = Field(default=30.0, gt=0)
    email_from: str = Field(
        default="",
        max_length=320,
        description="The From address of outbound email; empty: mainstay@<mail_domain>.",
    )
    smtp_listen_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Port of the inbound SMTP listener; unset: no listener (0: any free port).",
    )
    smtp_listen_host: str = "127.0.0.1"
    smtp_max_message_bytes: int = Field(default=1_000_000, ge=10_000)
