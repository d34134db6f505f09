"""The HTTP API: synchronous calls, the registry and vault admin, and the audit trail.

Every route needs a bearer token. Calling a tool needs the tool's scope (by
default ``tools:call:<name>``); changing the registry or the vault needs
``tools:admin``; reading the audit trail needs ``tools:audit`` and shows the
caller's tenant only.

``POST /v1/tools/{name}/invoke`` answers 200 with the classified result for
every call the gateway handled, whatever the tool did (the ``outcome`` field
says what happened, ``Retry-After`` is set when a retry should wait). Only a
request the gateway cannot take at all gets an error status: 401 for a missing
or invalid token, 422 for a malformed body.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from mainstay_common.auth import Principal, require_principal
from mainstay_common.errors import InvalidArgument
from mainstay_contracts.tools import ToolCallEvent, ToolSpec
from mainstay_tools_gateway.domain.model import CallRequest
from mainstay_tools_gateway.handlers.mcp_server import (
    McpImportAnswer,
    McpImportBody,
    import_mcp_server,
)
from mainstay_tools_gateway.service import ADMIN_SCOPE, AUDIT_SCOPE, ToolsGateway
from mainstay_tools_gateway.store.calls import AuditQuery

__all__ = ["create_router"]

Caller = Annotated[Principal, Depends(require_principal)]
ToolName = Annotated[str, Path(min_length=1, max_length=200)]


class InvokeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    arguments: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str = Field(default="", max_length=300)
    task_id: str = Field(default="", max_length=200)
    step: int = Field(default=0, ge=0)
    deadline: datetime | None = None
    attempt: int = Field(default=1, ge=1)


class CredentialBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: str = Field(min_length=1, max_length=65_536, repr=False)
    tenant: str = Field(default="", max_length=200)
    """Empty: for every tenant. Must be the caller's own tenant unless it holds ``*``."""
    agent: str = Field(default="", max_length=200)
    """Empty: for every agent of the tenant."""


class RegisterAnswer(BaseModel):
    tool: ToolSpec
    changed: bool


def _owner(principal: Principal, tenant: str) -> None:
    principal.require_tenant(tenant, doing="credentials for another tenant (or for every tenant)")


def create_router(gateway: ToolsGateway) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.post("/tools/{name}/invoke", response_model=ToolCallEvent)
    async def invoke(name: ToolName, body: InvokeBody, principal: Caller) -> Response:
        result = await gateway.invoke(
            CallRequest(
                tool=name,
                arguments=body.arguments,
                idempotency_key=body.idempotency_key,
                task_id=body.task_id,
                step=body.step,
                deadline=body.deadline,
                attempt=body.attempt,
            ),
            principal,
            channel="http",
        )
        headers = {}
        if result.retry_after_s is not None:
            headers["Retry-After"] = str(max(0, math.ceil(result.retry_after_s)))
        # Already a validated model: sent as is, not validated again on the way out.
        return Response(result.model_dump_json(), media_type="application/json", headers=headers)

    @router.get("/tools", response_model=list[ToolSpec])
    async def list_tools(
        principal: Caller,
        callable_only: Annotated[bool, Query(description="only tools the caller may call")] = False,
    ) -> list[ToolSpec]:
        return gateway.list_tools(principal if callable_only else None)

    @router.get("/tools/{name}", response_model=ToolSpec)
    async def get_tool(name: ToolName, principal: Caller) -> ToolSpec:
        del principal
        return gateway.get_tool(name)

    @router.put("/tools/{name}", response_model=RegisterAnswer)
    async def put_tool(name: ToolName, spec: ToolSpec, principal: Caller) -> RegisterAnswer:
        principal.require_scope(ADMIN_SCOPE)
        if spec.name != name:
            raise InvalidArgument(f"the path names tool '{name}' but the body names '{spec.name}'")
        changed = await gateway.register(spec, changed_by=principal.subject)
        return RegisterAnswer(tool=spec, changed=changed)

    @router.delete("/tools/{name}", status_code=204)
    async def delete_tool(name: ToolName, principal: Caller) -> Response:
        principal.require_scope(ADMIN_SCOPE)
        await gateway.remove(name, changed_by=principal.subject)
        return Response(status_code=204)

    @router.get("/tools/{name}/credentials")
    async def list_credentials(name: ToolName, principal: Caller) -> list[dict[str, str]]:
        principal.require_scope(ADMIN_SCOPE)
        gateway.get_tool(name)
        return [
            c
            for c in await gateway.vault.list(tool=name)
            if principal.has_scope("*") or c["tenant"] == principal.tenant
        ]

    @router.put("/tools/{name}/credentials/{credential}", status_code=204)
    async def put_credential(
        name: ToolName,
        credential: Annotated[
            str, Path(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
        ],
        body: CredentialBody,
        principal: Caller,
    ) -> Response:
        principal.require_scope(ADMIN_SCOPE)
        _owner(principal, body.tenant)
        await gateway.set_credential(
            name,
            credential,
            body.value,
            tenant=body.tenant,
            agent=body.agent,
            changed_by=principal.subject,
        )
        return Response(status_code=204)

    @router.delete("/tools/{name}/credentials/{credential}", status_code=204)
    async def delete_credential(
        name: ToolName,
        credential: Annotated[str, Path(min_length=1, max_length=100)],
        principal: Caller,
        tenant: str = "",
        agent: str = "",
    ) -> Response:
        principal.require_scope(ADMIN_SCOPE)
        _owner(principal, tenant)
        await gateway.remove_credential(
            name, credential, tenant=tenant, agent=agent, changed_by=principal.subject
        )
        return Response(status_code=204)

    # -- MCP imports ---------------------------------------------------------------

    @router.post("/mcp/imports", response_model=McpImportAnswer)
    async def import_mcp(body: McpImportBody, principal: Caller) -> McpImportAnswer:
        """Register every tool of an MCP server (``tools:admin``); 503 if it is unreachable."""
        principal.require_scope(ADMIN_SCOPE)
        return await import_mcp_server(gateway, body, principal)

    # -- audit ---------------------------------------------------------------------

    @router.get("/audit")
    async def audit(
        *,
        principal: Caller,
        tool: str | None = None,
        agent: Annotated[str | None, Query(description="the calling principal's subject")] = None,
        task_id: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        principal.require_scope(AUDIT_SCOPE)
        rows = await gateway.calls.audit(
            AuditQuery(
                tenant=principal.tenant,
                tool=tool,
                principal=agent,
                task_id=task_id,
                outcome=outcome,
                since=since,
                until=until,
                limit=limit,
            )
        )
        return {"calls": rows}

    return router
