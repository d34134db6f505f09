"""Infrastructure faults under a batch of tasks: PostgreSQL or the broker stopped and
started again, an execution instance frozen (``SIGSTOP``) and woken.

Each fault runs the whole mesh of :mod:`mainstay_execution.testing.mesh` on a
*private* embedded broker and PostgreSQL (free loopback ports, a temporary data
directory) that it may stop and start again on the same port and data
directory; nothing else uses them. Execution runs as its own process(es).

The tasks call side-effecting, priced HTTP tools through the gateway, so every
effect is counted where it happens: completed tasks (their final events), tool
side effects (by the tool's own server, per idempotency key) and ledger usage
rows (per task, step, kind and resource). A fault returns :class:`Figures`:
``sent`` tasks, ``acknowledged`` (accepted by execution), ``processed``
(completed), ``lost`` (sent but not completed, plus expected effects that never
happened) and ``duplicated`` (effects beyond one: a tool call run twice, a
usage charged twice, a task ended twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from aiokafka import AIOKafkaProducer

from mainstay_common.devstack import restartable_port
from mainstay_common.devstack._postgres import (
    EmbeddedPostgres,
    ensure_vector,
    load_embedded_postgres,
    wait_for_postgres,
)
from mainstay_common.errors import DependencyUnavailable
from mainstay_common.testing import PrivateBroker, TopicTail
from mainstay_contracts import REGISTRY
from mainstay_contracts.execution import TASK_EVENTS
from mainstay_execution.testing.events import FINAL_TYPES
from mainstay_execution.testing.fake_models import Stall, ToolLoopResponder
from mainstay_execution.testing.mesh import running_mesh

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from aiokafka import ConsumerRecord

    from mainstay_common.settings import KafkaSettings
    from mainstay_execution.testing.fake_models import FakeRequest, Step
    from mainstay_execution.testing.mesh import FullMesh, ServiceProcess

__all__ = [
    "Figures",
    "PrivateBroker",
    "PrivatePostgres",
    "broker_restart",
    "frozen_instance",
    "postgres_restart",
    "private_stack",
]

AGENT = "steady"
TOOLS = ["fault_a", "fault_b"]
STEPS = len(TOOLS) + 1  # one tool a step, then the answer
KEEP_ENV = "MAINSTAY_FAULTS_KEEP"
"""Set it to keep a fault's home folder (its logs) instead of removing it."""


def _say(message: str) -> None:
    print(f"[faults {time.strftime('%H:%M:%S')}] {message}", flush=True)  # noqa: T201


# -- the private broker and PostgreSQL -----------------------------------------------------


class PrivatePostgres:
    """The embedded PostgreSQL on a fixed loopback port and data directory, stoppable."""

    def __init__(self, home: Path, port: int | None = None) -> None:
        self.server = EmbeddedPostgres(home / "pgdata", port or restartable_port())

    @property
    def dsn(self) -> str:
        return self.server.dsn

    async def start(self) -> None:
        load_embedded_postgres()  # on the event loop's thread, before the worker threads
        await asyncio.to_thread(self.server.initialise)
        await asyncio.to_thread(self.server.start, 60)
        await wait_for_postgres(
            self.dsn,
            timeout_s=60,
            probe=(self.server.host, self.server.port),
            log_file=self.server.log_file,
        )
        await ensure_vector(self.dsn)

    async def stop(self) -> None:
        await asyncio.to_thread(self.server.stop, 30)


@contextlib.asynccontextmanager
async def private_stack() -> AsyncIterator[tuple[PrivateBroker, PrivatePostgres, Path]]:
    """A broker and a PostgreSQL of the caller's own, and a home folder, removed at the end."""
    # Not under pytest's basetemp: as root, postgres runs as another user that must
    # traverse every parent folder (see mainstay_common.testing).
    home = Path(tempfile.mkdtemp(prefix="mainstay-faults-"))
    broker, postgres = PrivateBroker(home), PrivatePostgres(home)
    try:
        await broker.start()
        await postgres.start()
        yield broker, postgres, home
    finally:
        try:
            await broker.stop()
        finally:
            with contextlib.suppress(Exception):
                await postgres.stop()
            if os.environ.get(KEEP_ENV):
                _say(f"kept {home} (logs of the broker, PostgreSQL and execution)")
            else:
                shutil.rmtree(home, ignore_errors=True)


