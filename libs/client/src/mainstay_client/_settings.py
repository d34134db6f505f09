"""Where the mesh is and who the caller is, from the environment (or given explicitly).

``MAINSTAY_TOKEN`` (or a file named by ``MAINSTAY_TOKEN_FILE``) is the caller's
bearer token, as the identity service issued it; ``MAINSTAY_KAFKA_*`` are the
broker settings every service reads; ``MAINSTAY_MEMORY_TARGET`` is the memory
service's gRPC address.
"""

from __future__ import annotations

from pathlib import Path

import jwt
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from mainstay_common.settings import KafkaSettings

__all__ = ["Caller", "ClientError", "ClientSettings", "tenant_of"]


class ClientError(Exception):
    """The client cannot do what was asked (no token, a refused request, a timeout);
    the message names what is wrong."""


class ClientSettings(BaseSettings):
    """The client's configuration; every field also reads ``MAINSTAY_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="MAINSTAY_", extra="ignore")

    token: SecretStr | None = Field(
        default=None, description="The caller's bearer token (MAINSTAY_TOKEN)."
    )
    token_file: Path | None = Field(
        default=None,
        description="A file holding the token, read when MAINSTAY_TOKEN is not set.",
    )
    memory_target: str = Field(
        default="127.0.0.1:50051", description="The memory service's gRPC address (host:port)."
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)

    def bearer(self) -> str:
        """The caller's token; :class:`ClientError` naming both settings when neither is set."""
        if self.token is not None and self.token.get_secret_value().strip():
            return self.token.get_secret_value().strip()
        if self.token_file is not None:
            try:
                token = self.token_file.read_text().strip()
            except OSError as exc:
                raise ClientError(f"cannot read the token file {self.token_file}: {exc}") from exc
            if token:
                return token
            raise ClientError(f"the token file {self.token_file} is empty")
        raise ClientError("no token: set MAINSTAY_TOKEN or MAINSTAY_TOKEN_FILE")

    def tenant(self) -> str:
        """The tenant the token was issued in."""
        return tenant_of(self.bearer())


class Caller:
    """Who a client calls as: the token given to it, else the settings' token."""

    def __init__(self, settings: ClientSettings | None, token: str | None) -> None:
        self.settings = settings or ClientSettings()
        self._token = token

    @property
    def token(self) -> str:
        """The caller's bearer token (read again each time, so a rotated file is picked
        up); :class:`ClientError` when there is none."""
        return self._token or self.settings.bearer()

    @property
    def tenant(self) -> str:
        """The tenant the token was issued in; everything the client does is in it."""
        return tenant_of(self.token)


def tenant_of(token: str) -> str:
    """The tenant a token was issued in, read from its claims (the services verify it)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise ClientError(f"the token is not a JWT: {exc}") from exc
    tenant = claims.get("tenant")
    if not isinstance(tenant, str) or not tenant:
        raise ClientError("the token names no tenant")
    return tenant
