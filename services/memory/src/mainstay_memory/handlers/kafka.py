"""The Kafka door: ``memory.cmd.remember.v1``, the asynchronous twin of ``Remember``.

The command carries the caller's token, checked exactly as on the gRPC path.
A command is idempotent by its ``idempotency_key`` or, without one, by its
``ce_id``: a redelivery returns the stored first result and changes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mainstay_contracts.memory import REMEMBER
from mainstay_memory.access import authorize
from mainstay_memory.handlers.convert import remember_from_message

if TYPE_CHECKING:
    from mainstay_common.auth import TokenVerifier
    from mainstay_common.bus import Bus, Event
    from mainstay_contracts.memory import RememberCommand
    from mainstay_memory.service import MemoryService

__all__ = ["register_kafka_handlers"]


def register_kafka_handlers(bus: Bus, service: MemoryService, verifier: TokenVerifier) -> None:
    @bus.subscriber(REMEMBER, handler="remember")
    async def remember(event: Event[RememberCommand]) -> None:
        principal = await verifier.verify(event.payload.token)
        command = remember_from_message(event.payload, fallback_key=f"ce:{event.id}")
        authorize(principal, "write", command.scope)
        await service.remember(command, correlation_id=event.correlation_id or "")
