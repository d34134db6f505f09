"""Kafka header names of the Mainstay envelope (CloudEvents Kafka binary mode)."""

from __future__ import annotations

from typing import Final

__all__ = ["CE_SPECVERSION_VALUE", "CONTENT_TYPE_JSON", "DLQ_HEADERS", "Header"]

CE_SPECVERSION_VALUE: Final = "1.0"
CONTENT_TYPE_JSON: Final = "application/json"


class Header:
    """Header names; values are UTF-8 strings."""

    SPECVERSION: Final = "ce_specversion"
    ID: Final = "ce_id"
    TYPE: Final = "ce_type"
    SOURCE: Final = "ce_source"
    TIME: Final = "ce_time"
    SUBJECT: Final = "ce_subject"
    TENANT: Final = "ce_tenant"
    CORRELATION_ID: Final = "ce_correlationid"
    CAUSATION_ID: Final = "ce_causationid"
    CONTENT_TYPE: Final = "content-type"
    TRACEPARENT: Final = "traceparent"
    TRACESTATE: Final = "tracestate"

    # Retry bookkeeping, carried from the origin topic through every tier.
    NOT_BEFORE: Final = "mainstay-not-before"
    ATTEMPTS: Final = "mainstay-attempts"
    ORIGIN_TOPIC: Final = "mainstay-origin-topic"
    ORIGIN_PARTITION: Final = "mainstay-origin-partition"
    ORIGIN_OFFSET: Final = "mainstay-origin-offset"

    # Added when a message is dead-lettered.
    ERROR_CLASS: Final = "mainstay-error-class"
    ERROR_TYPE: Final = "mainstay-error-type"
    ERROR_MESSAGE: Final = "mainstay-error-message"
    FAILED_AT: Final = "mainstay-failed-at"

    # Added when a dead letter is replayed to its origin topic under a new ce_id.
    REPLAY_OF: Final = "mainstay-replay-of"
    """The ce_id of the dead letter this message replays."""
    REPLAY_FOR: Final = "mainstay-replay-for"
    """The consumer group (topic prefix included) the replay is for; every other group
    on the topic acknowledges and skips it, since it handled the original already."""


DLQ_HEADERS: Final = (
    Header.ERROR_CLASS,
    Header.ERROR_TYPE,
    Header.ERROR_MESSAGE,
    Header.ATTEMPTS,
    Header.ORIGIN_TOPIC,
    Header.ORIGIN_PARTITION,
    Header.ORIGIN_OFFSET,
    Header.FAILED_AT,
)
"""Headers every dead letter carries on top of the original ones."""
