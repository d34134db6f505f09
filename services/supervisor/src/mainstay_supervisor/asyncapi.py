"""The supervisor's AsyncAPI document (``./dev gen`` writes schemas/asyncapi/supervisor.yaml)."""

from __future__ import annotations

from typing import Any, cast

from mainstay_common.bus import Bus
from mainstay_common.bus import asyncapi_document as document_bus
from mainstay_common.settings import KafkaSettings, RetrySettings
from mainstay_contracts.supervisor import AGENT_EVENTS
from mainstay_supervisor.handlers.kafka import register_kafka_handlers

__all__ = ["asyncapi_document"]


def asyncapi_document() -> dict[str, Any]:
    # The handlers are only registered, never run: they need no real service.
    bus = Bus(
        service="supervisor",
        kafka=KafkaSettings(topic_prefix=""),
        retry=RetrySettings(tier_delays_s=[1.0, 10.0, 60.0]),
    )
    none = cast(Any, None)
    register_kafka_handlers(bus, none, none, none, none)
    return document_bus(
        bus,
        title="Mainstay supervisor",
        version="v1",
        description="The agent registry (versioned definitions on a compacted topic) and the"
        " fleet's heartbeats.",
        publishes=[AGENT_EVENTS],
    )
