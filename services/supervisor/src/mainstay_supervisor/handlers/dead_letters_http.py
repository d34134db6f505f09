"""The dead-letter API: list DLQs, inspect, replay and purge letters, read the audit.

A DLQ belongs to a consumer group, not to a tenant, and its letters come from
every tenant, so reading needs ``supervisor:dlq:read`` and acting
``supervisor:dlq:admin``, each together with the ``*`` scope (every tenant).
Every call, read or write, is audited with the caller's subject and tenant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, StringConstraints

from mainstay_common.auth import Principal, require_principal
from mainstay_common.errors import PermissionDenied
from mainstay_supervisor.dead_letters import StatusFilter  # noqa: TC001 - FastAPI resolves annotations at runtime

if TYPE_CHECKING:
    from mainstay_supervisor.dead_letters import DeadLetters

__all__ = ["DLQ_ADMIN_SCOPE", "DLQ_READ_SCOPE", "PurgeRequest", "create_dead_letters_router"]

DLQ_READ_SCOPE = "supervisor:dlq:read"
DLQ_ADMIN_SCOPE = "supervisor:dlq:admin"
Caller = Annotated[Principal, Depends(require_principal)]
Topic = Annotated[str, Path(min_length=1, max_length=249)]  # Kafka's longest topic name
# Kafka's own widths: a partition is an int32, an offset an int64.
Partition = Annotated[int, Path(ge=0, le=2**31 - 1)]
Offset = Annotated[int, Path(ge=0, le=2**63 - 1)]
Note = Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000)]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]


class PurgeRequest(BaseModel):
    """Why the letters are dropped (required: the audit must say)."""

    model_config = ConfigDict(extra="forbid")

    reason: Reason


class ReplayRequest(BaseModel):
    """An optional note for the audit."""

    model_config = ConfigDict(extra="forbid")

    reason: Note = ""


def create_dead_letters_router(dead_letters: DeadLetters) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/dlq")
    async def list_dlqs(caller: Caller) -> dict[str, Any]:
        """Every DLQ of the mesh with ``total``, ``pending``, ``replayed`` and ``purged``."""
        _reader(caller)
        return {"dlqs": await dead_letters.queues(by=caller)}

    @router.get("/v1/dlq/audit")
    async def audit(
        caller: Caller,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        topic: Annotated[str | None, Query(max_length=249)] = None,
        before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    ) -> dict[str, Any]:
        """Audit entries, newest first; ``before`` (an entry id) pages back."""
        _reader(caller)
        entries = await dead_letters.audit(limit=limit, topic=topic, before=before)
        return {"entries": entries, "next": entries[-1]["id"] if len(entries) == limit else None}

    @router.get("/v1/dlq/{topic}/letters")
    async def list_letters(
        topic: Topic,
        caller: Caller,
        status: StatusFilter = "pending",
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        after: Annotated[str | None, Query(max_length=60)] = None,
    ) -> dict[str, Any]:
        """Letter summaries in (partition, offset) order; ``next`` is the ``after`` of the
        next page (null on the last)."""
        _reader(caller)
        letters, cursor = await dead_letters.letters(
            topic, status=status, limit=limit, after=after, by=caller
        )
        return {"topic": topic, "status": status, "letters": letters, "next": cursor}

    @router.get("/v1/dlq/{topic}/letters/{partition}/{offset}")
    async def inspect(
        topic: Topic, partition: Partition, offset: Offset, caller: Caller
    ) -> dict[str, Any]:
        """One letter: payload (JSON, or base64 when it is not), headers, error, status and
        audit history."""
        _reader(caller)
        return await dead_letters.letter(topic, partition, offset, by=caller)

    @router.post("/v1/dlq/{topic}/letters/{partition}/{offset}/replay")
    async def replay(
        topic: Topic,
        partition: Partition,
        offset: Offset,
        caller: Caller,
        body: Annotated[ReplayRequest | None, Body()] = None,
    ) -> dict[str, Any]:
        """Send the letter back to its origin topic, for the group that failed it only."""
        _admin(caller)
        reason = body.reason if body else ""
        return await dead_letters.replay(topic, partition, offset, by=caller, reason=reason)

    @router.post("/v1/dlq/{topic}/replay")
    async def replay_all(
        topic: Topic, caller: Caller, body: Annotated[ReplayRequest | None, Body()] = None
    ) -> dict[str, Any]:
        """Replay every pending letter of the DLQ; how many were replayed."""
        _admin(caller)
        return await dead_letters.replay_all(topic, by=caller, reason=body.reason if body else "")

    @router.post("/v1/dlq/{topic}/letters/{partition}/{offset}/purge")
    async def purge(
        topic: Topic, partition: Partition, offset: Offset, body: PurgeRequest, caller: Caller
    ) -> dict[str, Any]:
        """Drop the letter from triage (logically: the broker keeps it until retention)."""
        _admin(caller)
        return await dead_letters.purge(topic, partition, offset, by=caller, reason=body.reason)

    @router.post("/v1/dlq/{topic}/purge")
    async def purge_all(topic: Topic, body: PurgeRequest, caller: Caller) -> dict[str, Any]:
        """Purge every pending letter of the DLQ; how many were purged."""
        _admin(caller)
        return await dead_letters.purge_all(topic, by=caller, reason=body.reason)

    return router


def _reader(caller: Principal) -> None:
    _require(caller, DLQ_READ_SCOPE, "reading dead letters")


def _admin(caller: Principal) -> None:
    _require(caller, DLQ_ADMIN_SCOPE, "replaying or purging dead letters")


def _require(caller: Principal, scope: str, doing: str) -> None:
    caller.require_scope(scope)
    # A DLQ mixes every tenant's messages: this is the every-tenant check of
    # require_tenant, with no one tenant to compare against.
    if not caller.has_scope("*"):
        raise PermissionDenied(f"{doing} needs the '*' scope: dead letters cross tenants")
