"""Approval to exceed, end to end: the ledger, the identity service and a human's inbox."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest

from mainstay_contracts.ledger import OPEN_HOLD, RECORD_USAGE, OpenHoldCommand, RecordUsageCommand
from mainstay_identity.testing import running_identity

from .conftest import new_tenant, running_ledgers

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from mainstay_identity.testing import Identity

    from .conftest import Ledgers

pytestmark = pytest.mark.real


@contextlib.asynccontextmanager
async def mesh(
    kafka_bootstrap: str, postgres_dsn: str, home: Path, **ledger_settings: Any
) -> AsyncIterator[tuple[Identity, Ledgers, str, dict[str, str]]]:
    """Identity and a ledger on the same topics; a tenant with a human approver ('alice',
    whose headers are yielded) and the ledger's own principal."""
    tenant = new_tenant()
    (home / "identity").mkdir()
    (home / "ledger").mkdir()
    async with running_identity(kafka_bootstrap, postgres_dsn, home / "identity") as identity:
        secret = await identity.register(tenant, "ledger", [], kind="service")
        alice = await identity.bearer(tenant, "alice", [], kind="user")
        async with running_ledgers(
            kafka_bootstrap,
            postgres_dsn,
            home / "ledger",
            kafka=identity.kafka,
            identity_url=f"http://127.0.0.1:{identity.app.http_port}",
            approval_credentials=[f"{tenant}/ledger:{secret}"],
            **ledger_settings,
        ) as ledgers:
            assert ledgers.http is not None
            answer = await ledgers.http.post(
                "/v1/prices",
                json={"item": "tool:search", "tenant": tenant, "per_call": 700},
                headers=ledgers.headers(tenant),
            )
            assert answer.status_code == 201, answer.text
            yield identity, ledgers, tenant, alice


async def run_out(ledgers: Ledgers, tenant: str, task: str) -> dict[str, Any]:
    """Open a 1_000 hold with alice as approver, spend 1_400, and return the request event."""
    await spend_past_the_hold(ledgers, tenant, task)
    requested = await ledgers.events(
        1, lambda e: e["task_id"] == task and e["type"] == "hold.extension-requested"
    )
    assert requested, (
        f"no extension was asked for: {await ledgers.hold(tenant, task)}"
        f" {await ledgers.events(10, lambda e: e['task_id'] == task, wait_s=2)}"
    )
    return requested[0]


async def spend_past_the_hold(ledgers: Ledgers, tenant: str, task: str) -> None:
    """Open a 1_000 hold with alice as approver and spend 1_400 of it."""
    await ledgers.send(
        OPEN_HOLD,
        OpenHoldCommand(
            tenant=tenant,
            task_id=task,
            agent="writer",
            amount=1_000,
            approvers=["alice"],
            extension_amount=2_000,
        ),
    )
    # A task spends once its hold is open (usage and holds travel on different topics).
    await ledgers.task_events(task, "hold.opened")
    for _ in range(2):
        await ledgers.send(RECORD_USAGE, search(tenant, task))


def search(tenant: str, task: str) -> RecordUsageCommand:
    return RecordUsageCommand(
        usage_id=uuid.uuid4().hex,
        tenant=tenant,
        task_id=task,
        agent="writer",
        kind="tool",
        resource="search",
        calls=1,
        occurred_at=datetime.now(UTC),
    )


async def inbox_message(identity: Identity, alice: dict[str, str], message_id: str) -> Any:
    for _ in range(200):
        inbox = await identity.http.get("/v1/inbox", headers=alice)
        assert inbox.status_code == 200, inbox.text
        found = [m for m in inbox.json()["messages"] if m["message_id"] == message_id]
        if found:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"message {message_id} never reached the inbox")


async def pending_approval(identity: Identity, alice: dict[str, str], approval_id: str) -> Any:
    answer = await identity.http.get(f"/v1/approvals/{approval_id}", headers=alice)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_an_approved_extension_lets_the_task_spend_on(
    kafka_bootstrap: str, postgres_dsn: str, tmp_path: Path
) -> None:
    async with mesh(kafka_bootstrap, postgres_dsn, tmp_path) as (identity, ledgers, tenant, alice):
        requested = await run_out(ledgers, tenant, "t-approve")
        assert requested["hold"]["state"] == "exhausted"
        # The request reaches alice's inbox (identity delivers it from its Kafka command).
        message = await inbox_message(identity, alice, requested["approval_id"])
        assert message["kind"] == "approval-request"
        assert "t-approve" in message["body"]
        assert "Allow 2000 more" in message["body"]
        assert message["sender"] == "ledger"
        approval = await pending_approval(identity, alice, requested["approval_id"])
        assert approval["task_id"] == "t-approve"
        decided = await identity.http.post(
            f"/v1/approvals/{requested['approval_id']}/decision",
            json={"decision": "approve", "reason": "worth it"},
            headers=alice,
        )
        assert decided.status_code == 201, decided.text
        extended = await ledgers.events(
            1, lambda e: e["task_id"] == "t-approve" and e["type"] == "hold.extended"
        )
        hold = extended[0]["hold"]
        assert (hold["cap"], hold["spent"], hold["remaining"], hold["state"]) == (
            3_000,
            1_000,
            2_000,
            "open",
        )
        await ledgers.send(RECORD_USAGE, search(tenant, "t-approve"))
        after = await ledgers.wait_hold(tenant, "t-approve", lambda h: h["spent"] == 1_700)
        assert after["overrun"] == 400
        await ledgers.check_invariants()


