"""Inboxes: sending over HTTP and Kafka, reading, the events, and tenant isolation."""

from __future__ import annotations

import uuid

import pytest

from mainstay_common.bus import Bus
from mainstay_contracts.identity import MAILBOX_EVENTS, SEND_MAIL, SendMailCommand

from .conftest import Identity, new_tenant

pytestmark = pytest.mark.real


async def events_of(
    identity: Identity, thread: str, count: int, wait_s: float = 20.0
) -> list[dict[str, object]]:
    return await identity.events(
        MAILBOX_EVENTS, count, lambda e: e["message"]["thread_id"] == thread, wait_s
    )


async def test_a_message_reaches_each_inbox_and_reads_are_announced(identity: Identity) -> None:
    tenant = new_tenant()
    planner = await identity.bearer(tenant, "planner")
    ann = await identity.bearer(tenant, "ann")
    bob = await identity.bearer(tenant, "bob")
    sent = await identity.http.post(
        "/v1/mail",
        json={
            "to": ["ann", "bob"],
            "subject": "Trip plan",
            "body": "Three options attached.",
            "attachments": [{"name": "plan", "data": {"days": 3}}],
            "labels": ["travel"],
        },
        headers=planner,
    )
    assert sent.status_code == 201, sent.text
    message = sent.json()
    assert (message["sender"], message["to"]) == ("planner", ["ann", "bob"])
    assert message["thread_id"] == message["message_id"]

    inbox = (await identity.http.get("/v1/inbox", params={"unread": "true"}, headers=ann)).json()
    assert [m["subject"] for m in inbox["messages"]] == ["Trip plan"]
    assert inbox["messages"][0]["attachments"] == [
        {"name": "plan", "content_type": "application/json", "data": {"days": 3}}
    ]
    read = await identity.http.post(f"/v1/inbox/{message['message_id']}/read", headers=ann)
    assert read.json()["read_at"] is not None
    again = (await identity.http.get("/v1/inbox", params={"unread": "true"}, headers=ann)).json()
    assert again["messages"] == []
    assert len((await identity.http.get("/v1/inbox", headers=bob)).json()["messages"]) == 1

    events = await events_of(identity, message["thread_id"], 3)
    assert sorted((e["type"], e["recipient"]) for e in events) == [
        ("delivered", "ann"),
        ("delivered", "bob"),
        ("read", "ann"),
    ]
    assert all("body" not in e["message"] for e in events)  # events carry no content


async def test_unknown_recipients_are_named_and_nothing_is_sent(identity: Identity) -> None:
    tenant = new_tenant()
    planner = await identity.bearer(tenant, "planner")
    await identity.bearer(tenant, "ann")
    response = await identity.http.post(
        "/v1/mail", json={"to": ["ann", "zed", "yan"], "body": "hi"}, headers=planner
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        f"to: no such recipients in tenant '{tenant}': yan, zed"
    )


async def test_another_tenant_never_sees_the_mail(identity: Identity) -> None:
    tenant, other = new_tenant(), new_tenant()
    planner = await identity.bearer(tenant, "planner")
    await identity.bearer(tenant, "ann")
    intruder = await identity.bearer(other, "ann")  # same name, other tenant
    sent = await identity.http.post("/v1/mail", json={"to": ["ann"], "body": "x"}, headers=planner)
    message_id = sent.json()["message_id"]
    assert (await identity.http.get("/v1/inbox", headers=intruder)).json()["messages"] == []
    denied = await identity.http.post(f"/v1/inbox/{message_id}/read", headers=intruder)
    assert denied.status_code == 404
    cross = await identity.http.post("/v1/mail", json={"to": ["planner"]}, headers=intruder)
    assert cross.status_code == 400  # no 'planner' in the intruder's tenant


async def test_kafka_send_is_delivered_once_per_message_id(identity: Identity) -> None:
    tenant = new_tenant()
    secret = await identity.register(tenant, "scheduler", [])
    token = (await identity.token(f"{tenant}/scheduler", secret)).json()["access_token"]
    ann = await identity.bearer(tenant, "ann")
    message_id = f"msg-{uuid.uuid4().hex[:8]}"
    command = SendMailCommand(
        token=token, message_id=message_id, to=["ann"], subject="Reminder", body="Standup"
    )
    async with Bus(service="tests", kafka=identity.kafka) as bus:
        await bus.publish(SEND_MAIL, command)
        await bus.publish(SEND_MAIL, command)  # a redelivery, or a retrying sender
    inbox_before = await events_of(identity, message_id, 1)
    assert [(e["type"], e["recipient"]) for e in inbox_before] == [("delivered", "ann")]
    # The second command (same key, so right behind the first) must add no delivery.
    events = await events_of(identity, message_id, 2, wait_s=3.0)
    assert [(e["type"], e["recipient"]) for e in events] == [("delivered", "ann")]
    inbox = (await identity.http.get("/v1/inbox", headers=ann)).json()["messages"]
    assert [(m["message_id"], m["sender"]) for m in inbox] == [(message_id, "scheduler")]
