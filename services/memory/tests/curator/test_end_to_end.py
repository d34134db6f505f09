"""The curator inside the real memory service: gRPC write, event, model call, derived facts.

One memory service per module with the curator on and pointed at the local
chat-completions server of ``conftest.py``; real PostgreSQL and broker. Each
test works in its own tenant and scripts the model with a marker of its own.

Waiting for a negative ("nothing more happened") uses a sentinel: events of
one scope share a partition and the curator handles a partition in order, so
once the model has been asked about an episode written later in the same
scope, everything before it has been fully handled.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio
from pydantic import SecretStr

from mainstay.memory.v1 import memory_pb2 as pb
from mainstay_common.bus import Bus
from mainstay_common.testing import read_records
from mainstay_contracts.memory import MEMORY_EVENTS
from mainstay_memory.settings import CuratorSettings

from ..running import Memory, running_memory
from .conftest import API_KEY, MODEL, status

if TYPE_CHECKING:
    import contextlib
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from aiokafka import ConsumerRecord
    from starlette.responses import Response

    from mainstay_common.settings import KafkaSettings

    from .conftest import FakeChatProvider

pytestmark = pytest.mark.real

DERIVED_KINDS = [pb.KIND_FACT, pb.KIND_PREFERENCE, pb.KIND_DECISION, pb.KIND_OBSERVATION]


class CuratorMemory(Memory):
    """The running service, with the curator tests' scope (one user's session)."""

    @staticmethod
    def scope(tenant: str) -> pb.Scope:
        return pb.Scope(tenant=tenant, agent_id="agent-1", user_id="user-1", session_id="s-1")

    async def episode(self, tenant: str, text: str, **fields: Any) -> pb.MemoryRecord:
        request = pb.RememberRequest(
            scope=self.scope(tenant), kind=pb.KIND_EPISODE, content=text, **fields
        )
        return (await self.stub.Remember(request, metadata=self.auth(tenant))).record

    async def derived(self, tenant: str) -> list[pb.MemoryRecord]:
        """Every current record but episodes in the test's scope."""
        request = pb.RecallRequest(
            scope=self.scope(tenant), query="user", kinds=DERIVED_KINDS, top_k=100
        )
        hits = (await self.stub.Recall(request, metadata=self.auth(tenant))).hits
        return sorted((h.record for h in hits), key=lambda r: r.content)


