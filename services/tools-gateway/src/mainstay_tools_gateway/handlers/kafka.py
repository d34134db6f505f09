"""The Kafka doors: ``tools.cmd.invoke-tool.v1`` and ``tools.cmd.register-tool.v1``.

An invoke command always gets an answer on ``tools.evt.tool-call.v1``, also
when its token is invalid or its tool unknown: those are classified results,
not dead letters. Only a malformed message (which the bus rejects before the
handler runs) goes to the DLQ, and only the gateway's own trouble is retried
through the tiers (while PostgreSQL is down, a command waits for it instead).
A redelivered command with the same idempotency key (or, without one, the
same ``ce_id``) replays the stored result instead of calling the tool again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mainstay_common.errors import PermissionDenied, Unauthenticated
from mainstay_contracts.tools import INVOKE_TOOL, REGISTER_TOOL
from mainstay_tools_gateway.domain.model import CallRequest
from mainstay_tools_gateway.service import ADMIN_SCOPE

if TYPE_CHECKING:
    from mainstay_common.auth import Principal, TokenVerifier
    from mainstay_common.bus import Bus, Event
    from mainstay_contracts.tools import InvokeToolCommand, RegisterToolCommand
    from mainstay_tools_gateway.service import ToolsGateway

__all__ = ["register_kafka_handlers"]


def register_kafka_handlers(bus: Bus, gateway: ToolsGateway, verifier: TokenVerifier) -> None:
    @bus.subscriber(INVOKE_TOOL, handler="invoke")
    async def invoke(event: Event[InvokeToolCommand]) -> None:
        command = event.payload
        principal: Principal | None = None
        problem = ""
        try:
            principal = await verifier.verify(command.token)
        except Unauthenticated as exc:
            problem = exc.message
        await gateway.invoke(
            CallRequest(
                tool=command.tool,
                arguments=command.arguments,
                idempotency_key=command.idempotency_key or f"ce:{event.id}",
                task_id=command.task_id,
                step=command.step,
                deadline=command.deadline,
                attempt=max(command.attempt, event.attempt),
            ),
            principal,
            channel="kafka",
            auth_problem=problem,
            caused_by=event,
        )

    @bus.subscriber(REGISTER_TOOL, handler="register")
    async def register(event: Event[RegisterToolCommand]) -> None:
        principal = await verifier.verify(event.payload.token)
        if not principal.has_scope(ADMIN_SCOPE):
            raise PermissionDenied(f"registering a tool needs scope '{ADMIN_SCOPE}'")
        await gateway.register(event.payload.tool, changed_by=principal.subject)
