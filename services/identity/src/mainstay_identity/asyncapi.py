"""The identity service's AsyncAPI document (``./dev gen`` writes schemas/asyncapi/identity.yaml)."""

from __future__ import annotations

from typing import Any, cast

from mainstay_common.bus import Bus
from mainstay_common.bus import asyncapi_document as document_bus
from mainstay_common.settings import KafkaSettings, RetrySettings
from mainstay_contracts.identity import APPROVAL_EVENTS, MAILBOX_EVENTS
from mainstay_contracts.supervisor import HEARTBEAT
from mainstay_identity.handlers.kafka import register_kafka_handlers

__all__ = ["asyncapi_document"]


def asyncapi_document() -> dict[str, Any]:
    # The handlers are only registered, never run: they need no real service.
    bus = Bus(
        service="identity",
        kafka=KafkaSettings(topic_prefix=""),
        retry=RetrySettings(tier_delays_s=[1.0, 10.0, 60.0]),
    )
    # With an SMTP server configured, so the document shows the email-out handler too.
    register_kafka_handlers(bus, cast(Any, None), cast(Any, None), cast(Any, object()))
    return document_bus(
        bus,
        title="Mainstay identity",
        version="v1",
        description="Mail between agents and humans: sending, delivery and reads; approvals"
        " and their outcomes; email copies of deliveries.",
        publishes=[MAILBOX_EVENTS, APPROVAL_EVENTS, HEARTBEAT],
    )
