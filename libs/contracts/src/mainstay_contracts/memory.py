"""Messages owned by the memory service.

``memory.cmd.remember.v1`` is the asynchronous twin of the gRPC ``Remember``
call; ``memory.evt.memory.v1`` announces every change to a memory record. Both
are keyed by the memory scope, so writes to one scope stay in order.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from mainstay_contracts._registry import REGISTRY, TopicSpec

__all__ = [
    "MEMORY_EVENTS",
    "REMEMBER",
    "MemoryEvent",
    "MemoryEventType",
    "MemoryKind",
    "MemoryScope",
    "MemorySnapshot",
    "MemorySource",
    "RememberCommand",
]

MemoryKind = Literal["fact", "preference", "decision", "episode", "observation"]
MemoryEventType = Literal["added", "merged", "superseded", "forgotten", "expired"]

_ID = r"^[A-Za-z0-9][A-Za-z0-9._:@/-]*$"


class MemoryScope(BaseModel):
    """Who a memory belongs to: a tenant's agent, optionally one user or session."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    tenant: str = Field(min_length=1, max_length=200, pattern=_ID)
    agent_id: str = Field(default="", max_length=200)
    user_id: str = Field(default="", max_length=200)
    session_id: str = Field(default="", max_length=200)

    @property
    def key(self) -> str:
        return "/".join((self.tenant, self.agent_id, self.user_id, self.session_id))


class MemorySource(BaseModel):
    model_config = ConfigDict(extra="ignore")

    task_id: str = Field(default="", max_length=200)
    step: int = Field(default=0, ge=0)


class RememberCommand(BaseModel):
    """Store a memory; the same fields as the gRPC ``RememberRequest``.

    ``token`` is the caller's bearer token: the memory service checks it exactly
    as on the gRPC path. Idempotent by ``ce_id`` and by ``idempotency_key``.
    """

    model_config = ConfigDict(extra="ignore")

    token: str = Field(min_length=1, max_length=8192)
    scope: MemoryScope
    kind: MemoryKind
    content: str = Field(min_length=1, max_length=32_000)
    subject: str = Field(default="", max_length=200)
    metadata: dict[str, str] = Field(default_factory=dict, max_length=64)
    importance: float = Field(default=0.5, ge=0.0, le=1.0)
    source: MemorySource = Field(default_factory=MemorySource)
    idempotency_key: str = Field(default="", max_length=200)
    valid_from: datetime | None = None
    ttl_seconds: int = Field(default=0, ge=0)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def scope_key(self) -> str:
        return self.scope.key


class MemorySnapshot(BaseModel):
    """A memory record as an event shows it (no content once erased)."""

    model_config = ConfigDict(extra="ignore")

    id: str
    scope: MemoryScope
    kind: MemoryKind
    content: str
    subject: str = ""
    metadata: dict[str, str] = Field(default_factory=dict)
    importance: float = Field(ge=0.0, le=1.0)
    source: MemorySource = Field(default_factory=MemorySource)
    valid_from: datetime
    valid_to: datetime | None = None
    superseded_by: str = ""
    created_at: datetime
    expires_at: datetime | None = None
    merged_count: int = Field(default=0, ge=0)
    forgotten: bool = False


class MemoryEvent(BaseModel):
    """One change to a memory record."""

    model_config = ConfigDict(extra="ignore")

    type: MemoryEventType
    record: MemorySnapshot
    superseded_ids: list[str] = Field(default_factory=list)
    hard: bool = False
    occurred_at: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def scope_key(self) -> str:
        return self.record.scope.key


REMEMBER = REGISTRY.register(
    TopicSpec(
        name="memory.cmd.remember.v1",
        owner="memory",
        kind="cmd",
        key_field="scope_key",
        payload=RememberCommand,
        partitions=6,
        description="Store a memory asynchronously (the Kafka twin of MemoryService.Remember).",
    )
)

MEMORY_EVENTS = REGISTRY.register(
    TopicSpec(
        name="memory.evt.memory.v1",
        owner="memory",
        kind="evt",
        key_field="scope_key",
        payload=MemoryEvent,
        partitions=6,
        description="Every change to a memory: added, merged, superseded, forgotten, expired.",
        event_types=tuple(
            f"mainstay.memory.{t}"
            for t in ("added", "merged", "superseded", "forgotten", "expired")
        ),
    )
)