def running_curated(
    kafka_bootstrap: str, postgres_dsn: str, home: Path, curator: CuratorSettings
) -> contextlib.AbstractAsyncContextManager[CuratorMemory]:
    return running_memory(kafka_bootstrap, postgres_dsn, home, kind=CuratorMemory, curator=curator)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def memory(
    kafka_bootstrap: str,
    postgres_dsn: str,
    chat_server: FakeChatProvider,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[CuratorMemory]:
    curator = CuratorSettings(
        enabled=True,
        base_url=chat_server.url,
        api_key=SecretStr(API_KEY),
        model=MODEL,
        timeout_s=5.0,
        max_facts=5,
    )
    home = tmp_path_factory.mktemp("curator-on")
    async with running_curated(kafka_bootstrap, postgres_dsn, home, curator) as memory:
        yield memory


def new_tenant() -> str:
    return f"tenant-{uuid.uuid4().hex[:8]}"


async def eventually(check: Callable[[], Any], *, what: str, wait_s: float = 30.0) -> Any:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if result := await check():
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {wait_s} s")


async def read_topic(
    kafka: KafkaSettings,
    topic: str,
    match: Callable[[dict[str, Any]], bool],
    *,
    count: int,
    wait_s: float = 20.0,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Records of ``topic`` (with the test prefix) whose JSON value ``match``es."""
    return await read_records(
        kafka.bootstrap,
        f"{kafka.topic_prefix}{topic}",
        count=count,
        accept=lambda r: match(json.loads(r.value)),
        wait_s=wait_s,
    )


def added_about(record_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda event: event["type"] == "added" and event["record"]["id"] == record_id


def derived_from(episode_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda event: (
        event["type"] == "added" and event["record"]["metadata"].get("derived_from") == episode_id
    )


async def redeliver(memory: Memory, record: ConsumerRecord[bytes, bytes]) -> None:
    """Send a consumed event again, byte for byte (same ``ce_id``), as a redelivery would."""
    async with Bus(service="tests", kafka=memory.kafka) as bus:
        await bus.send_raw(record.topic, key=record.key, value=record.value, headers=record.headers)


_SENTINELS = itertools.cycle(
    [
        "The quarterly budget review moved to Thursday afternoon.",
        "Astronomers photographed a comet passing close to Jupiter.",
        "Bake the sourdough at 230 degrees for forty minutes.",
        "The cycling route follows the river north to the old mill.",
    ]
)


async def settle(memory: Memory, provider: FakeChatProvider, tenant: str) -> None:
    """Return once the curator has handled everything written to the scope so far."""
    marker = f"sentinel-{uuid.uuid4().hex}"
    # Sentinels must differ in meaning, or curation merges the second into the first.
    topic = next(_SENTINELS)
    await memory.episode(tenant, f"{topic} ({marker})")

    async def asked() -> bool:
        return bool(provider.requests_about(marker))

    await eventually(asked, what="the sentinel episode reaching the model")


def facts_script(marker: str) -> dict[str, Any]:
    return {
        "facts": [
            {
                "content": f"The user lives in Lisbon {marker}",
                "kind": "fact",
                "subject": "user.home_city",
                "importance": 0.8,
            },
            {"content": f"The user prefers tea {marker}", "kind": "preference"},
        ]
    }


async def test_an_episode_becomes_recallable_facts(
    memory: Memory, provider: FakeChatProvider
) -> None:
    tenant, marker = new_tenant(), uuid.uuid4().hex
    provider.script[marker] = facts_script(marker)
    episode = await memory.episode(
        tenant,
        f"User ({marker}): I moved to Lisbon last month. Tea, not coffee, please.",
        source=pb.Source(task_id="task-7", step=4),
    )

    async def two_facts() -> list[pb.MemoryRecord]:
        found = await memory.derived(tenant)
        return found if len(found) == 2 else []

    home, tea = await eventually(two_facts, what="two derived facts")
    assert (home.content, home.kind, home.subject) == (
        f"The user lives in Lisbon {marker}",
        pb.KIND_FACT,
        "user.home_city",
    )
    assert (tea.content, tea.kind, tea.subject) == (
        f"The user prefers tea {marker}",
        pb.KIND_PREFERENCE,
        "",
    )
    for fact in (home, tea):
        assert fact.scope == memory.scope(tenant)
        assert dict(fact.metadata) == {"derived_from": episode.id, "curator_model": MODEL}
        assert (fact.source.task_id, fact.source.step) == ("task-7", 4)
        assert fact.valid_from == episode.valid_from
    assert home.importance == pytest.approx(0.8)
    [request] = provider.requests_about(marker)  # the facts' own events asked nothing
    assert request["model"] == MODEL


async def test_a_redelivered_event_stores_nothing_twice(
    memory: Memory, provider: FakeChatProvider
) -> None:
    tenant, marker = new_tenant(), uuid.uuid4().hex
    provider.script[marker] = facts_script(marker)
    episode = await memory.episode(tenant, f"({marker}) Moved to Lisbon; drinks tea.")
    first = await read_topic(memory.kafka, MEMORY_EVENTS.name, derived_from(episode.id), count=2)
    assert len(first) == 2
    [event] = await read_topic(memory.kafka, MEMORY_EVENTS.name, added_about(episode.id), count=1)

    await redeliver(memory, event)
    await redeliver(memory, event)
    await settle(memory, provider, tenant)

    assert len(provider.requests_about(marker)) == 3  # each delivery was handled...
    again = await read_topic(
        memory.kafka, MEMORY_EVENTS.name, derived_from(episode.id), count=3, wait_s=5
    )
    assert len(again) == 2  # ...and stored nothing new
    facts = await memory.derived(tenant)
    assert sorted(f.id for f in facts) == sorted(json.loads(e.value)["record"]["id"] for e in first)


async def test_a_malformed_answer_is_dead_lettered_with_the_reason(
    memory: Memory, provider: FakeChatProvider
) -> None:
    tenant, marker = new_tenant(), uuid.uuid4().hex
    provider.script[marker] = f"Sure! The user ({marker}) lives in Lisbon."
    episode = await memory.episode(tenant, f"({marker}) I live in Lisbon.")

    [letter] = await read_topic(
        memory.kafka, "memory.curator.dlq", added_about(episode.id), count=1
    )
    headers = {name: value.decode() for name, value in letter.headers}
    assert headers["mainstay-error-class"] == "permanent"
    assert headers["mainstay-error-type"] == "MalformedFacts"
    assert "the answer is not JSON" in headers["mainstay-error-message"]
    assert marker not in headers["mainstay-error-message"]  # the answer is never quoted
    assert headers["mainstay-origin-topic"] == f"{memory.kafka.topic_prefix}{MEMORY_EVENTS.name}"
    assert len(provider.requests_about(marker)) == 1  # permanent: never retried
    assert await memory.derived(tenant) == []


async def test_a_rate_limited_provider_is_retried(
    memory: Memory, provider: FakeChatProvider
) -> None:
    tenant, marker = new_tenant(), uuid.uuid4().hex
    provider.script[marker] = facts_script(marker)
    limited = status(429, {"Retry-After": "1"})

    async def rate_limit_once(payload: dict[str, Any]) -> Response:
        if len(provider.requests_about(marker)) == 1:
            return await limited(payload)
        return provider.scripted(payload)

    provider.respond = rate_limit_once
    await memory.episode(tenant, f"({marker}) Lisbon, tea.")

    async def two_facts() -> list[pb.MemoryRecord]:
        found = await memory.derived(tenant)
        return found if len(found) == 2 else []

    await eventually(two_facts, what="the facts after a retry")
    assert len(provider.requests_about(marker)) == 2


async def test_a_forgotten_episode_never_reaches_the_model(
    memory: Memory, provider: FakeChatProvider
) -> None:
    tenant, marker = new_tenant(), uuid.uuid4().hex
    secret = await memory.episode(tenant, f"({marker}) Nothing scripted for this one yet.")
    [event] = await read_topic(memory.kafka, MEMORY_EVENTS.name, added_about(secret.id), count=1)
    await settle(memory, provider, tenant)
    await memory.stub.Forget(
        pb.ForgetRequest(ids=[secret.id], hard=True), metadata=memory.auth(tenant)
    )
    asked = len(provider.requests_about(marker))

    provider.script[marker] = facts_script(marker)
    await redeliver(memory, event)  # carries the text in its snapshot
    await settle(memory, provider, tenant)

    assert len(provider.requests_about(marker)) == asked  # the erased text was never sent
    assert await memory.derived(tenant) == []


async def test_with_the_curator_off_nothing_is_extracted(
    kafka_bootstrap: str,
    postgres_dsn: str,
    provider: FakeChatProvider,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    curator = CuratorSettings(base_url=provider.url, model=MODEL)  # everything but enabled
    assert not curator.enabled
    home = tmp_path_factory.mktemp("curator-off")
    async with running_curated(kafka_bootstrap, postgres_dsn, home, curator) as memory:
        assert memory.app.bus is not None
        assert [c.group for c in memory.app.bus.consumers if c.group.endswith("curator")] == []
        tenant, marker = new_tenant(), uuid.uuid4().hex
        provider.script[marker] = facts_script(marker)
        await memory.episode(tenant, f"({marker}) I moved to Lisbon; tea please.")
        await asyncio.sleep(2.0)  # what an enabled curator needs, several times over
        assert await memory.derived(tenant) == []
    assert provider.requests_about(marker) == []
