"""The memory domain: records, scopes and what a write or a recall asks for.

Pure data: no I/O library is imported here (see ARCHITECTURE.md).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from mainstay_common.errors import InvalidArgument

if TYPE_CHECKING:
    from datetime import datetime

__all__ = [
    "Kind",
    "MemoryRecord",
    "Outcome",
    "RecallQuery",
    "RememberCommand",
    "Scope",
    "ScoreParts",
    "ScoredRecord",
    "Source",
]


class Kind(enum.StrEnum):
    FACT = "fact"
    PREFERENCE = "preference"
    DECISION = "decision"
    EPISODE = "episode"
    OBSERVATION = "observation"


class Outcome(enum.StrEnum):
    ADDED = "added"
    MERGED = "merged"
    SUPERSEDED_PREVIOUS = "superseded_previous"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class Scope:
    """Who a memory belongs to. Curation compares whole scopes."""

    tenant: str
    agent_id: str = ""
    user_id: str = ""
    session_id: str = ""

    @property
    def key(self) -> str:
        return "/".join((self.tenant, self.agent_id, self.user_id, self.session_id))


@dataclass(frozen=True)
class Source:
    task_id: str = ""
    step: int = 0


@dataclass(frozen=True)
class MemoryRecord:
    id: str
    scope: Scope
    kind: Kind
    content: str
    subject: str
    metadata: dict[str, str]
    importance: float
    source: Source
    valid_from: datetime
    created_at: datetime
    valid_to: datetime | None = None
    superseded_by: str = ""
    expires_at: datetime | None = None
    merged_count: int = 0
    forgotten: bool = False
    idempotency_key: str = ""

    @property
    def current(self) -> bool:
        return self.valid_to is None and not self.forgotten

    def valid_at(self, moment: datetime) -> bool:
        """Whether the record was true at ``moment`` (its validity interval holds it)."""
        if self.forgotten or self.valid_from > moment:
            return False
        return self.valid_to is None or self.valid_to > moment


@dataclass(frozen=True)
class RememberCommand:
    """A validated write, whichever door (gRPC, Kafka) it came through."""

    scope: Scope
    kind: Kind
    content: str
    subject: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    importance: float = 0.5
    source: Source = field(default_factory=Source)
    idempotency_key: str = ""
    valid_from: datetime | None = None
    ttl_seconds: int = 0

    def new_record(
        self, *, record_id: str, valid_from: datetime, created_at: datetime
    ) -> MemoryRecord:
        """The record this write adds (when curation decides to add one)."""
        try:
            expires_at = (
                valid_from + timedelta(seconds=self.ttl_seconds) if self.ttl_seconds else None
            )
        except OverflowError:
            raise InvalidArgument(
                f"ttl_seconds: {self.ttl_seconds} s after valid_from {valid_from.isoformat()}"
                " falls past year 9999"
            ) from None
        return MemoryRecord(
            id=record_id,
            scope=self.scope,
            kind=self.kind,
            content=self.content,
            subject=self.subject,
            metadata=dict(self.metadata),
            importance=self.importance,
            source=self.source,
            valid_from=valid_from,
            created_at=created_at,
            expires_at=expires_at,
            idempotency_key=self.idempotency_key,
        )


@dataclass(frozen=True)
class RecallQuery:
    scope: Scope
    query: str
    kinds: frozenset[Kind] = frozenset()
    top_k: int = 10
    as_of: datetime | None = None
    include_superseded: bool = False
    min_score: float = 0.0


@dataclass(frozen=True)
class ScoreParts:
    """Each part is in 0..1; ``total`` is their weighted sum."""

    semantic: float
    keyword: float
    recency: float
    importance: float
    total: float


@dataclass(frozen=True)
class ScoredRecord:
    record: MemoryRecord
    parts: ScoreParts
