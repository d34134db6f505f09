"""The execution service's AsyncAPI document (``./dev gen`` writes schemas/asyncapi/execution.yaml)."""

from __future__ import annotations

from typing import Any, cast

from mainstay_common.bus import Bus
from mainstay_common.bus import asyncapi_document as document_bus
from mainstay_common.settings import KafkaSettings, RetrySettings
from mainstay_contracts.supervisor import HEARTBEAT
from mainstay_execution.handlers.kafka import PUBLISHES, register_kafka_handlers

__all__ = ["asyncapi_document"]


def asyncapi_document() -> dict[str, Any]:
    # The handlers are only registered, never run: they need no real service.
    bus = Bus(
        service="execution",
        kafka=KafkaSettings(topic_prefix=""),
        retry=RetrySettings(tier_delays_s=[1.0, 10.0, 60.0]),
    )
    none = cast(Any, None)
    register_kafka_handlers(bus, none, none, agents=none, tools=none, budget=none, escalations=none)
    return document_bus(
        bus,
        title="Mainstay execution",
        version="v1",
        description="Durable agent tasks: submitted, run step by step from checkpoints,"
        " retried, fallen back, corrected, cancelled and resumed, every transition an event.",
        publishes=[*PUBLISHES, HEARTBEAT],
    )
