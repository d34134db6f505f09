"""The ledger's HTTP API: reports, budgets, prices and holds.

Reading needs the ``ledger:read`` scope, changing budgets and prices
``ledger:admin``; both in the caller's own tenant (another tenant, or the
prices of every tenant, need ``*``).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt, model_validator

from mainstay_common.auth import Principal, require_principal
from mainstay_common.errors import NotFound
from mainstay_ledger import pricebook, reports

if TYPE_CHECKING:
    from typing import Self

    from mainstay_common.db import Database
    from mainstay_ledger.settings import LedgerSettings

__all__ = ["ADMIN_SCOPE", "READ_SCOPE", "create_router"]

READ_SCOPE = "ledger:read"
ADMIN_SCOPE = "ledger:admin"
Caller = Annotated[Principal, Depends(require_principal)]
Tenant = Annotated[str, Path(min_length=1, max_length=200)]
Id = Annotated[str, Path(min_length=1, max_length=200)]
Limit = Annotated[StrictInt, Field(gt=0, le=2**63 - 1)]


class BudgetBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scope: Literal["tenant", "team", "agent"]
    name: str = Field(default="", max_length=200, description="The team or agent; '' for tenant.")
    period: Literal["day", "month"]
    currency: str = Field(default="", pattern=r"^([A-Z]{3})?$")
    soft_limit: Limit | None = None
    hard_limit: Limit | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.soft_limit is None and self.hard_limit is None:
            raise ValueError("soft_limit/hard_limit: give at least one")
        if (
            self.soft_limit is not None
            and self.hard_limit is not None
            and self.soft_limit > self.hard_limit
        ):
            raise ValueError("soft_limit: must not exceed hard_limit")
        if (self.scope == "tenant") == bool(self.name):
            raise ValueError("name: required for a team or agent budget, and only for them")
        return self


class PriceBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item: str = Field(pattern=r"^(model|tool):.{1,200}$", description="model:<name> or tool:<name>")
    currency: str = Field(default="", pattern=r"^([A-Z]{3})?$")
    tenant: str = Field(default="", max_length=200, description="'' prices it for every tenant.")
    input_per_mtok: StrictInt = Field(default=0, ge=0)
    output_per_mtok: StrictInt = Field(default=0, ge=0)
    cached_per_mtok: StrictInt = Field(default=0, ge=0)
    per_call: StrictInt = Field(default=0, ge=0)
    effective_from: AwareDatetime | None = None


def _reader(caller: Principal, tenant: str) -> None:
    caller.require_scope(READ_SCOPE)
    caller.require_tenant(tenant, doing="reading another tenant's ledger")


def _admin(caller: Principal, tenant: str) -> None:
    caller.require_scope(ADMIN_SCOPE)
    caller.require_tenant(tenant, doing="changing another tenant's ledger")


def create_router(database: Database, settings: LedgerSettings) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.get("/tenants/{tenant}/spend")
    async def spend(
        *,
        tenant: Tenant,
        caller: Caller,
        group_by: reports.Group = "agent",
        since: datetime | None = None,
        until: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    ) -> dict[str, Any]:
        """Spend in ``[since, until)`` (default: this month so far) by tenant, team, agent,
        task, model or tool."""
        _reader(caller, tenant)
        return await reports.spend(
            database, tenant=tenant, group_by=group_by, since=since, until=until, limit=limit
        )

    @router.get("/tenants/{tenant}/cost-per-success")
    async def cost_per_success(
        *,
        tenant: Tenant,
        caller: Caller,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> dict[str, Any]:
        """For tasks that ended in the window: cost per completed task, spend wasted on
        failed and cancelled ones."""
        _reader(caller, tenant)
        return await reports.cost_per_success(database, tenant=tenant, since=since, until=until)

    @router.get("/tenants/{tenant}/budgets")
    async def list_budgets(tenant: Tenant, caller: Caller) -> dict[str, Any]:
        _reader(caller, tenant)
        rows = await database.fetch(
            "SELECT * FROM budgets WHERE tenant = $1 ORDER BY budget_id", tenant
        )
        return {"budgets": [_budget_json(row) for row in rows]}

    @router.put("/tenants/{tenant}/budgets/{budget_id}")
    async def put_budget(
        tenant: Tenant, budget_id: Id, body: BudgetBody, caller: Caller
    ) -> dict[str, Any]:
        """Create or replace a budget; it applies to holds opened from now on."""
        _admin(caller, tenant)
        row = await database.fetchrow(
            "INSERT INTO budgets (tenant, budget_id, scope, name, period, currency, soft_limit,"
            " hard_limit) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            " ON CONFLICT (tenant, budget_id) DO UPDATE SET scope = excluded.scope,"
            " name = excluded.name, period = excluded.period, currency = excluded.currency,"
            " soft_limit = excluded.soft_limit, hard_limit = excluded.hard_limit,"
            " updated_at = now() RETURNING *",
            tenant,
            budget_id,
            body.scope,
            body.name,
            body.period,
            body.currency or settings.currency,
            body.soft_limit,
            body.hard_limit,
        )
        assert row is not None
        return _budget_json(row)

    @router.delete("/tenants/{tenant}/budgets/{budget_id}", status_code=204)
    async def delete_budget(tenant: Tenant, budget_id: Id, caller: Caller) -> None:
        _admin(caller, tenant)
        status = await database.execute(
            "DELETE FROM budgets WHERE tenant = $1 AND budget_id = $2", tenant, budget_id
        )
        if status.endswith(" 0"):
            raise NotFound(f"budget_id: no budget '{budget_id}' in tenant '{tenant}'")

    @router.get("/tenants/{tenant}/budgets/{budget_id}/burn-down")
    async def burn_down(tenant: Tenant, budget_id: Id, caller: Caller) -> dict[str, Any]:
        """The budget's current period: committed against the limits, spend over time, and
        when the limit runs out at the pace so far."""
        _reader(caller, tenant)
        return await reports.burn_down(database, tenant=tenant, budget_id=budget_id)

    @router.get("/tenants/{tenant}/holds/{task_id}")
    async def hold(tenant: Tenant, task_id: Id, caller: Caller) -> dict[str, Any]:
        """A task's hold and every transfer of it."""
        _reader(caller, tenant)
        row = await database.fetchrow(
            "SELECT * FROM holds WHERE tenant = $1 AND task_id = $2", tenant, task_id
        )
        if row is None:
            raise NotFound(f"task_id: no hold for task '{task_id}' in tenant '{tenant}'")
        transfers = await database.fetch(
            "SELECT id, kind, code, debit_account, credit_account, amount, step, created_at"
            " FROM transfers WHERE tenant = $1 AND task_id = $2 ORDER BY created_at, id",
            tenant,
            task_id,
        )
        return {
            **_hold_json(row),
            "transfers": [
                {**dict(t), "created_at": t["created_at"].isoformat()} for t in transfers
            ],
        }

    @router.post("/prices", status_code=201)
    async def set_price(body: PriceBody, caller: Caller) -> dict[str, Any]:
        """Add the next version of an item's price, in force from ``effective_from`` (now)."""
        caller.require_scope(ADMIN_SCOPE)
        caller.require_tenant(body.tenant, doing="pricing for another tenant or every tenant")
        async with database.pool.acquire() as conn, conn.transaction():
            price = await pricebook.set_price(
                conn,
                item=body.item,
                currency=body.currency or settings.currency,
                tenant=body.tenant,
                input_per_mtok=body.input_per_mtok,
                output_per_mtok=body.output_per_mtok,
                cached_per_mtok=body.cached_per_mtok,
                per_call=body.per_call,
                effective_from=body.effective_from,
            )
        return _price_json(price)

    @router.get("/tenants/{tenant}/prices/{item}")
    async def price(
        tenant: Tenant, item: Annotated[str, Path(max_length=210)], caller: Caller
    ) -> dict[str, Any]:
        """The price of ``item`` in force now for ``tenant``."""
        _reader(caller, tenant)
        async with database.pool.acquire() as conn:
            found = await pricebook.price_in_force(
                conn, tenant=tenant, item=item, at=datetime.now().astimezone()
            )
        return _price_json(found)

    return router


