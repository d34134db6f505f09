"""The supervisor's HTTP API: the agent registry and the fleet view.

Agent definitions are JSON or YAML (``Content-Type: application/yaml``).
Reading agents needs ``supervisor:read``, registering ``supervisor:admin``,
in the caller's own tenant (another needs ``*``). ``GET /fleet`` is open, like
``/metrics``: it names instances and their state, nothing more.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import yaml
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from mainstay_common.auth import Principal, require_principal
from mainstay_common.errors import InvalidArgument, describe_validation_error
from mainstay_contracts.supervisor import AgentDefinition

if TYPE_CHECKING:
    from mainstay_supervisor.fleet import Fleet
    from mainstay_supervisor.registry import Registry

__all__ = ["ADMIN_SCOPE", "READ_SCOPE", "create_router", "parse_definition"]

READ_SCOPE = "supervisor:read"
ADMIN_SCOPE = "supervisor:admin"
Caller = Annotated[Principal, Depends(require_principal)]
Tenant = Annotated[str, Path(min_length=1, max_length=200)]
AgentName = Annotated[str, Path(min_length=1, max_length=63)]
_MAX_BODY = 1_000_000


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


def create_router(registry: Registry, fleet: Fleet) -> APIRouter:
    router = APIRouter()

    @router.get("/fleet")
    async def fleet_view() -> dict[str, Any]:
        """One entry per service instance: ``service``, ``instance``, ``status`` (up, stale or
        dead), ``last_heartbeat``."""
        return {"instances": await fleet.view()}

    @router.put("/v1/tenants/{tenant}/agents/{name}")
    async def register(
        tenant: Tenant, name: AgentName, request: Request, caller: Caller
    ) -> JSONResponse:
        """Register the next version of the agent (a repeat of the latest changes nothing)."""
        caller.require_scope(ADMIN_SCOPE)
        caller.require_tenant(tenant, doing="registering agents of another tenant")
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
        tenant: Tenant, name: AgentName, version: int, caller: Caller
    ) -> dict[str, Any]:
        _reader(caller, tenant)
        return (await registry.get(tenant, name, version)).to_json()

    return router


def _reader(caller: Principal, tenant: str) -> None:
    caller.require_scope(READ_SCOPE)
    caller.require_tenant(tenant, doing="reading agents of another tenant")
