"""The recall client against a real memory service (PostgreSQL, broker and gRPC on loopback),
and against an address where nothing listens."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

from mainstay.memory.v1 import memory_pb2 as pb
from mainstay.memory.v1 import memory_pb2_grpc
from mainstay_common.auth import TokenSigner
from mainstay_common.devstack import free_port
from mainstay_common.grpc import create_channel
from mainstay_execution.memory import MemoryClient, MemoryUnavailable
from mainstay_memory.testing import running_memory

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


@dataclass
class Memory:
    """A running memory service: where it listens, and how to mint its tokens."""

    target: str
    signer: TokenSigner
    stub: memory_pb2_grpc.MemoryServiceStub

    def token(self, tenant: str, *scopes: str) -> str:
        return self.signer.mint(subject="agent", tenant=tenant, scopes=scopes)

    async def remember(self, tenant: str, agent: str, content: str) -> None:
        request = pb.RememberRequest(
            scope=pb.Scope(tenant=tenant, agent_id=agent), kind=pb.KIND_FACT, content=content
        )
        token = self.token(tenant, f"memory:write:{agent}")
        await self.stub.Remember(request, metadata=[("authorization", f"Bearer {token}")])


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def memory(
    kafka_bootstrap: str, postgres_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Memory]:
    home = tmp_path_factory.mktemp("memory-client")
    async with running_memory(kafka_bootstrap, postgres_dsn, home) as running:
        channel = create_channel(running.target)
        try:
            yield Memory(
                target=running.target,
                signer=running.signer,
                stub=memory_pb2_grpc.MemoryServiceStub(channel),
            )
        finally:
            await channel.close()


@pytest_asyncio.fixture(loop_scope="session")
async def client(memory: Memory) -> AsyncIterator[MemoryClient]:
    client = MemoryClient(memory.target, timeout_s=10.0)
    try:
        yield client
    finally:
        await client.aclose()


def new_tenant() -> str:
    return f"tenant-{uuid.uuid4().hex[:8]}"


async def test_recall_returns_the_agents_relevant_memories_first(
    memory: Memory, client: MemoryClient
) -> None:
    tenant = new_tenant()
    await memory.remember(tenant, "scout", "Deployments to production happen on Tuesdays")
    await memory.remember(tenant, "scout", "The customer's favourite colour is green")
    await memory.remember(tenant, "other", "Deployments are frozen in December")

    recalled = await client.recall(
        token=memory.token(tenant, "memory:read:scout"),
        tenant=tenant,
        agent="scout",
        query="when do we deploy to production?",
        limit=5,
        task_id="task-1",
    )

    assert recalled[0] == "Deployments to production happen on Tuesdays"
    assert set(recalled) <= {
        "Deployments to production happen on Tuesdays",
        "The customer's favourite colour is green",
    }


async def test_recall_works_on_the_event_loop_the_service_runs_on(memory: Memory) -> None:
    # `python -m mainstay_execution` runs on uvloop (run_service(fast_loop=True)); grpc.aio
    # must recall from that loop as it does from asyncio's.
    tenant = new_tenant()
    await memory.remember(tenant, "scout", "Deployments to production happen on Tuesdays")
    script = textwrap.dedent(
        """
        import asyncio, json, sys
        import uvloop
        from mainstay_execution.memory import MemoryClient

        async def main():
            target, token, tenant = sys.argv[1:4]
            client = MemoryClient(target, timeout_s=10.0)
            try:
                recalled = await client.recall(
                    token=token, tenant=tenant, agent="scout",
                    query="when do we deploy?", limit=3, task_id="task-1",
                )
            finally:
                await client.aclose()
            print(json.dumps([type(asyncio.get_running_loop()).__module__, recalled]))

        uvloop.run(main())
        """
    )
    token = memory.token(tenant, "memory:read:scout")
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", script, memory.target, token, tenant],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    loop_module, recalled = json.loads(done.stdout.splitlines()[-1])
    assert loop_module.startswith("uvloop")
    assert recalled == ["Deployments to production happen on Tuesdays"]


async def test_a_limit_of_zero_recalls_nothing(memory: Memory, client: MemoryClient) -> None:
    tenant = new_tenant()
    await memory.remember(tenant, "scout", "Deployments to production happen on Tuesdays")

    recalled = await client.recall(
        token=memory.token(tenant, "memory:read:scout"),
        tenant=tenant,
        agent="scout",
        query="when do we deploy?",
        limit=0,
        task_id="task-1",
    )

    assert recalled == []


@pytest.mark.parametrize(
    ("scopes", "status"),
    [
        (("memory:write:scout", "memory:read:other"), "PERMISSION_DENIED"),
        (None, "UNAUTHENTICATED"),
    ],
    ids=["no read scope", "token of an unknown key"],
)
async def test_a_refused_token_makes_memory_unavailable_naming_the_status(
    memory: Memory, client: MemoryClient, scopes: tuple[str, ...] | None, status: str
) -> None:
    tenant = new_tenant()
    if scopes is None:
        token = TokenSigner.generate().mint(
            subject="agent", tenant=tenant, scopes=["memory:read:scout"]
        )
    else:
        token = memory.token(tenant, *scopes)

    with pytest.raises(MemoryUnavailable) as raised:
        await client.recall(
            token=token, tenant=tenant, agent="scout", query="anything", limit=3, task_id="t"
        )

    assert raised.value.status == status
    assert str(raised.value).startswith(f"memory {status}: ")
    assert len(str(raised.value)) > len(f"memory {status}: ")  # the server's details follow


async def test_memory_nobody_serves_is_unavailable_within_the_timeout() -> None:
    client = MemoryClient(f"127.0.0.1:{free_port()}", timeout_s=0.5)
    try:
        # A guard against hanging, far above the deadline; not a measurement.
        async with asyncio.timeout(10):
            with pytest.raises(MemoryUnavailable) as raised:
                await client.recall(
                    token="t", tenant="acme", agent="scout", query="q", limit=3, task_id="t"
                )
    finally:
        await client.aclose()

    assert raised.value.status == "UNAVAILABLE"
    assert str(raised.value).startswith("memory UNAVAILABLE: ")


@pytest.mark.parametrize(
    ("token", "query"),
    [("line\nbreak", "q"), ("café", "q"), ("t", "half a surrogate \ud800")],
    ids=["newline in the token", "non-ASCII token", "unencodable query"],
)
async def test_a_request_grpc_cannot_send_is_refused_before_the_call(
    token: str, query: str
) -> None:
    # gRPC would never finish a call with such a token, deadline or not.
    client = MemoryClient(f"127.0.0.1:{free_port()}", timeout_s=0.5)
    try:
        async with asyncio.timeout(10):
            with pytest.raises(MemoryUnavailable, match=r"^memory request not sent: ") as raised:
                await client.recall(
                    token=token, tenant="acme", agent="scout", query=query, limit=3, task_id="t"
                )
    finally:
        await client.aclose()

    assert raised.value.status is None