# -- what happened ------------------------------------------------------------------------------


@dataclass
class Figures:
    """What a fault did to a batch of tasks."""

    fault: str
    sent: int = 0
    acknowledged: int = 0
    processed: int = 0
    lost: int = 0
    duplicated: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "acknowledged": self.acknowledged,
            "processed": self.processed,
            "lost": self.lost,
            "duplicated": self.duplicated,
            **self.details,
        }

    def line(self) -> str:
        """One line of figures, as the tests print them."""
        return f"{self.fault}: {json.dumps(self.as_dict(), sort_keys=True)}"


class TaskWatch:
    """Reads ``execution.evt.task.v1`` from its beginning without a consumer group, by task.
    It keeps reading across a broker restart (its positions fall back to the start)."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.events: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
        self._tail = TopicTail(
            kafka.bootstrap, [f"{kafka.topic_prefix}{TASK_EVENTS.name}"], self._on_record
        )

    async def __aenter__(self) -> TaskWatch:
        await self._tail.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._tail.__aexit__(*exc)

    def _on_record(self, record: ConsumerRecord[bytes, bytes]) -> None:
        payload = json.loads(record.value)
        self.events[payload.get("task_id", "")].append(payload)

    def types(self, task_id: str) -> list[str]:
        return [e["type"] for e in self.events.get(task_id, [])]

    def ended(self, task_id: str) -> bool:
        return any(t in FINAL_TYPES for t in self.types(task_id))

    async def wait_ended(self, tasks: list[str], wait_s: float) -> bool:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if all(self.ended(t) for t in tasks):
                return True
            await asyncio.sleep(0.2)
        return all(self.ended(t) for t in tasks)


async def _figures(
    fault: str, mesh: FullMesh, watch: TaskWatch, tasks: list[str], extra: dict[str, Any]
) -> Figures:
    """Count the batch's effects where they happened."""
    accepted = [t for t in tasks if "task.accepted" in watch.types(t)]
    completed = [t for t in tasks if "task.completed" in watch.types(t)]
    ended_twice = sum(max(sum(x in FINAL_TYPES for x in watch.types(t)) - 1, 0) for t in tasks)
    effects = Counter[str]()
    for tool in TOOLS:
        effects.update(mesh.tools.effects_by_key(tool))
    expected_keys = {f"{t}:{n + 1}:0" for t in tasks for n in range(len(TOOLS))}
    missing_effects = len(expected_keys - set(effects))
    duplicate_effects = sum(n - 1 for n in effects.values() if n > 1)
    usage = await mesh.ledger_rows(
        "SELECT task_id, step, kind, resource, count(*) AS n FROM usage"
        " WHERE task_id = ANY($1::text[]) GROUP BY task_id, step, kind, resource",
        tasks,
    )
    double_charges = sum(int(row["n"]) - 1 for row in usage)
    charged = len(usage)
    missing_charges = max(len(tasks) * (STEPS + len(TOOLS)) - charged, 0)
    try:
        await mesh.ledger_balanced()
        balanced = True
    except AssertionError as exc:
        _say(f"{fault}: the ledger's invariants do not hold: {exc}")
        balanced = False
    unfinished: dict[str, str] = {}
    for task_id in tasks:
        if task_id not in completed:
            last = watch.events[task_id][-1] if watch.events.get(task_id) else None
            _say(f"{fault}: task {task_id} did not complete; its last event: {last}")
            unfinished[task_id] = await _where_it_stopped(mesh, task_id, last)
    if unfinished:
        _say_handlers_in_flight()
    return Figures(
        fault=fault,
        sent=len(tasks),
        acknowledged=len(accepted),
        processed=len(completed),
        lost=(len(tasks) - len(completed)) + missing_effects + missing_charges,
        duplicated=duplicate_effects + double_charges + ended_twice,
        details={
            # Each task that did not complete, where it stopped (in a failed test's message).
            "unfinished": unfinished,
            "tool_side_effects": sum(effects.values()),
            "tool_side_effects_missing": missing_effects,
            "tool_side_effects_duplicated": duplicate_effects,
            "usage_charged": charged,
            "usage_missing": missing_charges,
            "double_charges": double_charges,
            "ended_twice": ended_twice,
            "ledger_balanced": balanced,
            **extra,
        },
    )


