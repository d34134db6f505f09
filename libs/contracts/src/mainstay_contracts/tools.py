"""Messages owned by the tools gateway.

* ``tools.cmd.register-tool.v1`` registers (or replaces) a tool definition;
* ``tools.cmd.invoke-tool.v1`` asks for one tool call; its result, or the
  classified reason it failed, is published on ``tools.evt.tool-call.v1``
  under the same key (the task id);
* ``tools.evt.tool.v1`` announces every change to the registry and to which
  credentials exist (keyed by tool name).

:class:`ToolSpec` is the one definition of a tool, the same in a registry
file, a register command and the HTTP admin API. It never holds a secret:
credentials live in the gateway's vault and are only named here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

from mainstay_contracts._registry import REGISTRY, TopicSpec

__all__ = [
    "INVOKE_TOOL",
    "REGISTER_TOOL",
    "TOOL_CALLS",
    "TOOL_EVENTS",
    "BuiltinEndpoint",
    "CallOutcome",
    "CallProblem",
    "CredentialRef",
    "HttpEndpoint",
    "InvokeToolCommand",
    "McpEndpoint",
    "RateLimits",
    "RateSpec",
    "RegisterToolCommand",
    "RetryHints",
    "ToolCallEvent",
    "ToolEvent",
    "ToolKind",
    "ToolSpec",
]

ToolKind = Literal["http", "mcp", "builtin"]
CallOutcome = Literal[
    "OK",
    "INVALID_ARGUMENTS",
    "UNKNOWN_TOOL",
    "UNAUTHENTICATED",
    "PERMISSION_DENIED",
    "RATE_LIMITED",
    "CIRCUIT_OPEN",
    "TRANSIENT",
    "PERMANENT",
    "INVALID_OUTPUT",
    "DEADLINE_EXCEEDED",
    "CONFLICT",
]
"""How a call ended.

``OK``: the tool answered and its output matches the output schema.
``INVALID_ARGUMENTS`` / ``UNKNOWN_TOOL`` / ``UNAUTHENTICATED`` /
``PERMISSION_DENIED``: rejected before the tool was called; fix the call.
``RATE_LIMITED`` (``retry_after_s`` says when) and ``CIRCUIT_OPEN``: not
called now; retry later. ``TRANSIENT``: the tool timed out, was unreachable or
failed on its side (5xx); safe to retry with the same idempotency key.
``PERMANENT``: the tool refused the call (4xx) or failed in a way a retry will
not fix. ``INVALID_OUTPUT``: the tool answered, but not as its output schema
promises. ``DEADLINE_EXCEEDED``: the call's deadline passed before it could
run. ``CONFLICT``: the same idempotency key is in flight, or was first used
for a different call.
"""

_TOOL_NAME = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"


class RateSpec(BaseModel):
    """A token bucket: ``per_second`` tokens refill continuously, up to ``burst``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    per_second: float = Field(gt=0, le=1_000_000)
    burst: int = Field(default=1, ge=1, le=1_000_000)


class RateLimits(BaseModel):
    """``per_agent``: each principal's own bucket; ``all_agents``: one bucket for the tool."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    per_agent: RateSpec | None = None
    all_agents: RateSpec | None = None


class RetryHints(BaseModel):
    """What a caller (the execution service) should do with a ``TRANSIENT`` result."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(default=3, ge=1, le=20)
    backoff_s: float = Field(default=1.0, ge=0, le=3600)


class CredentialRef(BaseModel):
    """Where a vault credential goes in the outgoing call.

    ``credential`` names the secret in the vault (looked up for the calling
    agent first, then for the tenant, then for the tool). ``header`` receives
    ``prefix + secret`` (the default gives ``Authorization: Bearer <secret>``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    credential: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    header: str = Field(default="Authorization", min_length=1, max_length=100)
    prefix: str = Field(default="Bearer ", max_length=100)


class HttpEndpoint(BaseModel):
    """An HTTP tool: the arguments are sent as the JSON body (``GET``: as the query)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(min_length=1, max_length=2000, pattern=r"^https?://")
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict, max_length=50)
    auth: CredentialRef | None = None


class McpEndpoint(BaseModel):
    """A tool of an MCP server: streamable HTTP at ``url``, or ``command`` over stdio."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    transport: Literal["streamable-http", "stdio"] = "streamable-http"
    url: str | None = Field(default=None, max_length=2000, pattern=r"^https?://")
    command: list[str] | None = Field(default=None, min_length=1, max_length=100)
    remote_name: str = Field(min_length=1, max_length=200)
    """The tool's name on the MCP server (the gateway's name may carry a prefix)."""
    auth: CredentialRef | None = None

    @model_validator(mode="after")
    def _where(self) -> McpEndpoint:
        if self.transport == "streamable-http" and not self.url:
            raise ValueError("an MCP endpoint with transport 'streamable-http' needs a url")
        if self.transport == "stdio" and not self.command:
            raise ValueError("an MCP endpoint with transport 'stdio' needs a command")
        return self


class BuiltinEndpoint(BaseModel):
    """One of the gateway's own tools (``calculator``, ``http_fetch``) and its options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    builtin: str = Field(min_length=1, max_length=100)
    options: dict[str, Any] = Field(default_factory=dict)


