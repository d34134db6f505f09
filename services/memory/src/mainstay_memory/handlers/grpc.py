"""The gRPC door: ``mainstay.memory.v1.MemoryService``.

Thin: validate and convert the request, check the caller's rights, call the
use-case, convert the answer. Errors are raised as Mainstay errors; the server's
error interceptor turns them into gRPC statuses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mainstay.memory.v1 import memory_pb2 as pb
from mainstay.memory.v1 import memory_pb2_grpc
from mainstay_common.auth import current_principal
from mainstay_common.errors import InvalidArgument
from mainstay_memory.access import authorize, visible
from mainstay_memory.handlers.convert import (
    hit_to_proto,
    kind_from_proto,
    outcome_to_proto,
    recall_from_proto,
    record_to_proto,
    remember_from_proto,
    scope_from_proto,
    text_field,
)
from mainstay_memory.store.records import RecordFilter

if TYPE_CHECKING:
    from mainstay_memory.domain.model import Scope
    from mainstay_memory.service import MemoryService

__all__ = ["MemoryServicer"]

_ID_LIMIT = 200  # record ids are UUIDs; subjects are keys such as user.home_city


class MemoryServicer(memory_pb2_grpc.MemoryServiceServicer):
    def __init__(self, service: MemoryService) -> None:
        self.service = service

    async def Remember(  # noqa: N802 - the gRPC method name
        self, request: pb.RememberRequest, context: Any
    ) -> pb.RememberResponse:
        command = remember_from_proto(request)
        authorize(current_principal(), "write", command.scope)
        result = await self.service.remember(command, correlation_id=command.source.task_id)
        return pb.RememberResponse(
            record=record_to_proto(result.record),
            outcome=outcome_to_proto(result.outcome),
            superseded_ids=list(result.superseded_ids),
        )

    async def Recall(  # noqa: N802
        self, request: pb.RecallRequest, context: Any
    ) -> pb.RecallResponse:
        query = recall_from_proto(request)
        authorize(current_principal(), "read", query.scope)
        hits = await self.service.recall(query)
        return pb.RecallResponse(hits=[hit_to_proto(hit) for hit in hits])

    async def Get(self, request: pb.GetRequest, context: Any) -> pb.GetResponse:  # noqa: N802
        if not request.id:
            raise InvalidArgument("id is required")
        text_field(request.id, "id", _ID_LIMIT)
        record = await self.service.get(request.id)
        visible(current_principal(), record.scope, request.id)
        return pb.GetResponse(record=record_to_proto(record))

    async def History(  # noqa: N802
        self, request: pb.HistoryRequest, context: Any
    ) -> pb.HistoryResponse:
        principal = current_principal()
        text_field(request.subject, "subject", _ID_LIMIT)
        if request.id:
            text_field(request.id, "id", _ID_LIMIT)
            record = await self.service.get(request.id)
            visible(principal, record.scope, request.id)
            versions = await self.service.history_of(record)
        else:
            if not request.subject:
                raise InvalidArgument("either id, or scope and subject, are required")
            scope = scope_from_proto(request.scope)
            authorize(principal, "read", scope)
            versions = await self.service.history(scope, request.subject)
        return pb.HistoryResponse(versions=[record_to_proto(v) for v in versions])

    async def Forget(  # noqa: N802
        self, request: pb.ForgetRequest, context: Any
    ) -> pb.ForgetResponse:
        principal = current_principal()

        def allow(scope: Scope) -> None:
            authorize(principal, "write", scope)

        text_field(request.subject, "subject", _ID_LIMIT)
        for number, record_id in enumerate(request.ids):
            text_field(record_id, f"ids[{number}]", _ID_LIMIT)
        if request.ids:
            count = await self.service.forget(ids=list(request.ids), hard=request.hard, allow=allow)
        else:
            if not request.HasField("scope"):
                raise InvalidArgument(
                    "either ids, or a scope (with optional subject and kinds), are required"
                )
            scope = scope_from_proto(request.scope)
            authorize(principal, "write", scope)
            where = RecordFilter(
                scope=scope,
                kinds=frozenset(kind_from_proto(k, field="kinds") for k in request.kinds),
                include_superseded=True,
            )
            count = await self.service.forget(
                where=where, subject=request.subject, hard=request.hard, allow=allow
            )
        return pb.ForgetResponse(count=count)
