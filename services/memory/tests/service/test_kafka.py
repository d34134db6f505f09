"""The Kafka door (memory.cmd.remember.v1) and the events (memory.evt.memory.v1)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from mainstay.memory.v1 import memory_pb2 as pb
from mainstay_common.bus import Bus
from mainstay_common.testing import read_records
from mainstay_contracts.memory import MEMORY_EVENTS, REMEMBER, RememberCommand

from .conftest import Memory, new_tenant

pytestmark = pytest.mark.real


async def events_of(
    memory: Memory, tenant: str, *, count: int, wait_s: float = 20.0
) -> list[dict[str, Any]]:
    """Events on memory.evt.memory.v1 about ``tenant``, in order."""
    records = await read_records(
        memory.kafka.bootstrap,
        f"{memory.kafka.topic_prefix}{MEMORY_EVENTS.name}",
        count=count,
        accept=lambda r: json.loads(r.value)["record"]["scope"]["tenant"] == tenant,
        wait_s=wait_s,
    )
    found = [
        {**json.loads(r.value), "ce_type": dict(r.headers)["ce_type"].decode()} for r in records
    ]
    return sorted(found, key=lambda e: (e["occurred_at"], e["type"] != "superseded"))


async def publish_remember(memory: Memory, command: RememberCommand, *, event_id: str) -> None:
    bus = Bus(service="tests", kafka=memory.kafka)
    async with bus:
        await bus.publish(REMEMBER, command, event_id=event_id)


def command(memory: Memory, tenant: str, content: str, **fields: Any) -> RememberCommand:
    token = memory.token(tenant, ["memory:write:agent-1"], subject="agent-1")
    return RememberCommand(
        token=token,
        scope={"tenant": tenant, "agent_id": "agent-1", "user_id": "user-1"},
        kind="fact",
        content=content,
        **fields,
    )


async def wait_for_history(
    memory: Memory, tenant: str, subject: str, count: int
) -> list[pb.MemoryRecord]:
    request = pb.HistoryRequest(
        scope=pb.Scope(tenant=tenant, agent_id="agent-1", user_id="user-1"), subject=subject
    )
    for _ in range(200):
        versions = list((await memory.stub.History(request, metadata=memory.auth(tenant))).versions)
        if len(versions) >= count:
            return versions
        await asyncio.sleep(0.1)
    raise AssertionError(f"history of {subject} never reached {count} versions")


async def test_a_redelivered_remember_command_stores_once(memory: Memory) -> None:
    tenant = new_tenant()
    message = command(memory, tenant, "Speaks fluent Portuguese", subject="user.languages")
    event_id = str(uuid.uuid4())
    for _ in range(3):  # a producer retry, a replay...
        await publish_remember(memory, message, event_id=event_id)
    [version] = await wait_for_history(memory, tenant, "user.languages", 1)
    await asyncio.sleep(1.0)  # the redeliveries have had their chance
    versions = await wait_for_history(memory, tenant, "user.languages", 1)
    assert [v.id for v in versions] == [version.id]
    events = await events_of(memory, tenant, count=1)
    assert [(e["type"], e["record"]["id"]) for e in events] == [("added", version.id)]


async def test_the_kafka_and_grpc_doors_curate_the_same_way(memory: Memory) -> None:
    tenant = new_tenant()
    await publish_remember(
        memory,
        command(memory, tenant, "I live in Paris", subject="user.home_city"),
        event_id=str(uuid.uuid4()),
    )
    [paris] = await wait_for_history(memory, tenant, "user.home_city", 1)
    berlin = await memory.remember(tenant, "I moved to Berlin", subject="user.home_city")
    assert berlin.outcome == pb.OUTCOME_SUPERSEDED_PREVIOUS
    assert list(berlin.superseded_ids) == [paris.id]
    await publish_remember(
        memory,
        command(memory, tenant, "I moved to Berlin", subject="user.home_city"),
        event_id=str(uuid.uuid4()),
    )
    await asyncio.sleep(1.0)
    versions = await wait_for_history(memory, tenant, "user.home_city", 2)
    assert [v.content for v in versions] == [
        "I live in Paris",
        "I moved to Berlin",
    ]  # the repeat was a duplicate
    events = await events_of(memory, tenant, count=3)
    assert [(e["type"], e["ce_type"]) for e in events] == [
        ("added", "mainstay.memory.added"),
        ("superseded", "mainstay.memory.superseded"),
        ("added", "mainstay.memory.added"),
    ]
    assert events[2]["superseded_ids"] == [paris.id]


async def test_a_command_with_a_bad_token_is_dead_lettered(memory: Memory) -> None:
    tenant = new_tenant()
    message = command(memory, tenant, "Should never be stored")
    forged = message.model_copy(update={"token": "not-a-token"})
    await publish_remember(memory, forged, event_id=str(uuid.uuid4()))
    records = await read_records(
        memory.kafka.bootstrap,
        f"{memory.kafka.topic_prefix}memory.remember.dlq",
        count=1,
        accept=lambda r: json.loads(r.value)["scope"]["tenant"] == tenant,
    )
    letters = [{k: v.decode() for k, v in r.headers} for r in records]
    assert letters, "the command was not dead-lettered"
    assert letters[0]["mainstay-error-class"] == "permanent"
    assert letters[0]["mainstay-error-type"] == "Unauthenticated"
    assert list((await memory.recall(tenant, "never stored")).hits) == []


async def test_every_kind_of_change_is_announced(memory: Memory) -> None:
    tenant = new_tenant()
    tea = await memory.remember(tenant, "The user likes green tea")
    await memory.remember(tenant, "The user likes to drink green tea")  # merged
    secret = await memory.remember(tenant, "The user's locker code is 4711")
    await memory.stub.Forget(
        pb.ForgetRequest(ids=[secret.record.id], hard=True), metadata=memory.auth(tenant)
    )
    await memory.remember(tenant, "The user is on a call", ttl_seconds=1)
    events = await events_of(memory, tenant, count=6)
    kinds = [e["type"] for e in events]
    assert kinds.count("added") == 3
    assert {"merged", "forgotten", "expired"} <= set(kinds)
    merged = next(e for e in events if e["type"] == "merged")
    assert merged["record"]["id"] == tea.record.id
    assert merged["record"]["merged_count"] == 1
    forgotten = next(e for e in events if e["type"] == "forgotten")
    assert forgotten["hard"] is True
    assert forgotten["record"]["content"] == ""  # erased content never travels
    expired = next(e for e in events if e["type"] == "expired")
    assert expired["record"]["content"] == "The user is on a call"
    assert expired["record"]["valid_to"] is not None