def _say_handlers_in_flight() -> None:
    """Where each message handler of this process's services still runs waits (the
    services but execution run in this process): a handler stuck is a task stuck."""
    for running in asyncio.all_tasks():
        frames = running.get_stack()
        if any(frame.f_code.co_name == "_handle_alone" for frame in frames):
            out = io.StringIO()
            running.print_stack(file=out)
            _say(f"a handler still runs: {out.getvalue()}")


async def _where_it_stopped(mesh: FullMesh, task_id: str, last: dict[str, Any] | None) -> str:
    """A task that did not complete, in one line: its last event and its stored state."""
    said = f"last event {last.get('type')} {last.get('reason', '')!r}"[:300] if last else "no event"
    try:
        rows = await mesh.execution_rows(
            "SELECT state, waiting_for, steps, wake_at, reason,"
            " (SELECT count(*) FROM model_calls m WHERE m.task_id = t.task_id) AS model_calls,"
            " (SELECT array_agg(c.idempotency_key) FROM tool_calls c"
            "  WHERE c.task_id = t.task_id AND c.result IS NULL) AS unanswered_tool_calls"
            " FROM tasks t WHERE task_id = $1",
            task_id,
        )
    except Exception as exc:  # noqa: BLE001 - a figure, not the test's verdict
        return f"{said}; its row could not be read: {exc!r}"
    if not rows:
        return f"{said}; no row in execution.tasks"
    return f"{said}; stored: {dict(rows[0])}"[:600]


# -- shared setup ------------------------------------------------------------------------------


def _slow(responder: Callable[[FakeRequest], Step], seconds: float) -> Callable[..., Step]:
    """The model answers ``responder``'s step after ``seconds``: calls are in flight longer."""

    def answer(request: FakeRequest) -> Step:
        return Stall(seconds, then=responder(request))

    return answer


async def _prepare(mesh: FullMesh, model_delay_s: float = 0.0) -> None:
    """The fault agent and its priced, side-effecting tools (the caller waits for execution)."""
    responder = ToolLoopResponder(answer="settled")
    mesh.models.respond("primary", _slow(responder, model_delay_s) if model_delay_s else responder)
    for tool in TOOLS:
        await mesh.register_tool(tool, side_effects=True, price_micros=100, wait=False)
    await mesh.register_agent(
        AGENT, tools=TOOLS, memory={"recall": False, "remember": []}, wait=False
    )


async def _ready_tools(mesh: FullMesh) -> None:
    await mesh.wait_agent(AGENT)
    for tool in TOOLS:
        await mesh._wait_row("SELECT 1 FROM tools WHERE name = $1", (tool,), f"tool {tool}", 60)


async def _submit(mesh: FullMesh, tasks: list[str], token: str, prefix: str) -> None:
    """Submit one task, as a client would: a retryable refusal (the broker is back but
    the topic is not there yet) is tried again."""
    task_id = f"{prefix}-{uuid.uuid4().hex[:10]}"
    for attempt in range(100):
        try:
            await mesh.submit(task_id, AGENT, "settle up", max_cost_micros=1_000_000, token=token)
        except DependencyUnavailable:
            if attempt == 99:
                raise
            await asyncio.sleep(0.2)
            continue
        break
    tasks.append(task_id)


async def _readiness(client: httpx.AsyncClient, urls: dict[str, str]) -> dict[str, int]:
    """``/readyz`` status of each service (0: no answer)."""
    codes: dict[str, int] = {}
    for name, url in urls.items():
        try:
            codes[name] = (await client.get(f"{url}/readyz")).status_code
        except httpx.HTTPError:
            codes[name] = 0
    return codes