async def test_a_denied_extension_is_announced_with_who_and_why(
    kafka_bootstrap: str, postgres_dsn: str, tmp_path: Path
) -> None:
    async with mesh(kafka_bootstrap, postgres_dsn, tmp_path) as (identity, ledgers, tenant, alice):
        requested = await run_out(ledgers, tenant, "t-deny")
        await inbox_message(identity, alice, requested["approval_id"])
        decided = await identity.http.post(
            f"/v1/approvals/{requested['approval_id']}/decision",
            json={"decision": "deny", "reason": "too expensive"},
            headers=alice,
        )
        assert decided.status_code == 201, decided.text
        denied = await ledgers.events(
            1, lambda e: e["task_id"] == "t-deny" and e["type"] == "hold.extension-denied"
        )
        assert denied[0]["reason"] == "deny by alice: too expensive"
        assert denied[0]["hold"]["cap"] == 1_000
        hold = await ledgers.hold(tenant, "t-deny")
        assert hold is not None
        assert (hold["approval_id"], hold["state"]) == (None, "exhausted")
        await ledgers.check_invariants()


async def test_a_request_sent_late_still_gives_the_approvers_their_whole_time(
    kafka_bootstrap: str, postgres_dsn: str, tmp_path: Path
) -> None:
    # The sweep that sends requests runs only when called here: the request goes
    # out after the deadline it was recorded with has passed (a ledger that was
    # down, a slow sweep). Counted from the recording, identity would refuse it.
    async with mesh(
        kafka_bootstrap, postgres_dsn, tmp_path, approval_timeout_s=2, sweep_interval_s=60
    ) as (identity, ledgers, tenant, alice):
        await spend_past_the_hold(ledgers, tenant, "t-slow")
        recorded = await ledgers.wait_hold(tenant, "t-slow", lambda h: h["approval_id"] is not None)
        assert not recorded["approval_sent"]
        await asyncio.sleep(2.5)
        ledger = ledgers.apps[0].ledger
        assert ledger is not None
        assert await ledger.sweep() == 1
        sent = await ledgers.hold(tenant, "t-slow")
        assert sent is not None
        assert sent["approval_sent"]
        assert sent["approval_deadline"] > datetime.now(UTC)
        await inbox_message(identity, alice, recorded["approval_id"])
        decided = await identity.http.post(
            f"/v1/approvals/{recorded['approval_id']}/decision",
            json={"decision": "approve"},
            headers=alice,
        )
        assert decided.status_code == 201, decided.text
        extended = await ledgers.events(
            1, lambda e: e["task_id"] == "t-slow" and e["type"] == "hold.extended"
        )
        assert extended[0]["hold"]["cap"] == 3_000


async def test_an_unanswered_extension_is_denied_at_its_deadline(
    kafka_bootstrap: str, postgres_dsn: str, tmp_path: Path
) -> None:
    # The deadline runs from the request's sending: long enough for the request to
    # reach identity on a loaded machine, short enough to wait for.
    async with mesh(kafka_bootstrap, postgres_dsn, tmp_path, approval_timeout_s=3) as (
        identity,
        ledgers,
        tenant,
        alice,
    ):
        requested = await run_out(ledgers, tenant, "t-late")
        denied = await ledgers.events(
            1, lambda e: e["task_id"] == "t-late" and e["type"] == "hold.extension-denied"
        )
        assert denied[0]["reason"] == "no answer before the deadline"
        await inbox_message(identity, alice, requested["approval_id"])
        # Answering after the deadline changes nothing.
        late = await identity.http.post(
            f"/v1/approvals/{requested['approval_id']}/decision",
            json={"decision": "approve"},
            headers=alice,
        )
        assert late.status_code in (409, 422), late.text
        hold = await ledgers.hold(tenant, "t-late")
        assert hold is not None
        assert hold["cap"] == 1_000
        await ledgers.check_invariants()


async def test_without_credentials_for_the_tenant_the_extension_is_refused(
    kafka_bootstrap: str, postgres_dsn: str, tmp_path: Path
) -> None:
    async with running_ledgers(kafka_bootstrap, postgres_dsn, tmp_path) as ledgers:
        tenant = new_tenant()
        assert ledgers.http is not None
        await ledgers.http.post(
            "/v1/prices",
            json={"item": "tool:search", "tenant": tenant, "per_call": 700},
            headers=ledgers.headers(tenant),
        )
        await ledgers.send(
            OPEN_HOLD,
            OpenHoldCommand(
                tenant=tenant, task_id="t", agent="writer", amount=500, approvers=["alice"]
            ),
        )
        await ledgers.task_events("t", "hold.opened")
        await ledgers.send(RECORD_USAGE, search(tenant, "t"))
        denied = await ledgers.events(
            1, lambda e: e["task_id"] == "t" and e["type"] == "hold.extension-denied"
        )
        assert "no approval credentials for tenant" in denied[0]["reason"]
