"""The task client against the whole mesh (execution, the supervisor, identity ...) on the
real broker and PostgreSQL, with the scripted model server standing in for providers."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from aiokafka import AIOKafkaProducer

from mainstay_client import ClientError, ClientSettings, Mainstay, MainstaySync
from mainstay_common.lifecycle import within
from mainstay_common.settings import KafkaSettings
from mainstay_execution.testing.fake_models import Reply, Stall

if TYPE_CHECKING:
    from .conftest import FullMesh

pytestmark = [pytest.mark.real, pytest.mark.timeout(300)]

EXAMPLES = Path(__file__).parents[1] / "examples"


async def settings(mesh: FullMesh) -> ClientSettings:
    return ClientSettings(token=await mesh.token(), kafka=mesh.kafka)  # type: ignore[arg-type]


def new_id() -> str:
    return f"client-{uuid.uuid4().hex[:10]}"


async def test_a_submitted_task_is_followed_to_its_answer(mesh: FullMesh) -> None:
    task_id = new_id()
    mesh.models.script("primary", [Reply("an old silent pond")])
    async with Mainstay(await settings(mesh)) as mainstay:
        task = await mainstay.submit_task("writer", "a haiku", task_id=task_id)
        seen = [event async for event in task.events(timeout_s=60)]
        final = await task.wait(timeout_s=30)  # read again from where the handle started
        # The id is the idempotency key: the same submission again runs nothing more.
        again = await mainstay.submit_task("writer", "a haiku", task_id=task_id)
        later = await mainstay.task(task_id)
        replayed = [event async for event in later.events(timeout_s=30)]
    assert [e.type for e in seen] == [
        "task.accepted",
        "task.started",
        "step.started",
        "step.completed",
        "task.completed",
    ]
    assert all(e.task_id == task_id for e in seen)
    assert final.type == "task.completed"
    assert final.answer == "an old silent pond"
    assert again.task_id == task_id
    assert [e.type for e in replayed] == [e.type for e in seen]
    assert len([r for r in mesh.models.requests_for("primary") if "a haiku" in str(r)]) == 1


async def test_a_task_can_be_cancelled_while_it_runs(mesh: FullMesh) -> None:
    mesh.models.script("primary", [Stall(seconds=120)])
    async with Mainstay(await settings(mesh)) as mainstay:
        task = await mainstay.submit_task("writer", "take your time", task_id=new_id())
        async for event in task.events(timeout_s=60):
            if event.type == "step.started":
                await task.cancel("no longer needed")
        final = await task.wait(timeout_s=30)
    assert final.type == "task.cancelled"
    assert "no longer needed" in final.reason


async def test_the_blocking_client_submits_and_follows_a_task(mesh: FullMesh) -> None:
    mesh.models.script("primary", [Reply("done, blocking")])
    client_settings = await settings(mesh)

    def script() -> tuple[list[str], str | None]:
        # What a user's script does; it runs in a thread here so the mesh's loop goes on.
        with MainstaySync(client_settings) as mainstay:
            task = mainstay.submit_task("writer", "block on it", task_id=new_id())
            types = [event.type for event in task.events(timeout_s=60)]
            return types, task.wait(timeout_s=30).answer

    types, answer = await asyncio.to_thread(script)
    assert types[0] == "task.accepted"
    assert types[-1] == "task.completed"
    assert answer == "done, blocking"


async def test_bad_input_and_missing_settings_are_named(
    mesh: FullMesh, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MAINSTAY_TOKEN", raising=False)
    monkeypatch.delenv("MAINSTAY_TOKEN_FILE", raising=False)
    with pytest.raises(ClientError, match="no token: set MAINSTAY_TOKEN or MAINSTAY_TOKEN_FILE"):
        async with Mainstay(ClientSettings(kafka=mesh.kafka)) as mainstay:
            await mainstay.submit_task("writer", "anything")
    async with Mainstay(await settings(mesh)) as mainstay:
        with pytest.raises(ClientError, match=r"the task is invalid: input: .*at least 1"):
            await mainstay.submit_task("writer", "")
        with pytest.raises(ClientError, match=r"task_id: String should match pattern"):
            await mainstay.submit_task("writer", "hi", task_id="spaces are not allowed")
        with pytest.raises(
            ClientError,
            match=r"the message is \d+ bytes, over the limit of 1044480 .*max_message_bytes",
        ):
            await mainstay.submit_task("writer", "ø" * 190_000, labels={"big": "y" * 700_000})
        stalled = await mainstay.task(new_id())  # nothing will ever happen to it
        with pytest.raises(ClientError, match=r"did not end within 1 s \(it goes on\)"):
            await stalled.wait(timeout_s=1)
    with pytest.raises(ClientError, match=r"not a JWT"):
        async with Mainstay(ClientSettings(token="garbage", kafka=mesh.kafka)) as mainstay:  # type: ignore[arg-type]
            await mainstay.submit_task("writer", "anything")
    unreachable = KafkaSettings(bootstrap="127.0.0.1:9", request_timeout_s=2)
    with pytest.raises(ClientError, match=r"broker at 127\.0\.0\.1:9 is unreachable"):
        async with Mainstay(ClientSettings(token="x", kafka=unreachable)):  # type: ignore[arg-type]
            pass


async def test_a_mesh_that_is_not_there_is_named_and_gets_no_topics(mesh: FullMesh) -> None:
    """Submitting to a prefix no execution service runs under fails clearly, and does not
    create the submit or events topic with the broker's default partition count."""
    elsewhere = mesh.kafka.model_copy(
        update={"topic_prefix": f"nobody{uuid.uuid4().hex[:6]}.", "request_timeout_s": 2}
    )
    async with Mainstay(ClientSettings(token=await mesh.token(), kafka=elsewhere)) as mainstay:  # type: ignore[arg-type]
        with pytest.raises(ClientError, match=r"the broker has no topic nobody\w+\.execution"):
            await mainstay.submit_task("writer", "anything")
    producer = AIOKafkaProducer(bootstrap_servers=mesh.kafka.bootstrap)
    await producer.start()
    try:
        topics = (await producer.client.fetch_all_metadata()).topics()
    finally:
        await producer.stop()
    assert not [topic for topic in topics if topic.startswith(elsewhere.topic_prefix)]


async def test_the_examples_run_as_documented(mesh: FullMesh) -> None:
    mesh.models.script("primary", [Reply("from the example"), Reply("from the blocking one")])
    env = {
        **os.environ,
        "MAINSTAY_TOKEN": await mesh.token(),
        "MAINSTAY_KAFKA_BOOTSTRAP": mesh.kafka.bootstrap,
        "MAINSTAY_KAFKA_TOPIC_PREFIX": mesh.kafka.topic_prefix,
    }
    for example, expected in (
        ("submit_and_wait.py", "answer: from the example"),
        ("blocking.py", "from the blocking one"),
    ):
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(EXAMPLES / example),
            "writer",
            f"run {example}",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await within(process.communicate(), 120)
        text = output.decode()
        assert process.returncode == 0, text
        assert "task.completed" in text
        assert expected in text
