"""The budget's view of a task's hold, against the real PostgreSQL schema."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from mainstay_common.db import Database
from mainstay_common.settings import PostgresSettings
from mainstay_contracts.ledger import HoldSnapshot, LedgerEvent, UsageSnapshot
from mainstay_execution.budget import Budget, model_usage_id
from mainstay_execution.tasks import Tasks

from .conftest import new_tenant

if TYPE_CHECKING:
    from .conftest import Mesh

pytestmark = pytest.mark.real


def charged(tenant: str, task_id: str, cost: int, state: str) -> LedgerEvent:
    """The ledger's ``usage.recorded`` for step 1's model call, leaving the hold ``state``."""
    now = datetime.now(UTC)
    return LedgerEvent.model_validate(
        {
            "type": "usage.recorded",
            "tenant": tenant,
            "task_id": task_id,
            "currency": "USD",
            "usage": UsageSnapshot(
                usage_id=model_usage_id(task_id, 1),
                kind="model",
                resource="primary",
                step=1,
                cost=cost,
                price_version=1,
                covered=min(cost, 50),
            ),
            "hold": HoldSnapshot(
                cap=50,
                spent=min(cost, 50),
                remaining=max(0, 50 - cost),
                overrun=max(0, cost - 50),
                state=state,  # type: ignore[arg-type]
                timeout_at=now + timedelta(hours=1),
            ),
            "occurred_at": now,
        }
    )


async def test_a_charge_that_runs_the_hold_out_stops_a_turn_that_read_the_task_before_it(
    mesh: Mesh,
) -> None:
    tenant = new_tenant()
    await mesh.agent(tenant, "spender")
    async with mesh.instance(ledger=True):
        await mesh.known(tenant, "spender")
        task_id = await mesh.submit(tenant, "spender", "spend", max_cost_micros=50)
        # Nobody answers the hold here: the task waits for it, and the test is the ledger.
        await mesh.events(task_id, lambda e: e["details"].get("waiting_for") == "hold")
    async with Database(PostgresSettings(dsn=mesh.dsn), schema="execution") as database:
        budget = Budget(database, mesh.bus, outbox=None, enabled=True)  # type: ignore[arg-type]
        await database.execute("UPDATE tasks SET hold_state = 'open' WHERE task_id = $1", task_id)
        tasks = Tasks(database, mesh.bus, outbox=None)  # type: ignore[arg-type]
        task = await tasks.load(task_id)
        assert task is not None
        assert task.hold_state == "open"
        assert await budget.may_spend(task)

        # Step 1 is checkpointed: its usage is not confirmed yet.
        await database.execute(
            "INSERT INTO model_calls (task_id, step, attempt, provider, model, reply, usage_id)"
            " VALUES ($1, 1, 1, 'primary', 'primary', $2::jsonb, $3)",
            task_id,
            json.dumps({"text": "spent"}),
            model_usage_id(task_id, 1),
        )
        assert not await budget.may_spend(task)

        # The ledger charges 60 of the 50: the hold ran out. A turn holding the task as it
        # was read before the charge must not go on to the next step.
        async with database.pool.acquire() as tx, tx.transaction():
            assert await budget.on_ledger_event(tx, charged(tenant, task_id, 60, "exhausted"))
        assert not await budget.may_spend(task)
        now = await tasks.load(task_id)
        assert now is not None
        assert (now.hold_state, now.cost_micros) == ("exhausted", 60)
        assert await budget.unconfirmed(task_id) == 0

        # Confirmed and still open (a charge within the hold): the task may spend.
        await database.execute("UPDATE tasks SET hold_state = 'open' WHERE task_id = $1", task_id)
        assert await budget.may_spend(replace(task, hold_state="open"))
