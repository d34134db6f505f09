"""The workload of ``./dev demo``, run against the whole mesh on loopback.

The mesh (:func:`mainstay_execution.testing.mesh.running_mesh`) plays the
stack of ``./dev up``: identity, the ledger, memory, the tools gateway and the
supervisor, with execution as its own process so the demo can kill it with
SIGKILL and start another. Its admin token is what ``./dev up`` writes: a
principal of the tenant holding every scope, signed by identity.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import pytest
from rich.console import Console

from mainstay_common.devstack._services import DEMO_MODEL_CREDENTIAL
from mainstay_execution._demo_world import REAL_CREDENTIAL, Planner
from mainstay_execution.demo import COST_LABEL, TOPICS, ExecutionFaults, run_execution_demo
from mainstay_execution.testing.fake_models import FakeModelServer
from mainstay_execution.testing.mesh import FullMesh, ServiceProcess, running_mesh

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping
    from pathlib import Path

    from mainstay_execution.demo import ExecutionDemoReport

pytestmark = [pytest.mark.real, pytest.mark.timeout(480)]


@contextlib.asynccontextmanager
async def demo_mesh(kafka_bootstrap: str, postgres_dsn: str, home: Path) -> AsyncIterator[FullMesh]:
    async with running_mesh(kafka_bootstrap, postgres_dsn, home) as mesh:
        secret = await mesh.identity.register(mesh.tenant, "admin", ["*"], kind="service")
        answer = await mesh.identity.token(f"{mesh.tenant}/admin", secret)
        assert answer.status_code == 200, answer.text
        (home / "admin.token").write_text(answer.json()["access_token"])
        yield mesh


async def run_demo(
    mesh: FullMesh,
    execution: ServiceProcess,
    console: Console,
    *,
    faults: ExecutionFaults | None,
    environ: Mapping[str, str],
) -> ExecutionDemoReport:
    return await run_execution_demo(
        mesh.kafka.bootstrap,
        mesh.home,
        console,
        urls={
            "identity": mesh.identity_url,
            "tools-gateway": mesh.gateway_url,
            "ledger": mesh.ledger_url,
            "supervisor": mesh.supervisor_url,
            "execution": execution.url,
        },
        memory_target=mesh.memory_target,
        faults=faults,
        tenant=mesh.tenant,
        topic_prefix=mesh.kafka.topic_prefix,
        environ=environ,
    )


async def test_the_workload_heals_through_its_faults_and_sums_them_up(
    kafka_bootstrap: str, postgres_dsn: str, tmp_path: Path
) -> None:
    console = Console(record=True, width=200)
    async with (
        demo_mesh(kafka_bootstrap, postgres_dsn, tmp_path) as mesh,
        contextlib.AsyncExitStack() as processes,
    ):
        instances = [await processes.enter_async_context(mesh.execution_process())]

        async def crash() -> str:
            await instances[-1].kill()
            return f"pid {instances[-1].process.pid}"

        async def restart() -> None:
            instances.append(await processes.enter_async_context(mesh.execution_process()))

        report = await run_demo(
            mesh,
            instances[0],
            console,
            faults=ExecutionFaults(crash=crash, restart=restart),
            environ={},
        )
        await mesh.ledger_balanced()  # every model call charged once, holds settled

    shown = console.export_text()
    assert report.ok, shown
    # Three research tasks, each handed to the writer and back for review, and the
    # task whose budget needed a human.
    assert len(report.tasks) == 3 * len(TOPICS) + 1
    assert [t.final["type"] for t in report.tasks.values() if t.final] == ["task.completed"] * 10
    assert report.hand_offs == 2 * len(TOPICS)
    # Recall finds the fact that superseded the old one; a task whose recall missed its
    # deadline (a loaded machine) runs on without memory and says so when it starts.
    started = {e["task_id"]: e["details"] for e in report.events if e["type"] == "task.started"}
    for task_id in report.batch:
        answer = str(report.tasks[task_id].final)
        assert "Berlin" not in answer, answer
        assert "head office in Lisbon" in answer or "memory" in started[task_id], (
            answer,
            started[task_id],
        )
    assert report.memory_outcomes == ["ADDED", "SUPERSEDED_PREVIOUS"]
    assert report.retries >= 1 + 2  # the primary's 500, the lookup's two failures
    assert report.fallbacks >= 1  # the primary's outage
    assert report.approvals >= 1
    # Killed mid-batch (the first instance died by SIGKILL), then running again.
    assert instances[0].returncode == -9
    assert len(instances) == 2
    assert report.restarted_after_s is not None
    # Tasks that had taken steps when it died finished afterwards.
    before = report.events[: report.killed_after_events]
    after = report.events[report.killed_after_events :]
    resumed = {e["task_id"] for e in before if e["type"] == "step.completed"} & {
        e["task_id"] for e in after if e["type"] == "task.completed"
    }
    assert resumed, shown
    # The flaky tool's side effects: one per step that called it, whatever was re-sent.
    assert set(report.lookup_effects.values()) == {1}
    assert report.lookup_calls == len(report.lookup_effects) + 2
    assert report.dead_letters == 0
    rows = dict(report.summary())
    assert rows["tasks completed"] == "10 of 10"
    assert rows[COST_LABEL].endswith(")")
    assert report.cost_per_success is not None
    assert report.cost_per_success > 0
    for label in ("tasks completed", "retries", "fallbacks", "escalations", "dead letters"):
        assert label in shown
    assert COST_LABEL in shown
    assert "scripted server speaking the OpenAI-compatible API" in shown
    assert "workload OK" in shown


async def test_with_a_model_endpoint_set_the_agents_use_it(
    kafka_bootstrap: str, postgres_dsn: str, tmp_path: Path
) -> None:
    # The endpoint stands in for a real OpenAI-compatible provider: it expects the key.
    assert REAL_CREDENTIAL == DEMO_MODEL_CREDENTIAL  # what ./dev up hands execution
    console = Console(record=True, width=200)
    async with (
        FakeModelServer(api_key="sk-demo-test") as endpoint,
        demo_mesh(kafka_bootstrap, postgres_dsn, tmp_path) as mesh,
    ):
        endpoint.respond("local-model", Planner())
        base_url = endpoint.openai_base_url
        key = {"EXECUTION_MODEL_KEYS": f'["{REAL_CREDENTIAL}=sk-demo-test"]'}
        async with mesh.execution_process(env=key) as execution:
            report = await run_demo(
                mesh,
                execution,
                console,
                faults=None,
                environ={
                    "MAINSTAY_MODEL_BASE_URL": base_url,
                    "MAINSTAY_MODEL_API_KEY": "sk-demo-test",
                    "MAINSTAY_MODEL_NAME": "local-model",
                },
            )

    shown = console.export_text()
    assert report.ok, shown
    assert report.real_model
    assert len(report.completed) == len(report.tasks) == 3 * len(TOPICS) + 1
    requests = endpoint.requests_for("local-model")
    assert requests
    assert all(r.authorized for r in requests)
    assert endpoint.requests_for() == requests  # no other model was asked
    assert f"the agents' model is local-model at {base_url}" in shown
    assert not report.killed
