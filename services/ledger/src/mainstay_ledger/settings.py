"""Configuration of the ledger (``LEDGER_*``, plus the shared ``MAINSTAY_*`` groups)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from mainstay_common.settings import ServiceSettings

__all__ = ["LedgerSettings"]


class LedgerSettings(ServiceSettings):
    """One ledger instance."""

    model_config = SettingsConfigDict(env_prefix="LEDGER_", extra="ignore")

    service_name: str = "ledger"
    http_port: int = Field(default=8104, ge=0, le=65535)
    currency: str = Field(
        default="USD",
        pattern=r"^[A-Z]{3}$",
        description="The currency of holds that name none (ISO 4217); amounts are micro-units.",
    )
    hold_timeout_s: int = Field(
        default=86_400,
        ge=1,
        description="How long a hold lives when its open-hold command gives no timeout_s;"
        " a hold still open then expires and its rest is released.",
    )
    close_grace_s: float = Field(
        default=10.0,
        ge=0,
        description="How long a closed hold still accepts usage that was on its way (a tool's"
        " charge published just before the task ended) before the rest is released.",
    )
    sweep_interval_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="How often holds past their timeout or grace, and approvals to send or"
        " past their deadline, are looked for.",
    )
    usage_events: bool = Field(
        default=False,
        description="Announce every posted usage as a usage.recorded event. Off: usage is read"
        " through the reports and metrics, and only what changes a hold or a budget is an"
        " event (each event is an outbox row and a publish on the posting's path).",
    )
    approval_timeout_s: int = Field(
        default=3600,
        ge=1,
        description="How long a human has to answer an extension request, counted from its"
        " sending; unanswered, it is denied.",
    )
    identity_url: str = Field(
        default="http://127.0.0.1:8103",
        description="The identity service: its token endpoint signs the ledger's requests for"
        " approval, its inboxes carry them.",
    )
    approval_credentials: list[SecretStr] = Field(
        default_factory=list,
        description="Client credentials the ledger asks for approvals with, one per tenant:"
        " '<tenant>/<name>:<client secret>' of a principal of that tenant.",
    )
    approval_credentials_file: str | None = Field(
        default=None,
        description="A file with one '<tenant>/<name>:<client secret>' per line, read when"
        " approval_credentials is empty (./dev up writes one under .mainstay/).",
    )