class ToolSpec(BaseModel):
    """A registered tool."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_TOOL_NAME)
    version: str = Field(default="1", min_length=1, max_length=50)
    description: str = Field(default="", max_length=4000)
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    output_schema: dict[str, Any] | None = None
    kind: ToolKind
    http: HttpEndpoint | None = None
    mcp: McpEndpoint | None = None
    builtin: BuiltinEndpoint | None = None
    timeout_s: float = Field(default=30.0, gt=0, le=3600)
    retry: RetryHints = Field(default_factory=RetryHints)
    rate_limit: RateLimits = Field(default_factory=RateLimits)
    scope: str = Field(default="", max_length=200)
    """The scope a caller needs; empty means ``tools:call:<name>``."""
    side_effects: bool = False
    price_micros: int = Field(default=0, ge=0)
    """Price per call in micro-units of the ledger's currency."""

    @model_validator(mode="after")
    def _endpoint(self) -> ToolSpec:
        given = {k for k in ("http", "mcp", "builtin") if getattr(self, k) is not None}
        if given != {self.kind}:
            raise ValueError(
                f"a tool of kind {self.kind!r} needs exactly its '{self.kind}' endpoint"
                f" (given: {sorted(given) or 'none'})"
            )
        return self

    @property
    def required_scope(self) -> str:
        return self.scope or f"tools:call:{self.name}"


class RegisterToolCommand(BaseModel):
    """Register or replace a tool; ``token`` needs the ``tools:admin`` scope."""

    model_config = ConfigDict(extra="ignore")

    token: str = Field(min_length=1, max_length=8192)
    tool: ToolSpec

    @computed_field  # type: ignore[prop-decorator]
    @property
    def tool_name(self) -> str:
        return self.tool.name


class InvokeToolCommand(BaseModel):
    """One tool call, answered on ``tools.evt.tool-call.v1`` under the same key.

    ``idempotency_key`` makes the call exactly-once in effect: the first final
    result is stored and replayed for every repeat (the execution service uses
    ``<task id>:<step>``). Without one, the message's ``ce_id`` is the key.
    """

    model_config = ConfigDict(extra="ignore")

    task_id: str = Field(min_length=1, max_length=200)
    step: int = Field(default=0, ge=0)
    tool: str = Field(min_length=1, max_length=200)
    arguments: dict[str, Any] = Field(default_factory=dict)
    token: str = Field(min_length=1, max_length=8192)
    idempotency_key: str = Field(default="", max_length=300)
    deadline: datetime | None = None
    attempt: int = Field(default=1, ge=1)


class CallProblem(BaseModel):
    """One thing wrong with a call's arguments or a tool's output."""

    model_config = ConfigDict(extra="ignore")

    path: str
    """JSON-pointer-like path of the offending value (``""``: the whole document)."""
    message: str


class ToolCallEvent(BaseModel):
    """The result of one tool call (or why there is none)."""

    model_config = ConfigDict(extra="ignore")

    call_id: str
    task_id: str = ""
    step: int = 0
    tool: str
    tool_version: str = ""
    idempotency_key: str = ""
    outcome: CallOutcome
    output: Any = None
    untrusted: bool = True
    """Always true for tool output: it is data to show a model, never instructions."""
    message: str = ""
    problems: list[CallProblem] = Field(default_factory=list)
    suggestions: list[str] = Field(default_factory=list)
    """For ``UNKNOWN_TOOL``: the closest registered names."""
    retry_after_s: float | None = None
    retryable: bool = False
    latency_ms: float = 0.0
    attempt: int = 1
    cost_micros: int = 0
    replayed: bool = False
    """True when this is the stored result of an earlier call with the same key."""
    principal: str = ""
    acting_for: list[str] = Field(default_factory=list)
    tenant: str = ""
    completed_at: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def key(self) -> str:
        return self.task_id or self.call_id


class ToolEvent(BaseModel):
    """A change to the registry; never carries a secret value."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["registered", "removed", "credential-set", "credential-removed"]
    name: str
    tool: ToolSpec | None = None
    credential: str = ""
    """For credential events: the credential's name and who it is for, never its value."""
    tenant: str = ""
    agent: str = ""
    changed_by: str = ""
    occurred_at: datetime


REGISTER_TOOL = REGISTRY.register(
    TopicSpec(
        name="tools.cmd.register-tool.v1",
        owner="tools",
        kind="cmd",
        key_field="tool_name",
        payload=RegisterToolCommand,
        partitions=3,
        description="Register or replace a tool definition in the gateway's registry.",
    )
)

INVOKE_TOOL = REGISTRY.register(
    TopicSpec(
        name="tools.cmd.invoke-tool.v1",
        owner="tools",
        kind="cmd",
        key_field="task_id",
        payload=InvokeToolCommand,
        partitions=6,
        description="Call one tool through the gateway; the result goes to tools.evt.tool-call.v1.",
    )
)

TOOL_CALLS = REGISTRY.register(
    TopicSpec(
        name="tools.evt.tool-call.v1",
        owner="tools",
        kind="evt",
        key_field="key",
        payload=ToolCallEvent,
        partitions=6,
        description="The result or classified failure of every tool call, keyed by task id.",
        event_types=("mainstay.tools.call.ok", "mainstay.tools.call.failed"),
    )
)

TOOL_EVENTS = REGISTRY.register(
    TopicSpec(
        name="tools.evt.tool.v1",
        owner="tools",
        kind="evt",
        key_field="name",
        payload=ToolEvent,
        partitions=3,
        description="Every change to the tool registry and to which credentials exist.",
        event_types=tuple(
            f"mainstay.tools.{t}"
            for t in ("registered", "removed", "credential-set", "credential-removed")
        ),
    )
)
