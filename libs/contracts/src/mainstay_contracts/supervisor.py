"""Messages owned by the supervisor: agent definitions, heartbeats, probes.

* ``supervisor.cmd.register-agent.v1`` registers a new version of an agent
  definition (the Kafka twin of ``PUT /v1/agents/{name}``);
* ``supervisor.evt.agent.v1`` (compacted, keyed by agent name) carries every
  registered version and every quarantine or release, so the execution
  service always knows the latest definition of each agent;
* ``supervisor.cmd.heartbeat.v1`` is what every service instance sends
  periodically: the supervisor's fleet view is made of them;
* ``supervisor.cmd.probe.v1`` is a synthetic round trip through the bus.

:class:`AgentDefinition` is the one definition of an agent, the same in a
YAML/JSON file, a register command and the HTTP API.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

from mainstay_contracts._registry import REGISTRY, TopicSpec
from mainstay_contracts.memory import MemoryKind

__all__ = [
    "AGENT_EVENTS",
    "HEARTBEAT",
    "PROBE",
    "REGISTER_AGENT",
    "AgentDefinition",
    "AgentEvent",
    "HeartbeatCommand",
    "Limits",
    "MemoryPolicy",
    "ModelRef",
    "ProbeCommand",
    "RegisterAgentCommand",
    "Strategy",
]

AgentName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")]
"""Lower-case letters, digits, '-' and '_', starting with a letter (at most 63)."""
Name = Annotated[str, Field(min_length=1, max_length=200)]


class ModelRef(BaseModel):
    """One model of an agent's chain: the primary first, then its fallbacks in order."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["openai", "anthropic"]
    """The API the provider speaks: OpenAI-compatible chat completions, or Anthropic Messages."""
    model: Name
    base_url: str | None = Field(default=None, max_length=2000)
    """The provider's endpoint; None: the provider's public one."""
    credential: str | None = Field(default=None, max_length=200)
    """The name of the API key in the execution service's secrets (never the key)."""
    timeout_s: float = Field(default=60.0, gt=0, le=600)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)


ScopeLevel = Literal["agent", "user", "session"]


def _remembered_kinds() -> list[MemoryKind]:
    return ["fact", "preference"]


def _recalled_scopes() -> list[ScopeLevel]:
    return ["agent", "user"]


class MemoryPolicy(BaseModel):
    """What the agent recalls before it acts and what it keeps afterwards."""

    model_config = ConfigDict(extra="forbid")

    recall: bool = True
    recall_limit: int = Field(default=8, ge=0, le=100)
    remember: list[MemoryKind] = Field(default_factory=_remembered_kinds, max_length=5)
    """The kinds of memory the agent writes at the end of a task."""
    scopes: list[ScopeLevel] = Field(default_factory=_recalled_scopes, max_length=3)


class Limits(BaseModel):
    """What one task of the agent may use."""

    model_config = ConfigDict(extra="forbid")

    max_steps: int = Field(default=20, ge=1, le=1000)
    max_cost_micros: int | None = Field(default=None, gt=0)
    """The task's budget hold; None: the submitter's cap, else no hold."""
    step_timeout_s: float = Field(default=120.0, gt=0, le=86_400)
    """A task with no progress for this long is stuck."""
    task_deadline_s: int = Field(default=3600, ge=1, le=30 * 86_400)


class Strategy(BaseModel):
    """How the supervisor restarts the agent's stuck tasks, and when it gives up."""

    model_config = ConfigDict(extra="forbid")

    on_stuck: Literal["resume", "cancel"] = "resume"
    """Resume a stuck task from its last checkpoint, or cancel it at once."""
    max_restarts: int = Field(default=3, ge=0, le=100)
    """Restarts of the agent's tasks allowed within ``period_s``; one more quarantines the
    agent."""
    period_s: int = Field(default=3600, ge=1, le=7 * 86_400)
    max_task_restarts: int = Field(default=2, ge=0, le=100)
    """Restarts of one task; stuck once more, it is cancelled and the escalation contacts
    are told."""


class AgentDefinition(BaseModel):
    """An agent: who it is, which models and tools it uses, its limits and supervision."""

    model_config = ConfigDict(extra="forbid")

    name: AgentName
    tenant: Name
    identity: Name
    """The agent's principal in the identity service (``<tenant>/<identity>``)."""
    description: str = Field(default="", max_length=2000)
    models: list[ModelRef] = Field(min_length=1, max_length=10)
    system_prompt: str = Field(default="", max_length=100_000)
    tools: list[Name] = Field(default_factory=list, max_length=200)
    memory: MemoryPolicy = Field(default_factory=MemoryPolicy)
    limits: Limits = Field(default_factory=Limits)
    escalation: list[Name] = Field(default_factory=list, max_length=20)
    """Humans told when a task is escalated, cancelled as stuck, or the agent quarantined."""
    strategy: Strategy = Field(default_factory=Strategy)

    @model_validator(mode="after")
    def _distinct(self) -> Self:
        if len(set(self.tools)) != len(self.tools):
            raise ValueError("tools: each tool may appear once")
        chain = [(m.provider, m.model, m.base_url) for m in self.models]
        if len(set(chain)) != len(chain):
            raise ValueError("models: each model may appear once in the chain")
        return self


class RegisterAgentCommand(AgentDefinition):
    """Register the next version of an agent over Kafka; ``token`` is the caller's."""

    model_config = ConfigDict(extra="ignore")

    token: str = Field(min_length=1, max_length=8192)


class AgentEvent(BaseModel):
    """A version registered, or the agent quarantined or released; keyed by agent name."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["agent.registered", "agent.quarantined", "agent.released"]
    name: str
    tenant: str
    version: int = Field(ge=1)
    """The latest version (the one new tasks run)."""
    definition: AgentDefinition
    quarantined: bool = False
    reason: str = ""
    occurred_at: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def key(self) -> str:
        """``<tenant>/<name>``: compaction keeps the latest event of each agent of each tenant."""
        return f"{self.tenant}/{self.name}"


class HeartbeatCommand(BaseModel):
    """One service instance saying it is alive, and what it is doing."""

    model_config = ConfigDict(extra="ignore")

    service: Name
    instance: Name
    version: str = Field(default="", max_length=100)
    in_flight: int = Field(default=0, ge=0)
    """Work in progress right now (tasks, messages being handled)."""
    last_progress_at: datetime | None = None
    """When the instance last finished a piece of work."""
    sent_at: datetime


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

REGISTER_AGENT = REGISTRY.register(
    TopicSpec(
        name="supervisor.cmd.register-agent.v1",
        owner="supervisor",
        kind="cmd",
        key_field="name",
        payload=RegisterAgentCommand,
        partitions=3,
        description="Register the next version of an agent definition.",
    )
)

AGENT_EVENTS = REGISTRY.register(
    TopicSpec(
        name="supervisor.evt.agent.v1",
        owner="supervisor",
        kind="evt",
        key_field="key",
        payload=AgentEvent,
        partitions=3,
        retention_ms=None,
        compacted=True,
        description="The latest definition and state of every agent (compacted by tenant/name).",
        event_types=(
            "mainstay.supervisor.agent.registered",
            "mainstay.supervisor.agent.quarantined",
            "mainstay.supervisor.agent.released",
        ),
    )
)

HEARTBEAT = REGISTRY.register(
    TopicSpec(
        name="supervisor.cmd.heartbeat.v1",
        owner="supervisor",
        kind="cmd",
        key_field="instance",
        payload=HeartbeatCommand,
        partitions=3,
        retention_ms=3600 * 1000,
        description="Service instances saying they are alive, and what they are doing.",
    )
)
