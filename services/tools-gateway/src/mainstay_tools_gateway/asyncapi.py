"""The tools gateway's AsyncAPI document (``./dev gen`` writes schemas/asyncapi/tools-gateway.yaml)."""

from __future__ import annotations

from typing import Any, cast

from mainstay_common.bus import Bus
from mainstay_common.bus import asyncapi_document as document_bus
from mainstay_common.settings import KafkaSettings, RetrySettings
from mainstay_contracts.ledger import RECORD_USAGE
from mainstay_contracts.supervisor import HEARTBEAT
from mainstay_contracts.tools import TOOL_CALLS, TOOL_EVENTS
from mainstay_tools_gateway.handlers.kafka import register_kafka_handlers

__all__ = ["asyncapi_document"]


def asyncapi_document() -> dict[str, Any]:
    # The handlers are only registered, never run: they need no real service.
    # Settings are pinned so the document never depends on the environment.
    bus = Bus(
        service="tools",
        kafka=KafkaSettings(topic_prefix=""),
        retry=RetrySettings(tier_delays_s=[1.0, 10.0, 60.0]),
    )
    register_kafka_handlers(bus, cast(Any, None), cast(Any, None))
    return document_bus(
        bus,
        title="Mainstay tools gateway",
        version="v1",
        description="Tool calls over Kafka, registry changes, and usage for the ledger.",
        publishes=[TOOL_CALLS, TOOL_EVENTS, RECORD_USAGE, HEARTBEAT],
    )
