"""Messages owned by the billing ledger (declared here so producers can publish now).

``ledger.cmd.record-usage.v1`` reports one priced unit of work: a model call's
tokens or a tool call. The ledger posts it against the task's hold, idempotent
by ``usage_id``, and prices it with the price-book version in force.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mainstay_contracts._registry import REGISTRY, TopicSpec

__all__ = ["RECORD_USAGE", "RecordUsageCommand", "UsageKind"]

UsageKind = Literal["model", "tool"]


class RecordUsageCommand(BaseModel):
    """One unit of spend; keyed by task, so a task's usage stays in order."""

    model_config = ConfigDict(extra="ignore")

    usage_id: str = Field(min_length=1, max_length=300)
    """Idempotency key: a repeat of the same id is posted once."""
    tenant: str = Field(min_length=1, max_length=200)
    agent: str = Field(default="", max_length=200)
    task_id: str = Field(min_length=1, max_length=200)
    step: int = Field(default=0, ge=0)
    kind: UsageKind
    resource: str = Field(min_length=1, max_length=200)
    """The model name, or the tool name."""
    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    cached_tokens: int = Field(default=0, ge=0)
    calls: int = Field(default=0, ge=0)
    list_price_micros: int | None = Field(default=None, ge=0)
    """The producer's own price for this usage (a tool's price per call), if it has one."""
    occurred_at: datetime


RECORD_USAGE = REGISTRY.register(
    TopicSpec(
        name="ledger.cmd.record-usage.v1",
        owner="ledger",
        kind="cmd",
        key_field="task_id",
        payload=RecordUsageCommand,
        partitions=6,
        description="Usage to post against a task's budget hold (model tokens, tool calls).",
    )
)
