"""Between the wire (protobuf, Kafka payloads) and the domain, validating on the way in.

A bad request raises ``InvalidArgument`` naming the field, which gRPC answers
with INVALID_ARGUMENT and the bus dead-letters as permanent.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from mainstay.memory.v1 import memory_pb2 as pb
from mainstay_common.errors import InvalidArgument
from mainstay_memory.domain.model import Kind, RecallQuery, RememberCommand, Scope, Source

if TYPE_CHECKING:
    from google.protobuf.timestamp_pb2 import Timestamp

    from mainstay_contracts.memory import RememberCommand as RememberMessage
    from mainstay_memory.domain.model import MemoryRecord, ScoredRecord

__all__ = [
    "hit_to_proto",
    "kind_from_proto",
    "outcome_to_proto",
    "recall_from_proto",
    "record_to_proto",
    "remember_from_message",
    "remember_from_proto",
    "scope_from_proto",
    "text_field",
]

MAX_CONTENT = 32_000
MAX_TOP_K = 100
DEFAULT_TOP_K = 10
_KINDS = {
    pb.KIND_FACT: Kind.FACT,
    pb.KIND_PREFERENCE: Kind.PREFERENCE,
    pb.KIND_DECISION: Kind.DECISION,
    pb.KIND_EPISODE: Kind.EPISODE,
    pb.KIND_OBSERVATION: Kind.OBSERVATION,
}
_KIND_TO_PROTO = {kind: number for number, kind in _KINDS.items()}
_OUTCOMES = {
    "added": pb.OUTCOME_ADDED,
    "merged": pb.OUTCOME_MERGED,
    "superseded_previous": pb.OUTCOME_SUPERSEDED_PREVIOUS,
    "duplicate": pb.OUTCOME_DUPLICATE,
}
_LIMITS = {"tenant": 200, "agent_id": 200, "user_id": 200, "session_id": 200}
# The Kafka contract's limits (mainstay_contracts.memory), held on the gRPC door too:
# these values are indexed, and PostgreSQL refuses an index entry past ~2.7 kB.
_KEY_LIMIT = 200
_MAX_METADATA = 64
MAX_TTL_S = 100 * 366 * 86_400
"""A century: longer is a mistake, and past year 9999 no timestamp can hold the expiry."""


def text_field(value: str, field: str, limit: int | None = None) -> str:
    """``value`` unless it is longer than ``limit`` or holds a NUL (PostgreSQL text cannot)."""
    if limit is not None and len(value) > limit:
        raise InvalidArgument(f"{field} is longer than {limit} characters")
    if "\x00" in value:
        raise InvalidArgument(f"{field} contains a NUL character")
    return value


def scope_from_proto(scope: pb.Scope, *, field: str = "scope") -> Scope:
    if not scope.tenant:
        raise InvalidArgument(f"{field}.tenant is required")
    for name, limit in _LIMITS.items():
        text_field(getattr(scope, name), f"{field}.{name}", limit)
    return Scope(scope.tenant, scope.agent_id, scope.user_id, scope.session_id)


def kind_from_proto(value: int, *, field: str = "kind") -> Kind:
    try:
        return _KINDS[value]  # type: ignore[index]
    except KeyError:
        raise InvalidArgument(
            f"{field} must be one of {', '.join(pb.Kind.Name(k) for k in _KINDS)}"
        ) from None


def _timestamp(ts: Timestamp, *, field: str) -> datetime:
    try:
        return ts.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument(
            f"{field} is not a valid timestamp (seconds {ts.seconds}, nanos {ts.nanos}):"
            " it must fall between years 1 and 9999"
        ) from None


def _importance(value: float, *, field: str = "importance") -> float:
    if value == 0:
        return 0.5
    if math.isnan(value) or not 0 < value <= 1:
        raise InvalidArgument(f"{field} must be between 0 and 1")
    return float(value)


def _content(text: str) -> str:
    if not text.strip():
        raise InvalidArgument("content must not be empty")
    return text_field(text, "content", MAX_CONTENT)


def _metadata(entries: dict[str, str]) -> dict[str, str]:
    if len(entries) > _MAX_METADATA:
        raise InvalidArgument(f"metadata has more than {_MAX_METADATA} entries")
    for key, value in entries.items():
        text_field(key, "metadata key", _KEY_LIMIT)
        text_field(value, f"metadata[{key!r}]", MAX_CONTENT)
    return entries


def remember_from_proto(request: pb.RememberRequest) -> RememberCommand:
    if not 0 <= request.ttl_seconds <= MAX_TTL_S:
        raise InvalidArgument(f"ttl_seconds must be between 0 and {MAX_TTL_S}")
    if request.source.step < 0:
        raise InvalidArgument("source.step must be >= 0")
    valid_from = (
        _timestamp(request.valid_from, field="valid_from")
        if request.HasField("valid_from")
        else None
    )
    return RememberCommand(
        scope=scope_from_proto(request.scope),
        kind=kind_from_proto(request.kind),
        content=_content(request.content),
        subject=text_field(request.subject, "subject", _KEY_LIMIT).strip(),
        metadata=_metadata(dict(request.metadata)),
        importance=_importance(request.importance),
        source=Source(
            text_field(request.source.task_id, "source.task_id", _KEY_LIMIT), request.source.step
        ),
        idempotency_key=text_field(request.idempotency_key, "idempotency_key", _KEY_LIMIT),
        valid_from=valid_from,
        ttl_seconds=request.ttl_seconds,
    )


def remember_from_message(message: RememberMessage, *, fallback_key: str) -> RememberCommand:
    """A Kafka command; ``fallback_key`` (from ``ce_id``) makes it idempotent without a key."""
    scope = message.scope
    if message.ttl_seconds > MAX_TTL_S:
        raise InvalidArgument(f"ttl_seconds must be between 0 and {MAX_TTL_S}")
    return RememberCommand(
        scope=Scope(scope.tenant, scope.agent_id, scope.user_id, scope.session_id),
        kind=Kind(message.kind),
        content=_content(message.content),
        subject=message.subject.strip(),
        metadata=dict(message.metadata),
        importance=message.importance,
        source=Source(message.source.task_id, message.source.step),
        idempotency_key=message.idempotency_key or fallback_key,
        valid_from=message.valid_from,
        ttl_seconds=message.ttl_seconds,
    )


def recall_from_proto(request: pb.RecallRequest) -> RecallQuery:
    if not request.query.strip():
        raise InvalidArgument("query must not be empty")
    text_field(request.query, "query", MAX_CONTENT)
    if request.top_k < 0 or request.top_k > MAX_TOP_K:
        raise InvalidArgument(f"top_k must be between 1 and {MAX_TOP_K} (0 means {DEFAULT_TOP_K})")
    if math.isnan(request.min_score) or not 0 <= request.min_score <= 1:
        raise InvalidArgument("min_score must be between 0 and 1")
    return RecallQuery(
        scope=scope_from_proto(request.scope),
        query=request.query,
        kinds=frozenset(kind_from_proto(k, field="kinds") for k in request.kinds),
        top_k=request.top_k or DEFAULT_TOP_K,
        as_of=_timestamp(request.as_of, field="as_of") if request.HasField("as_of") else None,
        include_superseded=request.include_superseded,
        min_score=request.min_score,
    )


def _set(ts: Timestamp, value: datetime | None) -> None:
    if value is not None:
        ts.FromDatetime(value.astimezone(UTC))


def record_to_proto(record: MemoryRecord) -> pb.MemoryRecord:
    message = pb.MemoryRecord(
        id=record.id,
        scope=pb.Scope(
            tenant=record.scope.tenant,
            agent_id=record.scope.agent_id,
            user_id=record.scope.user_id,
            session_id=record.scope.session_id,
        ),
        kind=_KIND_TO_PROTO[record.kind],
        content=record.content,
        subject=record.subject,
        metadata=record.metadata,
        importance=record.importance,
        source=pb.Source(task_id=record.source.task_id, step=record.source.step),
        superseded_by=record.superseded_by,
        merged_count=record.merged_count,
        forgotten=record.forgotten,
    )
    _set(message.valid_from, record.valid_from)
    _set(message.valid_to, record.valid_to)
    _set(message.created_at, record.created_at)
    _set(message.expires_at, record.expires_at)
    return message


def hit_to_proto(hit: ScoredRecord) -> pb.Hit:
    parts = hit.parts
    return pb.Hit(
        record=record_to_proto(hit.record),
        score=parts.total,
        parts=pb.ScoreParts(
            semantic=parts.semantic,
            keyword=parts.keyword,
            recency=parts.recency,
            importance=parts.importance,
            total=parts.total,
        ),
    )


def outcome_to_proto(outcome: str) -> pb.Outcome.ValueType:
    return _OUTCOMES[outcome]
