"""The supervisor's AsyncAPI document (``./dev gen`` writes schemas/asyncapi/supervisor.yaml)."""

from __future__ import annotations

from typing import Any, cast

from mainstay_common.bus import Bus
from mainstay_common.bus import asyncapi_document as document_bus
from mainstay_common.settings import KafkaSettings, RetrySettings
from mainstay_contracts.execution import CANCEL_TASK, RESUME_TASK
from mainstay_contracts.identity import SEND_MAIL
from mainstay_contracts.supervisor import AGENT_EVENTS, HEARTBEAT
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
    register_kafka_handlers(bus, none, none, none, none, supervision=none)
    return document_bus(
        bus,
        title="Mainstay supervisor",
        version="v1",
        description="The agent registry (versioned definitions on a compacted topic), the"
        " fleet's heartbeats, and the supervision of task progress: stuck tasks resumed or"
        " cancelled, agents quarantined, humans told.",
        publishes=[AGENT_EVENTS, RESUME_TASK, CANCEL_TASK, SEND_MAIL, HEARTBEAT],
    )