def _service_urls(mesh: FullMesh, processes: list[ServiceProcess]) -> dict[str, str]:
    urls = {
        "identity": mesh.identity_url,
        "ledger": mesh.ledger_url,
        "supervisor": mesh.supervisor_url,
        "tools-gateway": mesh.gateway_url,
        "memory": f"http://127.0.0.1:{mesh.memory.http_port}",
    }
    for number, process in enumerate(processes, start=1):
        urls[f"execution-{number}"] = process.url
    return urls


async def _recorded_steps(mesh: FullMesh, tasks: list[str]) -> int:
    rows = await mesh.execution_rows(
        "SELECT count(*) AS n FROM model_calls WHERE reply IS NOT NULL"
        " AND task_id = ANY($1::text[])",
        tasks,
    )
    return int(rows[0]["n"])


async def _until(check: Callable[[], Any], wait_s: float, poll_s: float = 0.1) -> bool:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if await check():
                return True
        await asyncio.sleep(poll_s)
    return False


# -- PostgreSQL stopped and started again --------------------------------------------------------


async def postgres_restart(
    tasks_before: int = 4, tasks_during: int = 4, down_s: float = 5.0, wait_s: float = 180
) -> Figures:
    """Tasks run while PostgreSQL is stopped for ``down_s`` and started again on the same
    port and data directory; more tasks are submitted while it is away (the broker takes
    them). Every service must answer ``/readyz`` 503 meanwhile and 200 after, by itself."""
    async with (
        private_stack() as (broker, postgres, home),
        running_mesh(broker.bootstrap, postgres.dsn, home) as mesh,
    ):
        await _prepare(mesh)
        async with mesh.execution_process() as process, TaskWatch(mesh.kafka) as watch:
            await _ready_tools(mesh)
            token = await mesh.token()
            urls = _service_urls(mesh, [process])
            tasks: list[str] = []
            for _ in range(tasks_before):
                await _submit(mesh, tasks, token, "pg")
            await _until(lambda: _has_steps(mesh, tasks, 1), 60)
            _say(f"postgres: stopping it with {await _recorded_steps(mesh, tasks)} steps recorded")
            await postgres.stop()
            stopped = time.monotonic()
            not_ready: set[str] = set()
            async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
                submitted = 0
                while time.monotonic() - stopped < down_s:
                    if submitted < tasks_during:
                        await _submit(mesh, tasks, token, "pg")
                        submitted += 1
                    codes = await _readiness(client, urls)
                    not_ready |= {name for name, code in codes.items() if code == 503}
                    await asyncio.sleep(0.3)
                while submitted < tasks_during:
                    await _submit(mesh, tasks, token, "pg")
                    submitted += 1
                _say(f"postgres: not ready while it was away: {sorted(not_ready)}; starting it")
                await postgres.start()

                async def all_ready() -> bool:
                    codes = await _readiness(client, urls)
                    return all(code == 200 for code in codes.values())

                ready_again = await _until(all_ready, 60, 0.2)
            ended = await watch.wait_ended(tasks, wait_s)
            _say(f"postgres: every task ended: {ended}")
            figures = await _figures(
                "postgres_restart",
                mesh,
                watch,
                tasks,
                {
                    "down_s": down_s,
                    "submitted_while_down": tasks_during,
                    "services": sorted(urls),
                    "not_ready_while_down": sorted(not_ready),
                    "ready_again": ready_again,
                },
            )
        mesh.models.respond("primary", None)
    return figures


async def _has_steps(mesh: FullMesh, tasks: list[str], steps: int) -> bool:
    return await _recorded_steps(mesh, tasks) >= steps


# -- an execution instance frozen and woken ---------------------------------------------------------


