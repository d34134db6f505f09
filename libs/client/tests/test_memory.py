"""The memory client against a real memory service (PostgreSQL, broker and gRPC on loopback),
and against an address where nothing listens."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

from mainstay_client import ClientError, ClientSettings, MemoryClient, MemoryClientSync
from mainstay_common.auth import TokenSigner
from mainstay_common.devstack import free_port
from mainstay_memory.testing import RunningMemory, running_memory

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.real


@dataclass
class Service:
    """A running memory service, and clients of it for a tenant's tokens."""

    running: RunningMemory

    @property
    def target(self) -> str:
        return self.running.target

    def token(self, tenant: str, *scopes: str) -> str:
        return self.running.token(tenant, *scopes, subject="scout")

    def client(self, tenant: str, *scopes: str) -> MemoryClient:
        return MemoryClient(target=self.target, token=self.token(tenant, *scopes))

    def agent_client(self, tenant: str, agent: str = "scout") -> MemoryClient:
        return self.client(tenant, f"memory:read:{agent}", f"memory:write:{agent}")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def service(
    kafka_bootstrap: str, postgres_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Service]:
    home = tmp_path_factory.mktemp("memory-client")
    async with running_memory(kafka_bootstrap, postgres_dsn, home) as running:
        yield Service(running)


def new_tenant() -> str:
    return f"tenant-{uuid.uuid4().hex[:8]}"


async def test_remembered_facts_are_recalled_best_first(service: Service) -> None:
    tenant = new_tenant()
    async with service.agent_client(tenant) as memory:
        deploys = await memory.remember(
            "Deployments to production happen on Tuesdays", agent="scout", importance=0.8
        )
        colour = await memory.remember(
            "The customer's favourite colour is green", agent="scout", metadata={"from": "chat"}
        )
        hits = await memory.recall("when do we deploy to production?", agent="scout", limit=5)

    assert deploys.outcome == colour.outcome == "added"
    assert deploys.memory.id != colour.memory.id
    assert hits[0].memory.id == deploys.memory.id
    assert {hit.memory.id for hit in hits} <= {deploys.memory.id, colour.memory.id}
    scores = [hit.score for hit in hits]
    assert scores == sorted(scores, reverse=True)
    assert hits[0].score > 0
    assert hits[0].parts.semantic > 0

    best = hits[0].memory
    assert best.content == "Deployments to production happen on Tuesdays"
    assert (best.kind, best.tenant, best.agent) == ("fact", tenant, "scout")
    assert best.importance == pytest.approx(0.8)
    assert best.current
    assert best.valid_to is None
    assert best.valid_from.tzinfo is not None
    assert best.created_at.tzinfo is not None
    assert colour.memory.metadata == {"from": "chat"}


async def test_recall_narrows_to_the_kinds_asked_for(service: Service) -> None:
    tenant = new_tenant()
    async with service.agent_client(tenant) as memory:
        await memory.remember("The user drinks green tea every morning", agent="scout")
        seat = await memory.remember(
            "The user prefers green seats", agent="scout", kind="preference"
        )
        hits = await memory.recall("green", agent="scout", kinds=["preference"])

    assert [hit.memory.id for hit in hits] == [seat.memory.id]
    assert hits[0].memory.kind == "preference"


async def test_a_superseding_fact_keeps_the_old_one_in_history(service: Service) -> None:
    tenant = new_tenant()
    async with service.agent_client(tenant) as memory:
        paris = await memory.remember(
            "The user lives in Paris", agent="scout", subject="user.home_city"
        )
        berlin = await memory.remember(
            "The user moved to Berlin", agent="scout", subject="user.home_city"
        )
        by_subject = await memory.history(agent="scout", subject="user.home_city")
        by_id = await memory.history(memory_id=paris.memory.id)
        hits = await memory.recall("which city does the user live in?", agent="scout")

    assert berlin.outcome == "superseded_previous"
    assert berlin.superseded_ids == (paris.memory.id,)
    assert [v.content for v in by_subject] == [
        "The user lives in Paris",
        "The user moved to Berlin",
    ]
    old, new = by_subject
    assert old.superseded_by == new.id == berlin.memory.id
    assert old.valid_to is not None
    assert old.valid_to.tzinfo is not None
    assert not old.current
    assert new.current
    assert [v.id for v in by_id] == [paris.memory.id, berlin.memory.id]
    assert [hit.memory.content for hit in hits] == ["The user moved to Berlin"]


