"""Stuck tasks resumed or cancelled, restart intensity quarantining the agent, humans told.

A real identity service delivers the supervisor's mail; the supervisor runs on
a database of its own and on identity's topics. Most tests drive the sweep
with an explicit clock (``Supervision.sweep(now)``) so every bound is exact;
one lets the supervisor's own sweep find a stuck task in real time.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import pytest_asyncio

from mainstay_common.auth import TokenSigner
from mainstay_common.bus import Bus
from mainstay_common.settings import AuthSettings, PostgresSettings
from mainstay_common.testing import read_records, temporary_database
from mainstay_contracts.execution import CANCEL_TASK, RESUME_TASK, TASK_EVENTS, TaskEvent
from mainstay_contracts.supervisor import AGENT_EVENTS, HEARTBEAT, HeartbeatCommand
from mainstay_identity.testing import running_identity
from mainstay_supervisor.app import SupervisorApp
from mainstay_supervisor.settings import SupervisorSettings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable

    from mainstay_contracts import TopicSpec
    from mainstay_identity.testing import Identity

pytestmark = pytest.mark.real

ADMIN = ["supervisor:read", "supervisor:admin"]
INTERVAL_S = 1.0  # the supervisor's heartbeat interval, and so its sweep interval


@dataclass
class Mesh:
    identity: Identity
    supervisor: SupervisorApp
    http: httpx.AsyncClient
    bus: Bus
    signer: TokenSigner
    tenant: str
    """The tenant the supervisor has mail credentials for; alice is its human."""
    alice: dict[str, str]

    def headers(self, tenant: str | None = None, scopes: Iterable[str] = ADMIN) -> dict[str, str]:
        token = self.signer.mint(subject="ops", tenant=tenant or self.tenant, scopes=list(scopes))
        return {"Authorization": f"Bearer {token}"}

    async def records(
        self, spec: TopicSpec[Any], count: int, task_ids: set[str], wait_s: float = 20
    ) -> list[dict[str, Any]]:
        kafka = self.identity.kafka
        found = await read_records(
            kafka.bootstrap,
            f"{kafka.topic_prefix}{spec.name}",
            count=count,
            accept=lambda r: json.loads(r.value).get("task_id") in task_ids,
            wait_s=wait_s,
        )
        return [json.loads(r.value) for r in found]

    async def register(self, name: str, **fields: Any) -> None:
        body = {
            "identity": name,
            "models": [{"provider": "openai", "model": "gpt-test"}],
            "escalation": ["alice"],
            **fields,
        }
        answer = await self.http.put(
            f"/v1/tenants/{self.tenant}/agents/{name}", json=body, headers=self.headers()
        )
        assert answer.status_code == 201, answer.text

    async def task_event(self, task_id: str, agent: str, kind: str = "task.started") -> None:
        await self.bus.publish(
            TASK_EVENTS,
            TaskEvent(
                type=kind,
                task_id=task_id,
                tenant=self.tenant,
                agent=agent,
                occurred_at=datetime.now(UTC),
            ),
        )

    async def followed(self, task_id: str, last_event: str = "task.started") -> dict[str, Any]:
        """The supervisor's view of the task once it has consumed ``last_event``."""
        for _ in range(400):
            answer = await self.http.get(f"/v1/tenants/{self.tenant}/tasks", headers=self.headers())
            assert answer.status_code == 200, answer.text
            for task in answer.json()["tasks"]:
                if task["task_id"] == task_id and task["last_event"] == last_event:
                    return dict(task)
            await asyncio.sleep(0.05)
        raise AssertionError(f"the supervisor never saw {last_event} of {task_id}")

    async def sweep_at(self, moment: datetime) -> None:
        """One sweep as if it ran at ``moment`` (it may act on other tests' tasks too)."""
        assert self.supervisor.supervision is not None
        await self.supervisor.supervision.sweep(moment)

    async def task(self, task_id: str) -> dict[str, Any]:
        answer = await self.http.get(f"/v1/tenants/{self.tenant}/tasks", headers=self.headers())
        assert answer.status_code == 200, answer.text
        (task,) = [t for t in answer.json()["tasks"] if t["task_id"] == task_id]
        return dict(task)

    async def notices(self) -> list[dict[str, Any]]:
        answer = await self.http.get(f"/v1/tenants/{self.tenant}/notices", headers=self.headers())
        assert answer.status_code == 200, answer.text
        return list(answer.json()["notices"])


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def mesh(
    kafka_bootstrap: str, postgres_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Mesh]:
    home = tmp_path_factory.mktemp("progress")
    (home / "identity").mkdir()
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    signer = TokenSigner.generate()
    (home / "jwks.json").write_text(json.dumps(signer.jwks()))
    async with (
        running_identity(kafka_bootstrap, postgres_dsn, home / "identity") as identity,
        temporary_database(postgres_dsn, prefix="supervisor_test") as dsn,
    ):
        secret = await identity.register(tenant, "supervisor", [], kind="service")
        alice = await identity.bearer(tenant, "alice", [], kind="user")
        settings = SupervisorSettings(
            http_port=0,
            shutdown_grace_s=2.0,
            kafka=identity.kafka,
            postgres=PostgresSettings(dsn=dsn),
            auth=AuthSettings(jwks_file=str(home / "jwks.json")),
            heartbeat_interval_s=INTERVAL_S,
            dead_after_s=10.0,
            identity_url=f"http://127.0.0.1:{identity.app.http_port}",
            mail_credentials=[f"{tenant}/supervisor:{secret}"],
        )
        async with (
            SupervisorApp(settings) as app,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}", timeout=30) as http,
            Bus(service="tests", kafka=identity.kafka) as bus,
        ):
            yield Mesh(identity, app, http, bus, signer, tenant, alice)