async def frozen_instance(
    tasks: int = 6, model_delay_s: float = 0.5, wait_s: float = 180
) -> Figures:
    """Two execution instances; the one holding the batch's partitions is frozen (SIGSTOP)
    mid-batch, its partitions move to the other, which resumes its tasks; then it is woken
    (SIGCONT) and every write it tries for the moved partitions is refused (fenced)."""
    async with (
        private_stack() as (broker, postgres, home),
        running_mesh(broker.bootstrap, postgres.dsn, home) as mesh,
    ):
        await _prepare(mesh, model_delay_s)
        async with (
            mesh.execution_process(instance_id="exec-a") as first,
            mesh.execution_process(instance_id="exec-b") as second,
            TaskWatch(mesh.kafka) as watch,
        ):
            await _ready_tools(mesh)
            instances = {"exec-a": first, "exec-b": second}
            await _settled_leases(mesh, 90)
            token = await mesh.token()
            batch: list[str] = []
            for _ in range(tasks):
                await _submit(mesh, batch, token, "frozen")
            await _until(lambda: _has_steps(mesh, batch, max(tasks // 2, 1)), 60)
            owners = await _owners_of(mesh, batch)
            victim_id = Counter(owners.values()).most_common(1)[0][0]
            victim = instances[victim_id]
            moved = sorted(t for t, owner in owners.items() if owner == victim_id)
            survivor_id = next(i for i in instances if i != victim_id)
            steps_at_freeze = await _recorded_steps(mesh, moved)
            _say(f"frozen: SIGSTOP {victim_id}, which runs {len(moved)} of the batch's tasks")
            victim.process.send_signal(signal.SIGSTOP)
            try:

                async def taken_over() -> bool:
                    now = await _owners_of(mesh, batch)
                    return all(now[t] == survivor_id for t in moved)

                # The session timeout is 2 s; a takeover takes a few seconds more.
                moved_over = await _until(taken_over, 30, 0.2)
                resumed = moved_over and await _until(
                    lambda: _progressed(mesh, moved, steps_at_freeze), 60
                )
                _say(f"frozen: partitions moved: {moved_over}; its tasks resumed: {resumed}")
            finally:
                woken_at = victim.log.stat().st_size if victim.log.exists() else 0
                victim.process.send_signal(signal.SIGCONT)
            _say(f"frozen: SIGCONT {victim_id}")
            ended = await watch.wait_ended(batch, wait_s)
            await asyncio.sleep(2)  # what the woken instance still tries shows in its log
            fenced = _fenced_writes(victim.log, woken_at)
            _say(f"frozen: every task ended: {ended}; writes refused by the fence: {fenced}")
            figures = await _figures(
                "frozen_instance",
                mesh,
                watch,
                batch,
                {
                    "instances": 2,
                    "frozen": victim_id,
                    "tasks_on_frozen_instance": len(moved),
                    "partitions_moved": moved_over,
                    "tasks_resumed_elsewhere": resumed,
                    "fenced_writes_refused": fenced,
                },
            )
        mesh.models.respond("primary", None)
    return figures


async def _settled_leases(mesh: FullMesh, wait_s: float, quiet_s: float = 3.0) -> bool:
    """Until both instances hold leases and no lease changed hands for ``quiet_s``: the
    consumer group has settled. (Freezing an instance while the embedded broker is still
    rebalancing the group can leave the frozen member in the group until it wakes.)"""
    deadline = time.monotonic() + wait_s
    last: list[tuple[int, str, int]] = []
    since = time.monotonic()
    while time.monotonic() < deadline:
        rows = await mesh.execution_rows("SELECT partition, owner, epoch FROM leases")
        now = sorted((r["partition"], r["owner"], r["epoch"]) for r in rows)
        if now != last:
            last, since = now, time.monotonic()
        elif len({owner for _, owner, _ in now}) == 2 and time.monotonic() - since >= quiet_s:
            return True
        await asyncio.sleep(0.2)
    return False


async def _owners_of(mesh: FullMesh, tasks: list[str]) -> dict[str, str]:
    """The instance whose lease covers each task's partition."""
    rows = await mesh.execution_rows(
        "SELECT t.task_id, l.owner FROM tasks t JOIN leases l ON l.partition = t.partition"
        " WHERE t.task_id = ANY($1::text[])",
        tasks,
    )
    return {row["task_id"]: row["owner"] for row in rows}


async def _progressed(mesh: FullMesh, tasks: list[str], before: int) -> bool:
    return await _recorded_steps(mesh, tasks) > before


def _fenced_writes(log: Path, since: int) -> int:
    """Writes the instance tried, after byte ``since`` of its log, under a lease another
    instance had taken over, refused: a runner's fenced transaction (``lease epoch is``)
    or the lease's renewal (``was taken over``), whichever the woken instance tried first."""
    with log.open("rb") as file:
        file.seek(since)
        text = file.read().decode(errors="replace")
    return text.count("lease epoch is") + text.count("was taken over")


# -- the broker stopped and started again -------------------------------------------------------------


async def broker_restart(
    tasks_before: int = 4, tasks_after: int = 4, down_s: float = 5.0, wait_s: float = 180
) -> Figures:
    """The broker is stopped mid-batch and started again on the same port, empty (the
    embedded broker keeps nothing). What was committed to outboxes meanwhile is published
    when it returns; producers and consumers reconnect by themselves and a second batch,
    submitted after its return, runs through."""
    async with (
        private_stack() as (broker, postgres, home),
        running_mesh(broker.bootstrap, postgres.dsn, home) as mesh,
    ):
        await _prepare(mesh)
        async with mesh.execution_process() as process:
            await _ready_tools(mesh)
            token = await mesh.token()
            first: list[str] = []
            async with TaskWatch(mesh.kafka) as watch:
                for _ in range(tasks_before):
                    await _submit(mesh, first, token, "broker")
                ended_before = await watch.wait_ended(first, wait_s)
                before = {task_id: list(watch.events[task_id]) for task_id in first}
                _say(f"broker: the first batch ended: {ended_before}; stopping the broker")
            await broker.stop()
            # Committed while the broker is away: a new agent version (the supervisor's
            # outbox) that execution must learn of once the broker returns.
            record = await mesh.register_agent(
                AGENT,
                tools=TOOLS,
                memory={"recall": False, "remember": []},
                description="registered while the broker was away",
                wait=False,
            )
            await asyncio.sleep(down_s)
            await broker.start()
            back = time.monotonic()
            _say("broker: started again (empty)")
            agent_learned = await _until(
                lambda: _agent_version(mesh, int(record["version"])), wait_s, 0.2
            )
            learned_after_s = round(time.monotonic() - back, 1)
            _say(
                "broker: execution learned the agent version committed meanwhile: "
                f"{agent_learned} ({learned_after_s} s after the broker's return)"
            )
            second: list[str] = []
            async with TaskWatch(mesh.kafka) as watch:
                for _ in range(tasks_after):
                    await _submit(mesh, second, token, "broker")
                ended_after = await watch.wait_ended(second, wait_s)
                _say(f"broker: the batch after the restart ended: {ended_after}")
                other_partitions = await _topics_with_other_partitions(mesh)
                _say(f"broker: topics back with other partitions than declared: {other_partitions}")
                watch.events.update(before)  # the broker forgot them; the first watch read them
                figures = await _figures(
                    "broker_restart",
                    mesh,
                    watch,
                    first + second,
                    {
                        "down_s": down_s,
                        "batch_before": tasks_before,
                        "batch_before_completed": ended_before,
                        "outbox_republished_after_restart": agent_learned,
                        "republished_after_s": learned_after_s,
                        "execution_alive": process.returncode is None,
                        "topics_with_other_partitions": other_partitions,
                    },
                )
            if not agent_learned:
                figures.lost += 1
        mesh.models.respond("primary", None)
    return figures


async def _topics_with_other_partitions(mesh: FullMesh) -> list[str]:
    """The mesh's declared topics that exist with another partition count than declared."""
    producer = AIOKafkaProducer(bootstrap_servers=mesh.kafka.bootstrap)
    await producer.start()
    try:
        metadata = await producer.client.fetch_all_metadata()
    finally:
        await producer.stop()
    other: list[str] = []
    for spec in REGISTRY:
        partitions = metadata.partitions_for_topic(f"{mesh.kafka.topic_prefix}{spec.name}")
        if partitions is not None and len(partitions) != spec.partitions:
            other.append(f"{spec.name} ({len(partitions)} of {spec.partitions})")
    return other


async def _agent_version(mesh: FullMesh, version: int) -> bool:
    rows = await mesh.execution_rows(
        "SELECT 1 FROM agents WHERE tenant = $1 AND name = $2 AND latest_version >= $3",
        mesh.tenant,
        AGENT,
        version,
    )
    return bool(rows)
