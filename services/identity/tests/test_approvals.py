"""Approvals: asked over Kafka or HTTP, answered by a human, decided once, expired at the deadline."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mainstay_common.bus import Bus, Event
from mainstay_contracts.identity import (
    APPROVAL_EVENTS,
    SEND_MAIL,
    ApprovalEvent,
    SendMailCommand,
)

from .conftest import Identity, new_tenant

pytestmark = pytest.mark.real


def _deadline(seconds: float = 120) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


async def approval_events(
    identity: Identity, approval_id: str, count: int, wait_s: float = 20.0
) -> list[dict[str, Any]]:
    return await identity.events(
        APPROVAL_EVENTS, count, lambda e: e["approval_id"] == approval_id, wait_s
    )


async def ask(identity: Identity, requester: dict[str, str], **approval: Any) -> dict[str, Any]:
    to = approval.pop("to", ["hana"])
    body = {
        "kind": "approval-request",
        "to": to,
        "body": "The plan is attached.",
        "approval": {"question": "Book the $840 flight?", "deadline": _deadline(), **approval},
    }
    response = await identity.http.post("/v1/mail", json=body, headers=requester)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_approval_round_trip_over_kafka(identity: Identity) -> None:
    """The requester asks over Kafka, the human answers over Kafka, and the requester's own
    consumer receives ``approval.decided``."""
    tenant = new_tenant()
    planner_secret = await identity.register(tenant, "planner", [])
    planner = (await identity.token(f"{tenant}/planner", planner_secret)).json()["access_token"]
    hana_secret = await identity.register(tenant, "hana", [], kind="user")
    hana = (await identity.token(f"{tenant}/hana", hana_secret)).json()["access_token"]
    approval_id = f"ask-{uuid.uuid4().hex[:8]}"
    decided: list[ApprovalEvent] = []

    requester_bus = Bus(service=f"planner-{uuid.uuid4().hex[:6]}", kafka=identity.kafka)

    @requester_bus.subscriber(APPROVAL_EVENTS, handler="approvals")
    async def on_approval(event: Event[ApprovalEvent]) -> None:
        if event.payload.type == "approval.decided" and event.payload.approval_id == approval_id:
            decided.append(event.payload)

    async with requester_bus:
        await requester_bus.publish(
            SEND_MAIL,
            SendMailCommand.model_validate(
                {
                    "token": planner,
                    "message_id": approval_id,
                    "kind": "approval-request",
                    "to": ["hana"],
                    "approval": {
                        "question": "Book the $840 flight?",
                        "deadline": _deadline(),
                        "task_id": "task-42",
                    },
                }
            ),
        )
        [requested] = await approval_events(identity, approval_id, 1)
        assert (requested["type"], requested["status"], requested["approvers"]) == (
            "approval.requested",
            "pending",
            ["hana"],
        )
        assert (requested["task_id"], requested["options"]) == ("task-42", ["approve", "deny"])

        await requester_bus.publish(
            SEND_MAIL,
            SendMailCommand.model_validate(
                {
                    "token": hana,
                    "message_id": f"{approval_id}-answer",
                    "kind": "approval-reply",
                    "answer": {
                        "approval_id": approval_id,
                        "decision": "approve",
                        "reason": "within policy",
                    },
                }
            ),
        )
        for _ in range(200):
            if decided:
                break
            await asyncio.sleep(0.1)
    assert len(decided) == 1, "the requester's consumer never saw approval.decided"
    outcome = decided[0]
    assert (outcome.status, outcome.decision, outcome.reason, outcome.decided_by) == (
        "decided",
        "approve",
        "within policy",
        "hana",
    )
    assert outcome.approval_key == "task-42"
    # The answer is also a reply in the thread, in the requester's inbox.
    inbox = await identity.http.get("/v1/inbox", headers={"Authorization": f"Bearer {planner}"})
    [reply] = inbox.json()["messages"]
    assert (reply["kind"], reply["sender"], reply["thread_id"]) == (
        "approval-reply",
        "hana",
        approval_id,
    )
    assert reply["answer"]["decision"] == "approve"


async def test_a_human_answers_over_http_once_and_only_a_human_recipient_may(
    identity: Identity,
) -> None:
    tenant = new_tenant()
    planner = await identity.bearer(tenant, "planner")
    hana = await identity.bearer(tenant, "hana", kind="user")
    await identity.bearer(tenant, "helper")  # an agent recipient: may read, not answer
    omar = await identity.bearer(tenant, "omar", kind="user")  # a human, not asked
    asked = await ask(identity, planner, to=["hana", "helper"], options=["approve", "deny"])
    approval_id = asked["message_id"]
    assert asked["approval"]["status"] == "pending"
    assert asked["approval"]["approvers"] == ["hana"]

    inbox = (await identity.http.get("/v1/inbox", headers=hana)).json()["messages"]
    assert [(m["kind"], m["approval"]["question"]) for m in inbox] == [
        ("approval-request", "Book the $840 flight?")
    ]
    pending = (await identity.http.get("/v1/approvals?status=pending", headers=hana)).json()
    assert [a["approval_id"] for a in pending["approvals"]] == [approval_id]

    for who in (planner, omar):
        refused = await identity.http.post(
            f"/v1/approvals/{approval_id}/decision", json={"decision": "approve"}, headers=who
        )
        assert refused.status_code == 403, refused.text
        assert "only the human recipients" in refused.json()["error"]["message"]
    wrong = await identity.http.post(
        f"/v1/approvals/{approval_id}/decision", json={"decision": "maybe"}, headers=hana
    )
    assert wrong.status_code == 400
    assert "answer.decision" in wrong.text

    answered = await identity.http.post(
        f"/v1/approvals/{approval_id}/decision",
        json={"decision": "deny", "reason": "too expensive"},
        headers=hana,
    )
    assert answered.status_code == 201, answered.text
    assert answered.json()["approval"]["decision"] == "deny"
    again = await identity.http.post(
        f"/v1/approvals/{approval_id}/decision", json={"decision": "approve"}, headers=hana
    )
    assert again.status_code == 422
    assert "already answered: 'deny' by hana" in again.json()["error"]["message"]

    events = await approval_events(identity, approval_id, 2)
    assert [(e["type"], e["decision"]) for e in events] == [
        ("approval.requested", None),
        ("approval.decided", "deny"),
    ]
    # Nothing more was decided: a third event never comes.
    assert len(await approval_events(identity, approval_id, 3, wait_s=2.0)) == 2


async def test_an_agent_acting_for_the_human_cannot_answer(identity: Identity) -> None:
    tenant = new_tenant()
    planner = await identity.bearer(tenant, "planner")
    hana_secret = await identity.register(tenant, "hana", ["mail"], kind="user")
    hana = (await identity.token(f"{tenant}/hana", hana_secret)).json()["access_token"]
    assistant_secret = await identity.register(tenant, "assistant", ["mail"])
    exchanged = await identity.token(
        f"{tenant}/assistant",
        assistant_secret,
        grant_type="urn:ietf:params:oauth:grant-type:token-exchange",
        subject_token=hana,
        subject_token_type="urn:ietf:params:oauth:token-type:access_token",
    )
    assert exchanged.status_code == 200, exchanged.text
    on_behalf = {"Authorization": f"Bearer {exchanged.json()['access_token']}"}
    approval_id = (await ask(identity, planner))["message_id"]

    refused = await identity.http.post(
        f"/v1/approvals/{approval_id}/decision", json={"decision": "approve"}, headers=on_behalf
    )
    assert refused.status_code == 403
    assert "not by an agent acting for them (act: assistant)" in refused.json()["error"]["message"]


async def test_an_unanswered_request_expires_with_its_defined_outcome(identity: Identity) -> None:
    tenant = new_tenant()
    planner = await identity.bearer(tenant, "planner")
    hana = await identity.bearer(tenant, "hana", kind="user")
    asked = await ask(
        identity,
        planner,
        options=["approve", "deny", "escalate"],
        on_expiry="escalate",
        deadline=_deadline(1.5),
    )
    approval_id = asked["message_id"]

    events = await approval_events(identity, approval_id, 2)
    expired = events[1]
    assert (expired["type"], expired["status"], expired["decision"], expired["decided_by"]) == (
        "approval.decided",
        "expired",
        "escalate",
        None,
    )
    assert expired["reason"] == "no answer before the deadline"
    late = await identity.http.post(
        f"/v1/approvals/{approval_id}/decision", json={"decision": "approve"}, headers=hana
    )
    assert late.status_code == 422
    assert "expired at" in late.json()["error"]["message"]
    assert "its outcome is 'escalate'" in late.json()["error"]["message"]
    state = (await identity.http.get(f"/v1/approvals/{approval_id}", headers=planner)).json()
    assert (state["status"], state["decision"]) == ("expired", "escalate")


@pytest.mark.parametrize(
    ("approval", "to", "problem"),
    [
        ({"deadline": "2020-01-01T00:00:00Z"}, ["hana"], "approval.deadline"),
        ({}, ["helper"], "needs at least one human recipient"),
        ({"options": ["yes", "no"]}, ["hana"], "on_expiry: 'deny' is not one of the options"),
        ({"deadline": "tomorrow"}, ["hana"], "deadline"),
        ({"options": ["approve"]}, ["hana"], "options"),
    ],
)
async def test_bad_requests_name_the_problem(
    identity: Identity, approval: dict[str, Any], to: list[str], problem: str
) -> None:
    tenant = new_tenant()
    planner = await identity.bearer(tenant, "planner")
    await identity.bearer(tenant, "hana", kind="user")
    await identity.bearer(tenant, "helper")
    body = {
        "kind": "approval-request",
        "to": to,
        "approval": {"question": "Proceed?", "deadline": _deadline(), **approval},
    }
    response = await identity.http.post("/v1/mail", json=body, headers=planner)
    assert response.status_code in {400, 422}, response.text
    assert problem in response.text
    inbox = await identity.http.get("/v1/approvals", headers=planner)
    assert inbox.json()["approvals"] == []  # nothing half-made


async def test_another_tenant_cannot_see_or_answer_an_approval(identity: Identity) -> None:
    tenant, other = new_tenant(), new_tenant()
    planner = await identity.bearer(tenant, "planner")
    await identity.bearer(tenant, "hana", kind="user")
    intruder = await identity.bearer(other, "hana", kind="user")  # same name, other tenant
    approval_id = (await ask(identity, planner))["message_id"]

    assert (
        await identity.http.get(f"/v1/approvals/{approval_id}", headers=intruder)
    ).status_code == 404
    answer = await identity.http.post(
        f"/v1/approvals/{approval_id}/decision", json={"decision": "approve"}, headers=intruder
    )
    assert answer.status_code == 404
    assert (await identity.http.get("/v1/approvals", headers=intruder)).json()["approvals"] == []
    state = (await identity.http.get(f"/v1/approvals/{approval_id}", headers=planner)).json()
    assert state["status"] == "pending"
