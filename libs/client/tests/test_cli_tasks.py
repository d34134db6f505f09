"""``mainstay tasks`` and ``mainstay memory`` as a user runs them, against the whole mesh."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import TYPE_CHECKING

import pytest

from mainstay_execution.testing.fake_models import HttpFailure, Reply, Stall

from .conftest import WRITER

if TYPE_CHECKING:
    from .conftest import Cli, FullMesh

pytestmark = [pytest.mark.real, pytest.mark.timeout(300)]


def new_id() -> str:
    return f"cli-{uuid.uuid4().hex[:10]}"


async def test_a_task_is_submitted_watched_and_shown(mesh: FullMesh, cli: Cli) -> None:
    mesh.models.script("primary", [HttpFailure(500), Reply("the pond is still")])
    submitted = await cli("tasks", "submit", WRITER, "describe the pond", "--json", who="submitter")
    assert submitted.code == 0, submitted.stderr
    task_id = json.loads(submitted.stdout)["task_id"]

    watched = await cli("tasks", "watch", task_id, "--timeout", "120", who="submitter")
    assert watched.code == 0, watched.stderr
    for shown in ("task.accepted", "task.retrying", "task.completed", "the pond is still"):
        assert shown in watched.stdout
    assert "retries" in watched.stdout
    assert "cost (micro-units)" in watched.stdout

    lines = await cli("tasks", "watch", task_id, "--json", who="submitter")
    events = [json.loads(line) for line in lines.stdout.splitlines()]
    assert [e["type"] for e in events][-1] == "task.completed"
    assert sum(e["type"] == "task.retrying" for e in events) == 1

    shown_json = await cli("tasks", "show", task_id, "--json", who="submitter")
    assert [e["type"] for e in json.loads(shown_json.stdout)] == [e["type"] for e in events]
    table = await cli("tasks", "show", task_id, who="submitter")
    assert "outcome" in table.stdout
    assert "completed" in table.stdout

    for _ in range(100):  # the supervisor follows task events on its own
        listed = await cli("tasks", "list", "--json")
        assert listed.code == 0, listed.stderr
        if any(t["task_id"] == task_id for t in json.loads(listed.stdout)):
            break
        await asyncio.sleep(0.3)
    else:
        raise AssertionError(f"the supervisor never listed {task_id}: {listed.stdout}")


async def test_submit_with_watch_follows_a_cancelled_task_to_a_failing_exit(
    mesh: FullMesh, cli: Cli
) -> None:
    mesh.models.script("primary", [Stall(seconds=120)])
    task_id = new_id()
    watching = asyncio.ensure_future(
        cli(
            "tasks",
            "submit",
            WRITER,
            "wait forever",
            "--task-id",
            task_id,
            "--watch",
            who="submitter",
        )
    )
    await mesh.events(task_id, lambda e: e["type"] == "step.started")
    cancelled = await cli("tasks", "cancel", task_id, "--reason", "not today", who="submitter")
    assert cancelled.code == 0, cancelled.stderr
    result = await watching
    assert result.code == 1
    assert "task.cancelled" in result.stdout
    assert "not today" in result.stdout


async def test_bad_input_exits_non_zero_naming_the_problem(cli: Cli) -> None:
    empty = await cli("tasks", "submit", WRITER, "", who="submitter")
    assert empty.code == 1
    assert "the task is invalid: input" in empty.stderr
    no_token = await cli("tasks", "submit", WRITER, "hi", env={"MAINSTAY_TOKEN": ""})
    assert no_token.code == 1
    assert "no token: set MAINSTAY_TOKEN or MAINSTAY_TOKEN_FILE" in no_token.stderr
    label = await cli("tasks", "submit", WRITER, "hi", "--label", "oops", who="submitter")
    assert label.code == 2
    assert "is not key=value" in label.stderr
    unknown = await cli("tasks", "show", new_id(), who="submitter")
    assert unknown.code == 1
    assert "no events of task" in unknown.stderr


async def test_memory_is_remembered_recalled_superseded_and_forgotten(cli: Cli) -> None:
    subject = f"deploy-day-{uuid.uuid4().hex[:6]}"

    async def remember(text: str) -> dict[str, str]:
        result = await cli(
            "memory",
            "remember",
            text,
            "--agent",
            WRITER,
            "--subject",
            subject,
            "--json",
            who="submitter",
        )
        assert result.code == 0, result.stderr
        return dict(json.loads(result.stdout))

    first = await remember("Deployments happen on Tuesdays")
    second = await remember("Deployments happen on Thursdays now")
    assert second["superseded"] == first["id"]

    recalled = await cli(
        "memory",
        "recall",
        "when do deployments happen",
        "--agent",
        WRITER,
        "--json",
        who="submitter",
    )
    hits = json.loads(recalled.stdout)
    assert hits[0]["content"] == "Deployments happen on Thursdays now"
    assert all(hit["id"] != first["id"] for hit in hits)

    history = await cli(
        "memory", "history", "--agent", WRITER, "--subject", subject, "--json", who="submitter"
    )
    versions = json.loads(history.stdout)
    assert [v["content"] for v in versions] == [
        "Deployments happen on Tuesdays",
        "Deployments happen on Thursdays now",
    ]

    forgotten = await cli("memory", "forget", second["id"], "--json", who="submitter")
    assert json.loads(forgotten.stdout) == {"forgotten": 1}
    bad_kind = await cli(
        "memory", "recall", "x", "--agent", WRITER, "--kind", "rumour", who="submitter"
    )
    assert bad_kind.code == 2
    assert "'rumour' is not one of" in bad_kind.stderr
