"""Messages owned by the execution service (declared here so consumers can subscribe now).

``execution.evt.task.v1`` announces every transition of a task, keyed by task
id. ``type`` is one of ``task.accepted``, ``task.started``, ``step.started``,
``step.completed``, ``step.failed``, ``task.waiting``, ``task.retrying``,
``task.escalated``, ``task.completed``, ``task.failed``, ``task.cancelled``;
the last three are final. Consumers ignore types they do not know.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from mainstay_contracts._registry import REGISTRY, TopicSpec

__all__ = ["FINAL_TASK_EVENTS", "TASK_EVENTS", "TaskEvent"]

FINAL_TASK_EVENTS = frozenset({"task.completed", "task.failed", "task.cancelled"})
"""The types that end a task."""


class TaskEvent(BaseModel):
    """One transition of a task."""

    model_config = ConfigDict(extra="ignore")

    type: str = Field(pattern=r"^[a-z]+\.[a-z.-]+$", max_length=100)
    task_id: str = Field(min_length=1, max_length=200)
    tenant: str = Field(min_length=1, max_length=200)
    agent: str = Field(default="", max_length=200)
    team: str = Field(default="", max_length=200)
    step: int | None = Field(default=None, ge=0)
    reason: str = Field(default="", max_length=4000)
    """Why a task failed, waits or was cancelled (classified)."""
    cost_micros: int | None = Field(default=None, ge=0)
    """What the task cost, on ``task.completed`` and ``task.failed``."""
    occurred_at: datetime


TASK_EVENTS = REGISTRY.register(
    TopicSpec(
        name="execution.evt.task.v1",
        owner="execution",
        kind="evt",
        key_field="task_id",
        payload=TaskEvent,
        partitions=6,
        description="Every transition of a task, from accepted to completed, failed or cancelled.",
    )
)
