"""Holds, usage and closes over the real broker: what a task and its operator observe."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from mainstay_contracts.execution import TASK_EVENTS, TaskEvent
from mainstay_contracts.ledger import (
    CLOSE_HOLD,
    EXTEND_HOLD,
    OPEN_HOLD,
    RECORD_USAGE,
    CloseHoldCommand,
    ExtendHoldCommand,
    OpenHoldCommand,
    RecordUsageCommand,
)

from .conftest import ADMIN, new_tenant

if TYPE_CHECKING:
    from .conftest import Ledgers

pytestmark = pytest.mark.real


def usage(tenant: str, task: str, **fields: Any) -> RecordUsageCommand:
    values: dict[str, Any] = {
        "usage_id": uuid.uuid4().hex,
        "tenant": tenant,
        "task_id": task,
        "agent": "writer",
        "kind": "model",
        "resource": "gpt-test",
        "occurred_at": datetime.now(UTC),
        **fields,
    }
    return RecordUsageCommand(**values)


async def set_price(ledger: Ledgers, tenant: str, item: str, **prices: Any) -> dict[str, Any]:
    assert ledger.http is not None
    answer = await ledger.http.post(
        "/v1/prices",
        json={"item": item, "tenant": tenant, **prices},
        headers=ledger.headers(tenant),
    )
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


async def open_hold(ledger: Ledgers, tenant: str, task: str, amount: int, **fields: Any) -> str:
    await ledger.send(
        OPEN_HOLD,
        OpenHoldCommand(tenant=tenant, task_id=task, agent="writer", amount=amount, **fields),
    )
    found = await ledger.events(
        1, lambda e: e["task_id"] == task and e["type"] in ("hold.opened", "hold.denied")
    )
    assert found, f"no answer to open-hold of {task}"
    return str(found[0]["type"])


async def test_a_task_spends_against_its_hold_and_the_rest_is_released(ledger: Ledgers) -> None:
    tenant, task = new_tenant(), "task-1"
    price = await set_price(
        ledger, tenant, "model:gpt-test", input_per_mtok=2_000_000, output_per_mtok=8_000_000
    )
    await set_price(ledger, tenant, "tool:search", per_call=1500)
    assert await open_hold(ledger, tenant, task, 100_000) == "hold.opened"

    # 10k input + 2k output tokens = 20_000 + 16_000 micro-units
    model = usage(tenant, task, input_tokens=10_000, output_tokens=2_000, step=1)
    tool = usage(tenant, task, kind="tool", resource="search", calls=2, step=2)
    # A tool the price book does not know is charged at its producer's list price.
    listed = usage(tenant, task, kind="tool", resource="fetch", calls=1, list_price_micros=700)
    for command in (model, tool, listed):
        await ledger.send(RECORD_USAGE, command)
    recorded = await ledger.events(
        3, lambda e: e["task_id"] == task and e["type"] == "usage.recorded"
    )
    by_id = {e["usage"]["usage_id"]: e["usage"] for e in recorded}
    assert by_id[model.usage_id]["cost"] == 36_000
    assert by_id[model.usage_id]["price_version"] == price["version"]
    assert by_id[tool.usage_id]["cost"] == 3_000
    assert by_id[listed.usage_id] | {"cost": 700, "price_version": None} == by_id[listed.usage_id]
    assert recorded[-1]["hold"]["spent"] == 39_700
    assert recorded[-1]["hold"]["remaining"] == 60_300

    await ledger.send(CLOSE_HOLD, CloseHoldCommand(tenant=tenant, task_id=task, reason="done"))
    closed = await ledger.events(1, lambda e: e["task_id"] == task and e["type"] == "hold.closed")
    assert (
        closed[0]["hold"] | {"state": "closed", "spent": 39_700, "remaining": 0}
        == closed[0]["hold"]
    )
    assert closed[0]["reason"] == "done"
    agent = await ledger.fetch(
        "SELECT debits_posted, debits_pending FROM accounts WHERE id = $1",
        f"{tenant}/agent/writer/USD",
    )
    assert dict(agent[0]) == {"debits_posted": 39_700, "debits_pending": 0}
    await ledger.check_invariants()


async def test_usage_beyond_the_hold_is_recorded_and_answers_exhausted(ledger: Ledgers) -> None:
    tenant, task = new_tenant(), "task-over"
    await set_price(ledger, tenant, "tool:search", per_call=700)
    assert await open_hold(ledger, tenant, task, 1_000) == "hold.opened"
    first = usage(tenant, task, kind="tool", resource="search", calls=1)
    second = usage(tenant, task, kind="tool", resource="search", calls=1)
    third = usage(tenant, task, kind="tool", resource="search", calls=1)
    for command in (first, second, third):
        await ledger.send(RECORD_USAGE, command)
    types = await ledger.task_events(task, "hold.exhausted", "usage.recorded", "usage.recorded")
    assert types.count("hold.exhausted") == 1
    hold = await ledger.wait_hold(tenant, task, lambda h: h["overrun"] == 1_100)
    # 300 of the second call and none of the third were covered: the overshoot is the
    # call that ran the hold out, and what a task spends after ignoring the answer.
    assert (hold["state"], hold["spent"], hold["cap"]) == ("exhausted", 1_000, 1_000)
    covered = await ledger.fetch(
        "SELECT usage_id, covered FROM usage WHERE tenant = $1 ORDER BY recorded_at", tenant
    )
    assert [r["covered"] for r in covered] == [700, 300, 0]
    # Without approvers, asking for more is refused with the reason.
    await ledger.send(EXTEND_HOLD, ExtendHoldCommand(tenant=tenant, task_id=task, amount=5_000))
    denied = await ledger.events(
        1, lambda e: e["task_id"] == task and e["type"] == "hold.extension-denied"
    )
    assert "no approvers" in denied[0]["reason"]
    await ledger.check_invariants()


async def test_a_repeated_usage_id_is_posted_once(ledger: Ledgers) -> None:
    tenant, task = new_tenant(), "task-dup"
    await set_price(ledger, tenant, "tool:search", per_call=100)
    await open_hold(ledger, tenant, task, 10_000)
    command = usage(tenant, task, kind="tool", resource="search", calls=1)
    # the same command three times (a producer's retries: three event ids), and
    # one event delivered twice (the same event id)
    for _ in range(3):
        await ledger.send(RECORD_USAGE, command)
    event_id = str(uuid.uuid4())
    again = usage(tenant, task, kind="tool", resource="search", calls=1)
    await ledger.send(RECORD_USAGE, again, event_id=event_id)
    await ledger.send(RECORD_USAGE, again, event_id=event_id)
    marker = usage(tenant, task, kind="tool", resource="search", calls=1)
    await ledger.send(RECORD_USAGE, marker)
    await ledger.wait_hold(tenant, task, lambda h: h["spent"] >= 300)
    hold = await ledger.hold(tenant, task)
    assert hold is not None
    assert hold["spent"] == 300
    assert await ledger.wait_usage(tenant, 3) == 3
    await ledger.check_invariants()


async def test_a_hard_budget_denies_the_hold_and_a_soft_one_is_announced_once(
    ledger: Ledgers,
) -> None:
    tenant = new_tenant()
    assert ledger.http is not None
    for budget_id, body in (
        (
            "writer-daily",
            {"scope": "agent", "name": "writer", "period": "day", "hard_limit": 5_000},
        ),
        ("tenant-month", {"scope": "tenant", "period": "month", "soft_limit": 3_000}),
    ):
        answer = await ledger.http.put(
            f"/v1/tenants/{tenant}/budgets/{budget_id}", json=body, headers=ledger.headers(tenant)
        )
        assert answer.status_code == 200, answer.text
    assert await open_hold(ledger, tenant, "a", 2_000) == "hold.opened"
    assert await open_hold(ledger, tenant, "b", 2_000) == "hold.opened"  # 4_000 >= soft 3_000
    assert await open_hold(ledger, tenant, "c", 2_000) == "hold.denied"  # 6_000 > hard 5_000
    denied = await ledger.events(1, lambda e: e["task_id"] == "c" and e["type"] == "hold.denied")
    assert "budget 'writer-daily'" in denied[0]["reason"]
    assert "hard limit 5000" in denied[0]["reason"]
    # Another agent is not limited by the writer's budget; the soft notice is not repeated.
    await ledger.send(
        OPEN_HOLD, OpenHoldCommand(tenant=tenant, task_id="d", agent="reader", amount=2_000)
    )
    await ledger.events(1, lambda e: e["task_id"] == "d" and e["type"] == "hold.opened")
    notices = await ledger.events(
        2, lambda e: e["tenant"] == tenant and e["type"] == "budget.soft-limit", wait_s=3
    )
    assert len(notices) == 1
    assert notices[0]["budget"]["budget_id"] == "tenant-month"
    assert notices[0]["budget"]["committed"] == 4_000
    # Releasing a hold frees its reservation: the writer may open one again.
    await ledger.send(CLOSE_HOLD, CloseHoldCommand(tenant=tenant, task_id="a"))
    await ledger.events(1, lambda e: e["task_id"] == "a" and e["type"] == "hold.closed")
    assert await open_hold(ledger, tenant, "e", 2_000) == "hold.opened"
    burn = await ledger.http.get(
        f"/v1/tenants/{tenant}/budgets/writer-daily/burn-down", headers=ledger.headers(tenant)
    )
    assert burn.status_code == 200, burn.text
    assert burn.json() | {"spent": 0, "reserved": 4_000, "left": 1_000} == burn.json()
    await ledger.check_invariants()


async def test_bad_commands_go_to_the_dlq_with_the_reason_and_post_nothing(
    ledger: Ledgers,
) -> None:
    tenant = new_tenant()
    await open_hold(ledger, tenant, "open", 1_000)
    await ledger.send(CLOSE_HOLD, CloseHoldCommand(tenant=tenant, task_id="open"))
    await ledger.events(1, lambda e: e["task_id"] == "open" and e["type"] == "hold.closed")
    # amounts that are not positive integers never reach the handler
    assert ledger.bus is not None
    bad_amounts: list[Any] = [-5, 1.5, "10", 0]
    for index, amount in enumerate(bad_amounts):
        await ledger.bus.send_raw(
            f"{ledger.kafka.topic_prefix}{OPEN_HOLD.name}",
            key=f"bad-{index}".encode(),
            value=json.dumps(
                {"tenant": tenant, "task_id": f"bad-{index}", "agent": "a", "amount": amount}
            ).encode(),
            headers=_headers(tenant),
        )
    invalid = await ledger.dead_letters(
        "open-hold", 4, lambda r: r.key is not None and r.key.startswith(b"bad-")
    )
    assert len(invalid) == 4
    for record in invalid:
        headers = {k: v.decode() for k, v in record.headers}
        assert headers["mainstay-error-type"] == "InvalidMessage"
        assert "amount" in headers["mainstay-error-message"]
    # usage the rules refuse: a closed hold, a model without a price
    late = usage(tenant, "open", kind="tool", resource="search", list_price_micros=10, calls=1)
    unpriced = usage(tenant, "no-hold", resource="unknown-model", input_tokens=5)
    await ledger.send(RECORD_USAGE, late)
    await ledger.send(RECORD_USAGE, unpriced)
    refused = await ledger.dead_letters(
        "record-usage",
        2,
        lambda r: json.loads(r.value)["usage_id"] in (late.usage_id, unpriced.usage_id),
    )
    reasons = {
        json.loads(r.value)["usage_id"]: {k: v.decode() for k, v in r.headers} for r in refused
    }
    assert "is closed" in reasons[late.usage_id]["mainstay-error-message"]
    assert reasons[late.usage_id]["mainstay-error-type"] == "HoldRejected"
    assert (
        "no price for 'model:unknown-model'" in reasons[unpriced.usage_id]["mainstay-error-message"]
    )
    # a price in another currency than the hold's
    await set_price(ledger, tenant, "model:euro-model", currency="EUR", input_per_mtok=1_000_000)
    await open_hold(ledger, tenant, "usd-task", 1_000)
    euro = usage(tenant, "usd-task", resource="euro-model", input_tokens=1_000)
    await ledger.send(RECORD_USAGE, euro)
    [mismatch] = await ledger.dead_letters(
        "record-usage", 1, lambda r: json.loads(r.value)["usage_id"] == euro.usage_id
    )
    headers = {k: v.decode() for k, v in mismatch.headers}
    assert headers["mainstay-error-type"] == "CurrencyMismatch"
    assert "priced in EUR" in headers["mainstay-error-message"]
    # closing a hold no one opened
    await ledger.send(CLOSE_HOLD, CloseHoldCommand(tenant=tenant, task_id="never-opened"))
    missing = await ledger.dead_letters(
        "close-hold", 1, lambda r: json.loads(r.value)["task_id"] == "never-opened"
    )
    assert {k: v.decode() for k, v in missing[0].headers}["mainstay-error-class"] == "permanent"
    rows = await ledger.fetch("SELECT count(*) AS n FROM usage WHERE tenant = $1", tenant)
    assert rows[0]["n"] == 0
    holds = await ledger.fetch(
        "SELECT task_id, spent FROM holds WHERE tenant = $1 ORDER BY task_id", tenant
    )
    assert [(r["task_id"], r["spent"]) for r in holds] == [("open", 0), ("usd-task", 0)]
    await ledger.check_invariants()


def _headers(tenant: str) -> list[tuple[str, bytes]]:
    return [
        ("ce_specversion", b"1.0"),
        ("ce_id", str(uuid.uuid4()).encode()),
        ("ce_source", b"tests"),
        ("ce_type", b"mainstay.ledger.cmd.open-hold"),
        ("ce_time", datetime.now(UTC).isoformat().encode()),
        ("content-type", b"application/json"),
        ("mainstay-tenant", tenant.encode()),
    ]


async def test_a_task_that_ends_closes_its_hold_and_counts_in_cost_per_success(
    ledger: Ledgers,
) -> None:
    tenant = new_tenant()
    await set_price(ledger, tenant, "tool:search", per_call=1_000)
    outcomes = {"ok-1": "task.completed", "ok-2": "task.completed", "bad": "task.failed"}
    calls = {"ok-1": 1, "ok-2": 3, "bad": 2}
    for task, calls_made in calls.items():
        await open_hold(ledger, tenant, task, 10_000)
        await ledger.send(
            RECORD_USAGE, usage(tenant, task, kind="tool", resource="search", calls=calls_made)
        )
    await ledger.wait_usage(tenant, 3)
    for task, outcome in outcomes.items():
        await ledger.send(
            TASK_EVENTS,
            TaskEvent(type=outcome, task_id=task, tenant=tenant, occurred_at=datetime.now(UTC)),
        )
    for task in outcomes:
        await ledger.events(1, lambda e, t=task: e["task_id"] == t and e["type"] == "hold.closed")
    assert ledger.http is not None
    report = await ledger.http.get(
        f"/v1/tenants/{tenant}/cost-per-success", headers=ledger.headers(tenant, ADMIN)
    )
    assert report.status_code == 200, report.text
    (usd,) = report.json()["currencies"]
    assert usd == {
        "currency": "USD",
        "completed_tasks": 2,
        "completed_spend": 4_000,
        "cost_per_successful_task": 2_000,
        "failed_tasks": 1,
        "cancelled_tasks": 0,
        "wasted_spend": 2_000,
    }
    by_task = await ledger.http.get(
        f"/v1/tenants/{tenant}/spend",
        params={"group_by": "task"},
        headers=ledger.headers(tenant, ("ledger:read",)),
    )
    assert {g["key"]: g["spend"] for g in by_task.json()["groups"]} == {
        "ok-1": 1_000,
        "ok-2": 3_000,
        "bad": 2_000,
    }
    by_tool = await ledger.http.get(
        f"/v1/tenants/{tenant}/spend",
        params={"group_by": "tool", "since": (datetime.now(UTC) - timedelta(hours=1)).isoformat()},
        headers=ledger.headers(tenant, ("ledger:read",)),
    )
    assert [(g["key"], g["spend"], g["calls"]) for g in by_tool.json()["groups"]] == [
        ("search", 6_000, 6)
    ]
    await ledger.check_invariants()


async def test_a_hold_past_its_timeout_expires(ledger: Ledgers) -> None:
    tenant, task = new_tenant(), "slow"
    await open_hold(ledger, tenant, task, 5_000, timeout_s=1)
    expired = await ledger.events(
        1, lambda e: e["task_id"] == task and e["type"] == "hold.expired", wait_s=10
    )
    assert expired[0]["hold"]["state"] == "expired"
    assert expired[0]["reason"] == "timed out"
    await ledger.check_invariants()


async def test_reports_need_a_token_with_the_scope_of_the_tenant(ledger: Ledgers) -> None:
    assert ledger.http is not None
    tenant = new_tenant()
    path = f"/v1/tenants/{tenant}/spend"
    assert (await ledger.http.get(path)).status_code == 401
    assert (await ledger.http.get(path, headers=ledger.headers(tenant, ()))).status_code == 403
    other = await ledger.http.get(path, headers=ledger.headers("someone-else", ("ledger:read",)))
    assert other.status_code == 403
    assert "another tenant" in other.text
    bad = await ledger.http.get(path, params={"group_by": "colour"}, headers=ledger.headers(tenant))
    assert bad.status_code in (400, 422)
    assert "group_by" in bad.text
    budget = await ledger.http.put(
        f"/v1/tenants/{tenant}/budgets/b",
        json={"scope": "team", "period": "week", "hard_limit": 1.5},
        headers=ledger.headers(tenant),
    )
    assert budget.status_code in (400, 422)
    for field in ("period", "hard_limit"):
        assert field in budget.text
    reader = await ledger.http.put(
        f"/v1/tenants/{tenant}/budgets/b",
        json={"scope": "tenant", "period": "day", "hard_limit": 10},
        headers=ledger.headers(tenant, ("ledger:read",)),
    )
    assert reader.status_code == 403
