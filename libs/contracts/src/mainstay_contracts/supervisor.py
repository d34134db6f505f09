"""Messages owned by the supervisor service."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from mainstay_contracts._registry import REGISTRY, TopicSpec

__all__ = ["PROBE", "ProbeCommand"]


class ProbeCommand(BaseModel):
    """A synthetic message that checks the bus end to end.

    A probe can ask to fail: ``fail_attempts`` retryable failures before it
    succeeds, or ``reject`` to fail permanently, so operators can watch the retry
    tiers and the dead-letter queue work on a live mesh.
    """

    model_config = ConfigDict(extra="ignore")

    probe_id: str = Field(min_length=1, max_length=200)
    sent_at: datetime
    fail_attempts: int = Field(default=0, ge=0, le=10)
    reject: bool = False
    note: str = Field(default="", max_length=2000)


PROBE = REGISTRY.register(
    TopicSpec(
        name="supervisor.cmd.probe.v1",
        owner="supervisor",
        kind="cmd",
        key_field="probe_id",
        payload=ProbeCommand,
        partitions=3,
        retention_ms=24 * 3600 * 1000,
        description="Synthetic round trips that prove the bus, its retry tiers and its DLQ work.",
    )
)