async def test_as_of_recalls_what_was_true_then(service: Service) -> None:
    tenant = new_tenant()
    moved = datetime(2025, 6, 1, tzinfo=UTC)
    async with service.agent_client(tenant) as memory:
        await memory.remember(
            "The user lives in Paris",
            agent="scout",
            subject="user.home_city",
            valid_from=moved - timedelta(days=200),
        )
        await memory.remember(
            "The user moved to Berlin", agent="scout", subject="user.home_city", valid_from=moved
        )
        then = await memory.recall(
            "where does the user live?", agent="scout", as_of=moved - timedelta(days=1)
        )
        with pytest.raises(ClientError, match="as_of must be timezone-aware"):
            await memory.recall("where?", agent="scout", as_of=datetime(2025, 1, 1))

    assert [hit.memory.content for hit in then] == ["The user lives in Paris"]


async def test_forgotten_memories_are_no_longer_recalled(service: Service) -> None:
    tenant = new_tenant()
    async with service.agent_client(tenant) as memory:
        kept = await memory.remember("The user's favourite colour is blue", agent="scout")
        gone = await memory.remember("The user's passport number is X123", agent="scout")
        before = await memory.recall("passport number", agent="scout")
        forgotten = await memory.forget(ids=[gone.memory.id])
        again = await memory.forget(ids=[gone.memory.id])
        after = await memory.recall("passport number", agent="scout")
        record = await memory.get(gone.memory.id)

        await memory.remember("Works at Acme", agent="scout", subject="user.employer")
        await memory.remember("Works at Initech", agent="scout", subject="user.employer")
        by_subject = await memory.forget(agent="scout", subject="user.employer", hard=True)
        employers = await memory.history(agent="scout", subject="user.employer")

    assert gone.memory.id in {hit.memory.id for hit in before}
    assert (forgotten, again) == (1, 0)
    assert [hit.memory.id for hit in after] == [kept.memory.id]
    assert record.forgotten
    assert not record.current
    assert record.content == "The user's passport number is X123"  # hidden, not erased
    assert by_subject == 2
    assert [(v.forgotten, v.content) for v in employers] == [(True, ""), (True, "")]


async def test_get_of_an_unknown_id_is_not_found(service: Service) -> None:
    async with service.agent_client(new_tenant()) as memory:
        with pytest.raises(ClientError, match="NOT_FOUND") as raised:
            await memory.get(str(uuid.uuid4()))

    assert str(raised.value).startswith("memory Get failed: NOT_FOUND: ")


async def test_a_token_without_the_scope_is_refused_naming_it(service: Service) -> None:
    tenant = new_tenant()
    async with service.client(tenant) as memory:
        with pytest.raises(ClientError, match="PERMISSION_DENIED") as raised:
            await memory.recall("anything", agent="scout")
    assert "memory:read:scout" in str(raised.value)

    async with service.client(tenant, "memory:read:scout") as memory:
        with pytest.raises(ClientError, match="PERMISSION_DENIED") as raised:
            await memory.remember("Read-only callers cannot write", agent="scout")
    assert "memory:write:scout" in str(raised.value)


async def test_a_token_the_service_did_not_issue_is_unauthenticated(service: Service) -> None:
    foreign = TokenSigner.generate().mint(
        subject="scout", tenant=new_tenant(), scopes=["memory:read:scout"]
    )
    async with MemoryClient(target=service.target, token=foreign) as memory:
        with pytest.raises(ClientError, match="UNAUTHENTICATED"):
            await memory.recall("anything", agent="scout")


