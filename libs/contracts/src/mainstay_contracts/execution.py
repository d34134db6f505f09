"""Messages owned by the execution service (declared here so others can use them now).

``execution.cmd.submit-task.v1`` submits a task (keyed by its id, which is
also its idempotency key: the same id submitted twice is one task).
``execution.cmd.resume-task.v1`` asks the execution service to fence a task's
current owner and resume the task from its last checkpoint;
``execution.cmd.cancel-task.v1`` asks it to cancel a task. The supervisor sends
both for stuck tasks; users cancel their own tasks.

``execution.evt.task.v1`` announces every transition of a task, keyed by task
id. ``type`` is one of ``task.accepted``, ``task.started``, ``step.started``,
``step.completed``, ``step.failed``, ``task.waiting``, ``task.retrying``,
``task.escalated``, ``task.completed``, ``task.failed``, ``task.cancelled``;
the last three are final. Consumers ignore types they do not know.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from mainstay_contracts._registry import REGISTRY, TopicSpec

__all__ = [
    "CANCEL_TASK",
    "FINAL_TASK_EVENTS",
    "RESUME_TASK",
    "SUBMIT_TASK",
    "TASK_EVENTS",
    "CancelTaskCommand",
    "ResumeTaskCommand",
    "SubmitTaskCommand",
    "TaskEvent",
]

FINAL_TASK_EVENTS = frozenset({"task.completed", "task.failed", "task.cancelled"})
"""The types that end a task."""


class TaskEvent(BaseModel):
    """One transition of a task."""

    model_config = ConfigDict(extra="ignore")

    type: str = Field(pattern=r"^[a-z]+\.[a-z.-]+$", max_length=100)
    task_id: str = Field(min_length=1, max_length=200)
    tenant: str = Field(min_length=1, max_length=200)
    agent: str = Field(default="", max_length=200)
    agent_version: int | None = Field(default=None, ge=1)
    """The version of the agent's definition the task runs (set from ``task.accepted`` on)."""
    team: str = Field(default="", max_length=200)
    step: int | None = Field(default=None, ge=0)
    reason: str = Field(default="", max_length=4000)
    """Why a task failed, waits or was cancelled (classified)."""
    cost_micros: int | None = Field(default=None, ge=0)
    """What the task cost, on ``task.completed`` and ``task.failed``."""
    answer: str | None = Field(default=None, max_length=200_000)
    """The final answer, on ``task.completed``."""
    model: str = Field(default="", max_length=200)
    """The model a step used (``step.*``), or switched to (``task.retrying``)."""
    tool: str = Field(default="", max_length=200)
    """The tool a step called (``step.*``) or a task waits for."""
    degraded: bool = False
    """The task runs without something it would use (memory down): it goes on regardless."""
    details: dict[str, Any] = Field(default_factory=dict)
    """Anything else worth showing (attempt, delay, fallback from/to, waiting for what)."""
    occurred_at: datetime


class SubmitTaskCommand(BaseModel):
    """Run the agent on ``input``; the task id is the idempotency key."""

    model_config = ConfigDict(extra="ignore")

    task_id: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:@-]+$")
    tenant: str = Field(min_length=1, max_length=200)
    agent: str = Field(min_length=1, max_length=63)
    input: str = Field(min_length=1, max_length=200_000)
    token: str = Field(min_length=1, max_length=8192)
    """The submitter's token: the task acts with its scopes, on its behalf."""
    max_cost_micros: int | None = Field(default=None, gt=0)
    """A cap on what the task may spend (the agent's own limit applies too)."""
    deadline: AwareDatetime | None = None
    """Unfinished at this moment, the task fails (the agent's deadline applies too)."""
    priority: int = Field(default=5, ge=0, le=9)
    labels: dict[str, str] = Field(default_factory=dict, max_length=50)


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


class ResumeTaskCommand(BaseModel):
    """Fence the task's current owner and resume the task from its last checkpoint."""

    model_config = ConfigDict(extra="ignore")

    task_id: str = Field(min_length=1, max_length=200)
    tenant: str = Field(min_length=1, max_length=200)
    agent: str = Field(default="", max_length=200)
    restart: int = Field(ge=1)
    """How many times the task has been restarted, this one included."""
    reason: str = Field(min_length=1, max_length=4000)
    last_progress_at: datetime | None = None
    """The task's last progress the requester saw."""
    requested_by: str = Field(min_length=1, max_length=200)
    requested_at: datetime
    token: str | None = Field(default=None, max_length=8192)
    """The requester's token, when it has one in the task's tenant."""


class CancelTaskCommand(BaseModel):
    """Cancel the task; it ends with ``task.cancelled`` carrying ``reason``."""

    model_config = ConfigDict(extra="ignore")

    task_id: str = Field(min_length=1, max_length=200)
    tenant: str = Field(min_length=1, max_length=200)
    reason: str = Field(min_length=1, max_length=4000)
    requested_by: str = Field(min_length=1, max_length=200)
    requested_at: datetime
    token: str | None = Field(default=None, max_length=8192)
    """The requester's token, when it has one in the task's tenant."""


SUBMIT_TASK = REGISTRY.register(
    TopicSpec(
        name="execution.cmd.submit-task.v1",
        owner="execution",
        kind="cmd",
        key_field="task_id",
        payload=SubmitTaskCommand,
        partitions=6,
        description="Submit a task: run an agent on an input (the task id is the idempotency key).",
    )
)

RESUME_TASK = REGISTRY.register(
    TopicSpec(
        name="execution.cmd.resume-task.v1",
        owner="execution",
        kind="cmd",
        key_field="task_id",
        payload=ResumeTaskCommand,
        partitions=6,
        description="Resume a task from its last checkpoint, fencing its current owner.",
    )
)

CANCEL_TASK = REGISTRY.register(
    TopicSpec(
        name="execution.cmd.cancel-task.v1",
        owner="execution",
        kind="cmd",
        key_field="task_id",
        payload=CancelTaskCommand,
        partitions=6,
        description="Cancel a task.",
    )
)