def later(task: dict[str, Any], seconds: float) -> datetime:
    return datetime.fromisoformat(task["last_progress_at"]) + timedelta(seconds=seconds)


async def inbox(mesh: Mesh, subject_part: str) -> dict[str, Any]:
    for _ in range(300):
        answer = await mesh.identity.http.get("/v1/inbox", headers=mesh.alice)
        assert answer.status_code == 200, answer.text
        found = [m for m in answer.json()["messages"] if subject_part in m["subject"]]
        if found:
            return dict(found[0])
        await asyncio.sleep(0.05)
    raise AssertionError(f"no mail about {subject_part!r} reached alice")


async def test_an_alive_but_stuck_task_is_resumed_within_three_heartbeat_intervals(
    mesh: Mesh,
) -> None:
    agent, task_id = "stuck-live", f"task-{uuid.uuid4().hex[:8]}"
    await mesh.register(agent, limits={"step_timeout_s": 2})
    await mesh.task_event(task_id, agent)
    seen = await mesh.followed(task_id)
    # The instance running it stays alive: it keeps sending heartbeats, work in flight.
    beat = HeartbeatCommand(
        service="execution",
        instance=f"exec-{uuid.uuid4().hex[:6]}",
        in_flight=1,
        last_progress_at=datetime.now(UTC),
        sent_at=datetime.now(UTC),
    )
    await mesh.bus.publish(HEARTBEAT, beat)
    (resume,) = await mesh.records(RESUME_TASK, 1, {task_id})
    assert resume["restart"] == 1
    assert resume["agent"] == agent
    assert resume["requested_by"] == "supervisor"
    assert "no progress" in resume["reason"]
    assert "step timeout 2 s" in resume["reason"]
    assert resume["token"], "the supervisor signs its request when it can"
    # Not before the step timeout, and within three heartbeat intervals after it.
    stalled_for = datetime.fromisoformat(resume["requested_at"]) - datetime.fromisoformat(
        seen["last_progress_at"]
    )
    assert timedelta(seconds=2) < stalled_for <= timedelta(seconds=2 + 3 * INTERVAL_S)
    # Meanwhile its instance is alive: up by its heartbeats, however stuck its task.
    beat = beat.model_copy(update={"sent_at": datetime.now(UTC)})
    await mesh.bus.publish(HEARTBEAT, beat)
    for _ in range(200):
        fleet = (await mesh.http.get("/fleet")).json()["instances"]
        (instance,) = [e for e in fleet if e["instance"] == beat.instance]
        if datetime.fromisoformat(instance["last_heartbeat"]) == beat.sent_at:
            break
        await asyncio.sleep(0.05)
    assert instance["status"] == "up"


