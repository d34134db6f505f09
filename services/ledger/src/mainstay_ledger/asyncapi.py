"""The ledger's AsyncAPI document (``./dev gen`` writes schemas/asyncapi/ledger.yaml)."""

from __future__ import annotations

from typing import Any, cast

from mainstay_common.bus import Bus
from mainstay_common.bus import asyncapi_document as document_bus
from mainstay_common.settings import KafkaSettings, RetrySettings
from mainstay_contracts.identity import SEND_MAIL
from mainstay_contracts.ledger import LEDGER_EVENTS
from mainstay_contracts.supervisor import HEARTBEAT
from mainstay_ledger.handlers.kafka import register_kafka_handlers

__all__ = ["asyncapi_document"]


def asyncapi_document() -> dict[str, Any]:
    # The handlers are only registered, never run: they need no real service.
    bus = Bus(
        service="ledger",
        kafka=KafkaSettings(topic_prefix=""),
        retry=RetrySettings(tier_delays_s=[1.0, 10.0, 60.0]),
    )
    register_kafka_handlers(bus, cast(Any, None), cast(Any, None))
    return document_bus(
        bus,
        title="Mainstay ledger",
        version="v1",
        description="Holds that reserve a task's cap before it spends, usage posted against"
        " them, extensions approved by humans, budgets, and the events of all of it.",
        publishes=[LEDGER_EVENTS, SEND_MAIL, HEARTBEAT],
    )
