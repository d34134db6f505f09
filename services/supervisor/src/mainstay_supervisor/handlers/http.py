"""The supervisor's HTTP API: the agent registry, supervised tasks, the fleet view.

Agent definitions are JSON or YAML (``Content-Type: application/yaml``).
Reading agents, tasks and notices needs ``supervisor:read``; registering,
quarantining and releasing agents ``supervisor:admin``, in the caller's own
tenant (another needs ``*``). ``GET /fleet`` and ``GET /v1/scaling`` are open,
like ``/metrics``: they name instances, consumer groups and figures, nothing
more.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mainstay_common.auth import Principal, require_principal
from mainstay_common.errors import InvalidArgument, describe_validation_error
from mainstay_contracts.supervisor import AgentDefinition
from mainstay_supervisor.progress import TaskState  # noqa: TC001 - FastAPI reads the annotation at runtime

if TYPE_CHECKING:
    from mainstay_supervisor.fleet import Fleet
    from mainstay_supervisor.monitor import KafkaMonitor
    from mainstay_supervisor.progress import Supervision
    from mainstay_supervisor.registry import Registry

__all__ = ["ADMIN_SCOPE", "READ_SCOPE", "create_router", "parse_definition"]

READ_SCOPE = "supervisor:read"
ADMIN_SCOPE = "supervisor:admin"
Caller = Annotated[Principal, Depends(require_principal)]
Tenant = Annotated[str, Path(min_length=1, max_length=200)]
AgentName = Annotated[str, Path(min_length=1, max_length=63)]
_MAX_INT32 = 2**31 - 1  # versions are PostgreSQL integers
_MAX_BODY = 1_000_000


class QuarantineRequest(BaseModel):
    """Why the agent is quarantined, or released."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000)


def parse_definition(body: bytes, content_type: str, *, tenant: str, name: str) -> AgentDefinition:
    """An agent definition from a JSON or YAML document; every problem named."""
    if len(body) > _MAX_BODY:
        raise InvalidArgument(f"body: larger than {_MAX_BODY} bytes")
    try:
        document = yaml.safe_load(body) if "yaml" in content_type else json.loads(body)
    except (yaml.YAMLError, ValueError) as exc:
        kind = "YAML" if "yaml" in content_type else "JSON"
        raise InvalidArgument(f"body: not valid {kind}: {exc}") from exc
    if not isinstance(document, dict):
        raise InvalidArgument("body: must be a mapping of the agent's fields")
    for field, expected in (("tenant", tenant), ("name", name)):
        given = document.setdefault(field, expected)
        if given != expected:
            raise InvalidArgument(f"{field}: '{given}' in the body, '{expected}' in the path")
    try:
        return AgentDefinition.model_validate(document)
    except ValidationError as exc:
        problems = describe_validation_error(exc)
        raise InvalidArgument(f"invalid agent definition: {problems}") from exc


def create_router(
    registry: Registry, fleet: Fleet, supervision: Supervision, monitor: KafkaMonitor
) -> APIRouter:
    router = APIRouter()

    @router.get("/fleet")
    async def fleet_view() -> dict[str, Any]:
        """``instances``: one entry per service instance (``service``, ``instance``, ``status``
        up/stale/dead, ``last_heartbeat``, ``stalled``); ``groups``: each consumer group's lag
        and rates; ``dead_letters``: messages per DLQ; ``scaling``: replicas per service."""
        return {"instances": await fleet.view(), **monitor.view()}

    @router.get("/v1/scaling")
    async def scaling() -> dict[str, Any]:
        """Recommended replicas per service, from consumer lag and throughput."""
        return {"services": monitor.view()["scaling"]}

    @router.get("/v1/tenants/{tenant}/tasks")
    async def tasks(
        tenant: Tenant,
        caller: Caller,
        state: TaskState | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """The tasks the supervisor follows, latest first: state, last progress, restarts."""
        _reader(caller, tenant, "tasks")
        return {"tasks": await supervision.tasks(tenant, state=state, limit=limit)}

    @router.get("/v1/tenants/{tenant}/notices")
    async def notices(
        tenant: Tenant, caller: Caller, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> dict[str, Any]:
        """What the supervisor told (or could not mail) humans: cancelled tasks, quarantines."""
        _reader(caller, tenant, "notices")
        return {"notices": await supervision.notices(tenant, limit=limit)}

    @router.post("/v1/tenants/{tenant}/agents/{name}/{action}")
    async def quarantine(
        tenant: Tenant,
        name: AgentName,
        action: Literal["quarantine", "release"],
        body: QuarantineRequest,
        caller: Caller,
    ) -> dict[str, Any]:
        """``quarantine``: the agent's new tasks are refused with ``reason``; ``release``: it
        takes tasks again, and its restarts so far no longer count."""
        _admin(caller, tenant)
        record, _ = await registry.set_quarantine(
            tenant,
            name,
            quarantined=action == "quarantine",
            reason=f"{body.reason} (by {caller.subject})",
        )
        return record.to_json()

    @router.put("/v1/tenants/{tenant}/agents/{name}")
    async def register(
        tenant: Tenant, name: AgentName, request: Request, caller: Caller
    ) -> JSONResponse:
        """Register the next version of the agent (a repeat of the latest changes nothing)."""
        _admin(caller, tenant)
        definition = parse_definition(
            await request.body(),
            request.headers.get("content-type", "application/json"),
            tenant=tenant,
            name=name,
        )
        record, created = await registry.register(definition, by=caller.subject)
        return JSONResponse(record.to_json(), status_code=201 if created else 200)

    @router.get("/v1/tenants/{tenant}/agents")
    async def list_agents(tenant: Tenant, caller: Caller) -> dict[str, Any]:
        _reader(caller, tenant)
        return {"agents": [r.to_json() for r in await registry.latest(tenant)]}

    @router.get("/v1/tenants/{tenant}/agents/{name}")
    async def get_agent(tenant: Tenant, name: AgentName, caller: Caller) -> dict[str, Any]:
        _reader(caller, tenant)
        return (await registry.get(tenant, name)).to_json()

    @router.get("/v1/tenants/{tenant}/agents/{name}/versions")
    async def versions(tenant: Tenant, name: AgentName, caller: Caller) -> dict[str, Any]:
        _reader(caller, tenant)
        return {"versions": [r.to_json() for r in await registry.versions(tenant, name)]}

    @router.get("/v1/tenants/{tenant}/agents/{name}/versions/{version}")
    async def version(
        tenant: Tenant,
        name: AgentName,
        version: Annotated[int, Path(ge=1, le=_MAX_INT32)],
        caller: Caller,
    ) -> dict[str, Any]:
        _reader(caller, tenant)
        return (await registry.get(tenant, name, version)).to_json()

    return router


def _reader(caller: Principal, tenant: str, what: str = "agents") -> None:
    caller.require_scope(READ_SCOPE)
    caller.require_tenant(tenant, doing=f"reading {what} of another tenant")


def _admin(caller: Principal, tenant: str) -> None:
    caller.require_scope(ADMIN_SCOPE)
    caller.require_tenant(tenant, doing="changing agents of another tenant")