async def test_progress_and_waiting_keep_a_task_from_being_judged_stuck(mesh: Mesh) -> None:
    agent = "patient"
    await mesh.register(agent, limits={"step_timeout_s": 600})
    busy, waiting = f"busy-{uuid.uuid4().hex[:8]}", f"wait-{uuid.uuid4().hex[:8]}"
    await mesh.task_event(busy, agent)
    await mesh.task_event(waiting, agent)
    first = await mesh.followed(busy)
    await mesh.followed(waiting)
    # Just before the step timeout nothing happens; progress then moves the deadline.
    await mesh.sweep_at(later(first, 599))
    assert (await mesh.task(busy))["restarts"] == 0
    await mesh.task_event(busy, agent, "step.completed")
    await mesh.task_event(waiting, agent, "task.waiting")
    progressed = await mesh.followed(busy, "step.completed")
    waits = await mesh.followed(waiting, "task.waiting")
    assert waits["state"] == "waiting"
    await mesh.sweep_at(later(progressed, 599))
    assert (await mesh.task(busy))["restarts"] == 0
    # Past the timeout the running task is resumed, the waiting one left alone.
    await mesh.sweep_at(later(progressed, 601))
    assert len(await mesh.records(RESUME_TASK, 1, {busy, waiting})) == 1
    resumed = await mesh.records(RESUME_TASK, 2, {busy, waiting}, wait_s=3)
    assert [r["task_id"] for r in resumed] == [busy]
    assert (await mesh.task(busy))["restarts"] == 1
    assert (await mesh.task(waiting))["restarts"] == 0
    # A finished task is never judged again.
    await mesh.task_event(busy, agent, "task.completed")
    done = await mesh.followed(busy, "task.completed")
    assert done["state"] == "finished"
    await mesh.sweep_at(later(done, 5000))
    assert (await mesh.task(busy))["restarts"] == 1
    assert await mesh.records(CANCEL_TASK, 1, {busy, waiting}, wait_s=1) == []


async def test_past_its_restart_budget_a_task_is_cancelled_and_the_contact_told(
    mesh: Mesh,
) -> None:
    agent, task_id = "flaky", f"task-{uuid.uuid4().hex[:8]}"
    await mesh.register(agent, limits={"step_timeout_s": 300}, strategy={"max_task_restarts": 1})
    await mesh.task_event(task_id, agent)
    seen = await mesh.followed(task_id)
    await mesh.sweep_at(later(seen, 301))  # restart 1 of 1
    assert (await mesh.task(task_id))["restarts"] == 1
    # Resumed, it gets another step timeout to show progress; it shows none.
    await mesh.sweep_at(later(seen, 500))
    assert (await mesh.task(task_id))["state"] == "running"
    await mesh.sweep_at(later(seen, 700))
    assert (await mesh.task(task_id))["state"] == "cancelling"
    (resume,) = await mesh.records(RESUME_TASK, 1, {task_id})
    (cancel,) = await mesh.records(CANCEL_TASK, 1, {task_id})
    assert resume["restart"] == 1
    assert "restarted 1 time(s) already" in cancel["reason"]
    assert "max_task_restarts 1" in cancel["reason"]
    # The escalation contact reads it in the inbox, and the notice is kept.
    mail = await inbox(mesh, f"Task {task_id}")
    assert mail["sender"] == "supervisor"
    assert "cancelled a stuck task" in mail["body"]
    (notice,) = [n for n in await mesh.notices() if n["task_id"] == task_id]
    assert notice["kind"] == "task.cancelled"
    assert notice["mailed"] is True
    assert notice["recipients"] == ["alice"]
    # Cancelling: further silence is not acted on again.
    await mesh.sweep_at(later(seen, 5000))
    assert len(await mesh.records(CANCEL_TASK, 2, {task_id}, wait_s=5)) == 1


