"""The memory service over gRPC, against real PostgreSQL, broker and model."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mainstay.memory.v1 import memory_pb2 as pb
from mainstay_common.grpc import create_channel

from .conftest import Memory, new_tenant, status_of

pytestmark = pytest.mark.real


def ts(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


async def test_a_new_fact_with_the_same_subject_supersedes_the_old_one(memory: Memory) -> None:
    tenant = new_tenant()
    paris = await memory.remember(tenant, "I live in Paris", subject="user.home_city")
    berlin = await memory.remember(tenant, "I moved to Berlin", subject="user.home_city")
    assert paris.outcome == pb.OUTCOME_ADDED
    assert berlin.outcome == pb.OUTCOME_SUPERSEDED_PREVIOUS
    assert list(berlin.superseded_ids) == [paris.record.id]

    hits = (await memory.recall(tenant, "which city does the user live in")).hits
    assert [h.record.content for h in hits] == ["I moved to Berlin"]
    assert hits[0].parts.semantic > 0
    assert hits[0].score == pytest.approx(hits[0].parts.total)

    history = await memory.stub.History(
        pb.HistoryRequest(
            scope=pb.Scope(tenant=tenant, agent_id="agent-1", user_id="user-1"),
            subject="user.home_city",
        ),
        metadata=memory.auth(tenant),
    )
    versions = list(history.versions)
    assert [v.content for v in versions] == ["I live in Paris", "I moved to Berlin"]
    assert versions[0].superseded_by == berlin.record.id
    assert versions[0].HasField("valid_to")
    assert not versions[1].HasField("valid_to")
    by_id = await memory.stub.History(
        pb.HistoryRequest(id=berlin.record.id), metadata=memory.auth(tenant)
    )
    assert [v.id for v in by_id.versions] == [paris.record.id, berlin.record.id]


async def test_as_of_answers_what_was_true_then(memory: Memory) -> None:
    tenant = new_tenant()
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    t1 = datetime(2025, 6, 1, tzinfo=UTC)
    await memory.remember(tenant, "I live in Paris", subject="user.home_city", valid_from=ts(t0))
    await memory.remember(tenant, "I moved to Berlin", subject="user.home_city", valid_from=ts(t1))

    before = await memory.recall(
        tenant, "where does the user live", as_of=ts(t1 - timedelta(days=1))
    )
    after = await memory.recall(
        tenant, "where does the user live", as_of=ts(t1 + timedelta(days=1))
    )
    ancient = await memory.recall(
        tenant, "where does the user live", as_of=ts(t0 - timedelta(days=1))
    )
    everything = await memory.recall(tenant, "where does the user live", include_superseded=True)
    assert [h.record.content for h in before.hits] == ["I live in Paris"]
    assert [h.record.content for h in after.hits] == ["I moved to Berlin"]
    assert list(ancient.hits) == []
    assert {h.record.content for h in everything.hits} == {"I live in Paris", "I moved to Berlin"}


async def test_repeated_and_near_duplicate_writes_are_curated(memory: Memory) -> None:
    tenant = new_tenant()
    first = await memory.remember(tenant, "The user likes green tea", importance=0.3)
    again = await memory.remember(tenant, "the user likes green tea ")
    assert again.outcome == pb.OUTCOME_DUPLICATE
    assert again.record.id == first.record.id
    similar = await memory.remember(
        tenant, "The user likes to drink green tea", importance=0.9, metadata={"source": "chat"}
    )
    assert similar.outcome == pb.OUTCOME_MERGED
    assert similar.record.id == first.record.id
    assert similar.record.merged_count == 1
    assert similar.record.importance == pytest.approx(0.9)
    assert similar.record.metadata["source"] == "chat"
    different = await memory.remember(tenant, "The user is allergic to peanuts")
    assert different.outcome == pb.OUTCOME_ADDED
    hits = (await memory.recall(tenant, "green tea", top_k=10)).hits
    assert [h.record.id for h in hits].count(first.record.id) == 1


async def test_idempotency_key_returns_the_first_result(memory: Memory) -> None:
    tenant = new_tenant()
    first = await memory.remember(tenant, "Prefers window seats", idempotency_key="req-1")
    second = await memory.remember(tenant, "Prefers aisle seats", idempotency_key="req-1")
    assert second.record.id == first.record.id
    assert second.record.content == "Prefers window seats"
    assert second.outcome == first.outcome == pb.OUTCOME_ADDED


async def test_agents_and_tenants_are_isolated(memory: Memory) -> None:
    tenant, other_tenant = new_tenant(), new_tenant()
    await memory.remember(tenant, "The launch code is 1234", agent="agent-1")
    await memory.remember(tenant, "The launch code is 9999", agent="agent-2")
    mine = await memory.recall(tenant, "launch code", agent="agent-1")
    assert [h.record.content for h in mine.hits] == ["The launch code is 1234"]

    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await memory.stub.Recall(
            pb.RecallRequest(
                scope=pb.Scope(tenant=tenant, agent_id="agent-2"), query="launch code"
            ),
            metadata=memory.auth(tenant, "agent-1"),
        )
    code, details = status_of(denied.value)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "memory:read:agent-2" in details

    with pytest.raises(grpc.aio.AioRpcError) as cross_tenant:
        await memory.stub.Recall(
            pb.RecallRequest(
                scope=pb.Scope(tenant=tenant, agent_id="agent-1"), query="launch code"
            ),
            metadata=memory.auth(other_tenant, "agent-1"),
        )
    assert status_of(cross_tenant.value)[0] == grpc.StatusCode.PERMISSION_DENIED
    # the same words in another tenant find nothing of this one
    assert list((await memory.recall(other_tenant, "launch code")).hits) == []


async def test_get_of_another_tenants_record_is_not_found(memory: Memory) -> None:
    tenant, other = new_tenant(), new_tenant()
    secret = await memory.remember(tenant, "Private note")
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await memory.stub.Get(pb.GetRequest(id=secret.record.id), metadata=memory.auth(other))
    assert status_of(missing.value)[0] == grpc.StatusCode.NOT_FOUND
    got = await memory.stub.Get(pb.GetRequest(id=secret.record.id), metadata=memory.auth(tenant))
    assert got.record.content == "Private note"


async def test_hard_forget_erases_content_and_vectors(memory: Memory) -> None:
    tenant = new_tenant()
    kept = await memory.remember(tenant, "The user's favourite colour is blue")
    gone = await memory.remember(tenant, "The user's passport number is X123")
    forgotten = await memory.stub.Forget(
        pb.ForgetRequest(ids=[gone.record.id], hard=True), metadata=memory.auth(tenant)
    )
    assert forgotten.count == 1
    record = (
        await memory.stub.Get(pb.GetRequest(id=gone.record.id), metadata=memory.auth(tenant))
    ).record
    assert record.forgotten
    assert record.content == ""
    hits = (await memory.recall(tenant, "passport number", include_superseded=True)).hits
    assert [h.record.id for h in hits] == [kept.record.id]
    again = await memory.stub.Forget(
        pb.ForgetRequest(ids=[gone.record.id], hard=True), metadata=memory.auth(tenant)
    )
    assert again.count == 0


async def test_forget_by_subject(memory: Memory) -> None:
    tenant = new_tenant()
    await memory.remember(tenant, "Works at Acme", subject="user.employer")
    await memory.remember(tenant, "Works at Initech", subject="user.employer")
    await memory.remember(tenant, "Plays the cello")
    count = await memory.stub.Forget(
        pb.ForgetRequest(
            scope=pb.Scope(tenant=tenant, agent_id="agent-1", user_id="user-1"),
            subject="user.employer",
        ),
        metadata=memory.auth(tenant),
    )
    assert count.count == 2
    hits = (await memory.recall(tenant, "where does the user work", include_superseded=True)).hits
    assert [h.record.content for h in hits] == ["Plays the cello"]


async def test_a_record_with_a_ttl_expires(memory: Memory) -> None:
    tenant = new_tenant()
    temp = await memory.remember(tenant, "The user is in a meeting right now", ttl_seconds=1)
    assert temp.record.HasField("expires_at")
    for _ in range(100):
        record = (
            await memory.stub.Get(pb.GetRequest(id=temp.record.id), metadata=memory.auth(tenant))
        ).record
        if record.HasField("valid_to"):
            break
        await asyncio.sleep(0.1)
    assert record.HasField("valid_to")
    assert record.valid_to == record.expires_at
    assert list((await memory.recall(tenant, "meeting")).hits) == []


async def test_calls_without_a_valid_token_are_unauthenticated(memory: Memory) -> None:
    request = pb.RecallRequest(scope=pb.Scope(tenant="acme", agent_id="agent-1"), query="x")
    for metadata in ([], [("authorization", "Bearer not-a-jwt")], [("authorization", "Basic abc")]):
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await memory.stub.Recall(request, metadata=metadata)
        assert status_of(failed.value)[0] == grpc.StatusCode.UNAUTHENTICATED
    foreign = memory.signer.__class__.generate().mint(subject="x", tenant="acme", scopes=["*"])
    with pytest.raises(grpc.aio.AioRpcError) as forged:
        await memory.stub.Recall(request, metadata=[("authorization", f"Bearer {foreign}")])
    assert status_of(forged.value)[0] == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (
            pb.RememberRequest(scope=pb.Scope(agent_id="agent-1"), kind=pb.KIND_FACT, content="x"),
            "scope.tenant",
        ),
        (pb.RememberRequest(scope=pb.Scope(tenant="T", agent_id="agent-1"), content="x"), "kind"),
        (
            pb.RememberRequest(
                scope=pb.Scope(tenant="T", agent_id="agent-1"), kind=pb.KIND_FACT, content=" "
            ),
            "content",
        ),
        (
            pb.RememberRequest(
                scope=pb.Scope(tenant="T", agent_id="agent-1"),
                kind=pb.KIND_FACT,
                content="x",
                importance=2,
            ),
            "importance",
        ),
        (
            pb.RecallRequest(scope=pb.Scope(tenant="T", agent_id="agent-1"), query="x", top_k=1000),
            "top_k",
        ),
        (pb.RecallRequest(scope=pb.Scope(tenant="T", agent_id="agent-1"), query=""), "query"),
    ],
)
async def test_invalid_requests_name_the_field(
    memory: Memory, request_: object, field: str
) -> None:
    method = (
        memory.stub.Remember if isinstance(request_, pb.RememberRequest) else memory.stub.Recall
    )
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await method(request_, metadata=memory.auth("T"))
    code, details = status_of(failed.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in details


async def test_health_and_reflection_are_served(memory: Memory) -> None:
    channel = create_channel(f"127.0.0.1:{memory.app.grpc_port}")
    try:
        health = health_pb2_grpc.HealthStub(channel)
        answer = await health.Check(
            health_pb2.HealthCheckRequest(service="mainstay.memory.v1.MemoryService")
        )
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await channel.close()
    assert "mainstay.memory.v1.MemoryService" in memory.app.grpc.service_names  # type: ignore[union-attr]
