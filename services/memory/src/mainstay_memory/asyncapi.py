"""The memory service's AsyncAPI document (``./dev gen`` writes schemas/asyncapi/memory.yaml)."""

from __future__ import annotations

from typing import Any, cast

from mainstay_common.bus import Bus
from mainstay_common.bus import asyncapi_document as document_bus
from mainstay_common.settings import KafkaSettings, RetrySettings
from mainstay_contracts.memory import MEMORY_EVENTS
from mainstay_contracts.supervisor import HEARTBEAT
from mainstay_memory.handlers.curator import register_curator
from mainstay_memory.handlers.kafka import register_kafka_handlers

__all__ = ["asyncapi_document"]


def asyncapi_document() -> dict[str, Any]:
    # The handlers are only registered, never run: they need no real service.
    # Settings are pinned so the document never depends on the environment.
    bus = Bus(
        service="memory",
        kafka=KafkaSettings(topic_prefix=""),
        retry=RetrySettings(tier_delays_s=[1.0, 10.0, 60.0]),
    )
    register_kafka_handlers(bus, cast(Any, None), cast(Any, None))
    # With the optional curator on, so the document shows its consumer group too.
    register_curator(bus, cast(Any, None), cast(Any, None))
    return document_bus(
        bus,
        title="Mainstay memory",
        version="v1",
        description="Asynchronous writes to agent memory and the announcement of every change.",
        publishes=[MEMORY_EVENTS, HEARTBEAT],
    )
