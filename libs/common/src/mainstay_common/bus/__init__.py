"""The message bus: validated, enveloped publishing and consumers with retry tiers, DLQ and inbox."""

from mainstay_common.bus._asyncapi import asyncapi_document
from mainstay_common.bus._bus import Bus
from mainstay_common.bus._clients import start_kafka_client
from mainstay_common.bus._consumer import Consumer, Handler, TransactionalHandler
from mainstay_common.bus._envelope import (
    Event,
    OutgoingMessage,
    build_message,
    decode_headers,
    parse_event,
)
from mainstay_common.bus._routing import RetryPolicy, dlq_topic, group_id, retry_topic
from mainstay_common.bus._topics import refuse_topic_auto_creation

__all__ = [
    "Bus",
    "Consumer",
    "Event",
    "Handler",
    "OutgoingMessage",
    "RetryPolicy",
    "TransactionalHandler",
    "asyncapi_document",
    "build_message",
    "decode_headers",
    "dlq_topic",
    "group_id",
    "parse_event",
    "refuse_topic_auto_creation",
    "retry_topic",
    "start_kafka_client",
]
