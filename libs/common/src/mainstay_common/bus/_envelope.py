"""The wire envelope: CloudEvents Kafka binary-mode headers around a JSON payload.

Building an outgoing message validates its payload against the topic's
registered model (an invalid payload raises before anything is sent); parsing an
incoming record validates the envelope and the payload (an invalid one raises
``InvalidMessage``, which the consumer sends straight to the DLQ).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from aiokafka.record.default_records import DefaultRecordBatchBuilder
from opentelemetry import propagate
from pydantic import BaseModel, ValidationError

from mainstay_common.errors import InvalidArgument, InvalidMessage, describe_validation_error
from mainstay_contracts import CE_SPECVERSION_VALUE, CONTENT_TYPE_JSON, Header

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from mainstay_contracts import TopicSpec

__all__ = [
    "HEADER_RESERVE_BYTES",
    "Event",
    "OutgoingMessage",
    "build_message",
    "decode_headers",
    "encode_headers",
    "merge_headers",
    "parse_event",
]

P = TypeVar("P", bound=BaseModel)


HEADER_RESERVE_BYTES = 4096
"""Of a message size limit: kept for headers added after a message is built (trace
context when sent; origin, attempts and error headers on retry tiers and dead letters)."""


@dataclass(frozen=True)
class OutgoingMessage:
    """A message ready for the wire; also what the outbox stores."""

    topic: str
    key: bytes | None
    value: bytes
    headers: dict[str, str]

    @property
    def event_id(self) -> str:
        return self.headers[Header.ID]

    @property
    def size(self) -> int:
        """Bytes of the record as the producer counts them against its request limit."""
        size: int = DefaultRecordBatchBuilder.estimate_size_in_bytes(
            self.key, self.value, encode_headers(self.headers)
        )
        return size


@dataclass(frozen=True)
class Event(Generic[P]):
    """A consumed, validated message as a handler sees it."""

    payload: P
    id: str
    type: str
    source: str
    time: datetime
    topic: str
    key: str | None
    partition: int
    offset: int
    attempt: int
    subject: str | None = None
    tenant: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


def build_message(
    spec: TopicSpec[P],
    payload: P | Mapping[str, Any],
    *,
    source: str,
    topic_prefix: str = "",
    key: str | None = None,
    event_type: str | None = None,
    event_id: str | None = None,
    subject: str | None = None,
    tenant: str | None = None,
    correlation_id: str | None = None,
    causation_id: str | None = None,
    time: datetime | None = None,
    extra_headers: Mapping[str, str] | None = None,
    max_bytes: int | None = None,
) -> OutgoingMessage:
    """Validate ``payload`` against ``spec`` and wrap it in the envelope.

    The payload is serialised and validated again from those bytes, which is
    exactly what a consumer will do: a model built with ``model_construct`` or
    mutated after construction cannot slip an invalid message onto the bus.

    With ``max_bytes`` (the producer's request limit), a message that could not be
    sent is refused here, as ``InvalidArgument`` naming its size: in an outbox it
    would fail every send and hold back every message staged after it.
    :data:`HEADER_RESERVE_BYTES` of the limit are kept for the headers the bus adds
    on the way (trace context, retry tiers, dead letters).
    """
    if isinstance(payload, BaseModel) and not isinstance(payload, spec.payload):
        raise InvalidMessage(
            f"{spec.name}: payload must be {spec.payload.__name__}, not {type(payload).__name__}"
        )
    try:
        if isinstance(payload, BaseModel):
            value = payload.model_dump_json().encode()
            model = spec.payload.model_validate_json(value)
        else:
            model = spec.payload.model_validate(payload)
            value = model.model_dump_json().encode()
    except ValidationError as exc:
        raise InvalidMessage(
            f"{spec.name}: invalid {spec.payload.__name__}: {describe_validation_error(exc)}"
        ) from exc
    message_key = key if key is not None else spec.key_of(model)
    headers: dict[str, str] = {
        Header.SPECVERSION: CE_SPECVERSION_VALUE,
        Header.ID: event_id or str(uuid.uuid4()),
        Header.TYPE: event_type or spec.default_event_type,
        Header.SOURCE: source,
        Header.TIME: (time or datetime.now(UTC)).isoformat(),
        Header.CONTENT_TYPE: CONTENT_TYPE_JSON,
    }
    optional = {
        Header.SUBJECT: subject,
        Header.TENANT: tenant,
        Header.CORRELATION_ID: correlation_id,
        Header.CAUSATION_ID: causation_id,
    }
    headers.update({name: value for name, value in optional.items() if value})
    propagate.inject(headers)
    if extra_headers:
        headers.update(extra_headers)
    message = OutgoingMessage(
        topic=f"{topic_prefix}{spec.name}",
        key=message_key.encode() if message_key else None,
        value=value,
        headers=headers,
    )
    if max_bytes is not None and (size := message.size) > max_bytes - HEADER_RESERVE_BYTES:
        raise InvalidArgument(
            f"{spec.name}: the message is {size} bytes, over the limit of"
            f" {max_bytes - HEADER_RESERVE_BYTES} ({max_bytes} bytes, the Kafka setting"
            f" max_message_bytes, less {HEADER_RESERVE_BYTES} kept for headers added on"
            " the way); send less, or raise the limit together with the broker's"
        )
    return message


def encode_headers(headers: Mapping[str, str]) -> list[tuple[str, bytes]]:
    return [(name, value.encode()) for name, value in headers.items()]


def merge_headers(
    raw: Sequence[tuple[str, bytes]], updates: Mapping[str, str], *, drop: Sequence[str] = ()
) -> list[tuple[str, bytes]]:
    """The original headers, byte for byte, with ``updates`` replacing or adding values."""
    replaced = set(updates) | set(drop)
    merged = [(name, value) for name, value in raw if name not in replaced]
    merged.extend(encode_headers(updates))
    return merged


def decode_headers(raw: Sequence[tuple[str, bytes]]) -> dict[str, str]:
    """Kafka headers as text; a value that is not UTF-8 is kept with replacement marks."""
    return {name: value.decode("utf-8", "replace") if value else "" for name, value in raw}


def parse_event(
    spec: TopicSpec[P],
    *,
    value: bytes | None,
    headers: Mapping[str, str],
    topic: str,
    key: bytes | None,
    partition: int,
    offset: int,
    attempt: int,
) -> Event[P]:
    """Validate an incoming record; raises ``InvalidMessage`` naming what is wrong."""
    problems = []
    if headers.get(Header.SPECVERSION) != CE_SPECVERSION_VALUE:
        problems.append(f"header {Header.SPECVERSION} must be {CE_SPECVERSION_VALUE!r}")
    problems.extend(
        f"header {required} is missing"
        for required in (Header.ID, Header.TYPE, Header.SOURCE)
        if not headers.get(required)
    )
    content_type = headers.get(Header.CONTENT_TYPE, CONTENT_TYPE_JSON)
    if not content_type.startswith(CONTENT_TYPE_JSON):
        problems.append(f"content-type {content_type!r} is not {CONTENT_TYPE_JSON}")
    if problems:
        raise InvalidMessage(f"{spec.name}: invalid envelope: {'; '.join(problems)}")
    if not value:
        raise InvalidMessage(f"{spec.name}: empty payload")
    try:
        payload = spec.payload.model_validate_json(value)
    except ValidationError as exc:
        raise InvalidMessage(
            f"{spec.name}: invalid {spec.payload.__name__}: {describe_validation_error(exc)}"
        ) from exc
    try:
        time = datetime.fromisoformat(headers[Header.TIME]) if headers.get(Header.TIME) else None
    except ValueError as exc:
        raise InvalidMessage(f"{spec.name}: header {Header.TIME} is not an RFC 3339 time") from exc
    return Event(
        payload=payload,
        id=headers[Header.ID],
        type=headers[Header.TYPE],
        source=headers[Header.SOURCE],
        time=time or datetime.now(UTC),
        topic=topic,
        key=key.decode("utf-8", "replace") if key is not None else None,
        partition=partition,
        offset=offset,
        attempt=attempt,
        subject=headers.get(Header.SUBJECT),
        tenant=headers.get(Header.TENANT),
        correlation_id=headers.get(Header.CORRELATION_ID),
        causation_id=headers.get(Header.CAUSATION_ID),
        headers=headers,
    )