def _budget_json(row: Any) -> dict[str, Any]:
    return {
        "budget_id": row["budget_id"],
        "tenant": row["tenant"],
        "scope": row["scope"],
        "name": row["name"],
        "period": row["period"],
        "currency": row["currency"],
        "soft_limit": row["soft_limit"],
        "hard_limit": row["hard_limit"],
        "updated_at": row["updated_at"].isoformat(),
    }


def _hold_json(row: Any) -> dict[str, Any]:
    live = row["state"] in ("open", "exhausted", "closing")
    return {
        "tenant": row["tenant"],
        "task_id": row["task_id"],
        "agent": row["agent"],
        "team": row["team"],
        "currency": row["currency"],
        "state": row["state"],
        "reason": row["reason"],
        "cap": row["cap"],
        "spent": row["spent"],
        "overrun": row["overrun"],
        "remaining": row["cap"] - row["spent"] if live else 0,
        "extensions": row["extensions"],
        "awaiting_approval": row["approval_id"],
        "timeout_at": row["timeout_at"].isoformat(),
        "opened_at": row["opened_at"].isoformat(),
        "closed_at": row["closed_at"].isoformat() if row["closed_at"] else None,
    }


def _price_json(price: pricebook.Price) -> dict[str, Any]:
    return {
        "tenant": price.tenant,
        "item": price.item,
        "version": price.version,
        "currency": price.currency,
        "input_per_mtok": price.input_per_mtok,
        "output_per_mtok": price.output_per_mtok,
        "cached_per_mtok": price.cached_per_mtok,
        "per_call": price.per_call,
        "effective_from": price.effective_from.isoformat(),
    }