async def test_a_request_the_service_rejects_names_the_field(service: Service) -> None:
    async with service.agent_client(new_tenant()) as memory:
        with pytest.raises(ClientError, match=r"INVALID_ARGUMENT: content must not be empty"):
            await memory.remember("   ", agent="scout")
        with pytest.raises(ClientError, match="unknown memory kind 'rumour'"):
            await memory.remember("x", agent="scout", kind="rumour")  # type: ignore[arg-type]
        with pytest.raises(ClientError, match="limit must be between 1 and 100, not 0"):
            await memory.recall("anything", agent="scout", limit=0)
        with pytest.raises(ClientError, match="request not sent"):
            await memory.recall("half a surrogate \ud800", agent="scout")
        with pytest.raises(ClientError, match="history needs memory_id, or agent and subject"):
            await memory.history(agent="scout")
        with pytest.raises(ClientError, match="forget takes either ids, or an agent"):
            await memory.forget(ids=["x"], agent="scout")


async def test_a_memory_service_nobody_serves_is_unreachable(service: Service) -> None:
    target = f"127.0.0.1:{free_port()}"
    token = service.token(new_tenant(), "memory:read:scout")
    async with MemoryClient(target=target, token=token, timeout_s=2.0) as memory:
        with pytest.raises(ClientError) as raised:
            await memory.recall("anything", agent="scout")

    assert str(raised.value).startswith(f"memory service at {target} is unreachable (UNAVAILABLE")


async def test_a_memory_service_that_never_answers_runs_into_the_deadline() -> None:
    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accept the connection, answer nothing until the client hangs up
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    target = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    token = TokenSigner.generate().mint(subject="scout", tenant="acme", scopes=[])
    try:
        async with MemoryClient(target=target, token=token, timeout_s=0.5) as memory:
            with pytest.raises(ClientError) as raised:
                await memory.recall("anything", agent="scout")
    finally:
        server.close()
        await server.wait_closed()

    assert str(raised.value) == (
        f"memory service at {target} did not answer Recall within 0.5 s (DEADLINE_EXCEEDED)"
    )


async def test_without_a_token_the_client_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAINSTAY_TOKEN", raising=False)
    monkeypatch.delenv("MAINSTAY_TOKEN_FILE", raising=False)
    with pytest.raises(ClientError, match="no token: set MAINSTAY_TOKEN or MAINSTAY_TOKEN_FILE"):
        async with MemoryClient(ClientSettings(), target=f"127.0.0.1:{free_port()}"):
            pass


@pytest.mark.parametrize(
    ("token", "problem"),
    [("caf\u00e9", "not printable ASCII"), ("line\nbreak", "not printable ASCII")],
    ids=["non-ASCII", "newline"],
)
async def test_a_token_grpc_cannot_send_is_refused_before_any_call(
    token: str, problem: str
) -> None:
    memory = MemoryClient(target=f"127.0.0.1:{free_port()}", token=token)
    with pytest.raises(ClientError, match=problem):
        await memory.recall("anything", agent="scout")
    await memory.aclose()


async def test_the_environment_names_the_service_and_the_token(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = new_tenant()
    monkeypatch.setenv("MAINSTAY_MEMORY_TARGET", service.target)
    monkeypatch.setenv("MAINSTAY_TOKEN", service.token(tenant, "memory:*"))
    monkeypatch.delenv("MAINSTAY_TOKEN_FILE", raising=False)
    async with MemoryClient() as memory:
        stored = await memory.remember("The office is in Lyon", agent="")
        found = await memory.get(stored.memory.id)

    assert memory.tenant == tenant
    assert (found.tenant, found.agent, found.content) == (tenant, "", "The office is in Lyon")


async def test_the_blocking_client_remembers_and_recalls(service: Service) -> None:
    tenant = new_tenant()
    token = service.token(tenant, "memory:read:scout", "memory:write:scout")

    def script() -> tuple[str, list[str]]:
        with MemoryClientSync(target=service.target, token=token) as memory:
            stored = memory.remember("Prefers window seats", agent="scout", kind="preference")
            hits = memory.recall("which seat does the user like?", agent="scout")
        return stored.outcome, [hit.memory.content for hit in hits]

    # The service runs on this test's event loop; the script blocks another thread.
    outcome, contents = await asyncio.to_thread(script)

    assert outcome == "added"
    assert contents == ["Prefers window seats"]


async def test_the_blocking_client_refuses_calls_once_closed(service: Service) -> None:
    memory = MemoryClientSync(target=service.target, token=service.token(new_tenant()))
    memory.close()
    with pytest.raises(ClientError, match="closed"):
        memory.get("anything")