async def test_restart_intensity_quarantines_the_agent_until_released(mesh: Mesh) -> None:
    agent = "stormy"
    await mesh.register(
        agent,
        limits={"step_timeout_s": 300},
        strategy={"max_restarts": 2, "period_s": 3600, "max_task_restarts": 5},
    )
    tasks = [f"storm-{n}-{uuid.uuid4().hex[:6]}" for n in range(3)]
    for task_id in tasks:
        await mesh.task_event(task_id, agent)
    seen = [await mesh.followed(task_id) for task_id in tasks]
    latest = max(later(task, 301) for task in seen)
    await mesh.sweep_at(latest)
    # Waited for as long as a loaded machine may need, then checked for extras briefly.
    assert len(await mesh.records(RESUME_TASK, 2, set(tasks))) == 2
    assert len(await mesh.records(CANCEL_TASK, 1, set(tasks))) == 1
    resumed = await mesh.records(RESUME_TASK, 3, set(tasks), wait_s=3)
    cancelled = await mesh.records(CANCEL_TASK, 2, set(tasks), wait_s=1)
    assert len(resumed) == 2, "two restarts are allowed in the period"
    (cancel,) = cancelled
    assert "agent quarantined" in cancel["reason"]
    assert "3 restarts within 3600 s (at most 2 allowed)" in cancel["reason"]
    # The agent is quarantined: announced for the execution service, visible here.
    events = await read_records(
        mesh.identity.kafka.bootstrap,
        f"{mesh.identity.kafka.topic_prefix}{AGENT_EVENTS.name}",
        count=1,
        accept=lambda r: (
            (e := json.loads(r.value))["name"] == agent and e["type"] == "agent.quarantined"
        ),
    )
    quarantined = json.loads(events[0].value)
    assert quarantined["quarantined"] is True
    assert "at most 2 allowed" in quarantined["reason"]
    answer = await mesh.http.get(
        f"/v1/tenants/{mesh.tenant}/agents/{agent}", headers=mesh.headers()
    )
    assert answer.json()["quarantined"] is True
    mail = await inbox(mesh, f"Agent {agent} quarantined")
    assert "new tasks are refused" in mail["body"]
    # Released by a human, the agent may restart tasks again: old restarts do not count.
    bad = await mesh.http.post(
        f"/v1/tenants/{mesh.tenant}/agents/{agent}/release", json={}, headers=mesh.headers()
    )
    assert bad.status_code == 422, bad.text
    assert "body.reason: Field required" in bad.text
    released = await mesh.http.post(
        f"/v1/tenants/{mesh.tenant}/agents/{agent}/release",
        json={"reason": "provider fixed"},
        headers=mesh.headers(),
    )
    assert released.status_code == 200, released.text
    assert released.json()["quarantined"] is False
    fresh = f"storm-after-{uuid.uuid4().hex[:6]}"
    await mesh.task_event(fresh, agent)
    again = await mesh.followed(fresh)
    await mesh.sweep_at(later(again, 301))
    (resume,) = await mesh.records(RESUME_TASK, 1, {fresh})
    assert resume["restart"] == 1


async def test_quarantine_by_hand_needs_admin_and_names_the_agent(mesh: Mesh) -> None:
    path = f"/v1/tenants/{mesh.tenant}"
    await mesh.register("manual")
    reader = mesh.headers(scopes=["supervisor:read"])
    denied = await mesh.http.post(
        f"{path}/agents/manual/quarantine", json={"reason": "x"}, headers=reader
    )
    assert denied.status_code == 403, denied.text
    assert "supervisor:admin" in denied.text
    missing = await mesh.http.post(
        f"{path}/agents/nobody/quarantine", json={"reason": "x"}, headers=mesh.headers()
    )
    assert missing.status_code == 404, missing.text
    assert "nobody" in missing.text
    other = await mesh.http.get(f"{path}/tasks", headers=mesh.headers(tenant="someone-else"))
    assert other.status_code == 403, other.text
    done = await mesh.http.post(
        f"{path}/agents/manual/quarantine", json={"reason": "runaway costs"}, headers=mesh.headers()
    )
    assert done.status_code == 200, done.text
    assert done.json()["quarantine_reason"] == "runaway costs (by ops)"
