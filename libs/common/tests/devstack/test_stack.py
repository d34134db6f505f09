"""One embedded stack (broker, PostgreSQL, a fake service) through its whole life.

The tests run in file order on the same stack: each looks at what a developer
would see after ``up``, and the last one brings it ``down``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg
import psutil
import pytest
import pytest_asyncio
from aiokafka.admin import AIOKafkaAdminClient

from mainstay_common.devstack import (
    BROKER,
    POSTGRES,
    ComponentStatus,
    EmbeddedStack,
    ProcessRecord,
    StackError,
)
from mainstay_common.devstack._process import (
    live_process,
    load_record,
    save_record,
    tcp_port_open,
)
from mainstay_contracts import REGISTRY

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from pathlib import Path

pytestmark = pytest.mark.real


@dataclass
class Running:
    stack: EmbeddedStack
    repo: Path
    kafka_port: int
    pg_port: int
    first_up: list[ComponentStatus]
    events: list[str]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def running(
    tmp_path_factory: pytest.TempPathFactory,
    make_fake_repo: Callable[[Path], Path],
    new_home: Callable[[], Path],
    cleanup_home: Callable[[Path], Awaitable[None]],
    free_ports: Callable[[], tuple[int, int]],
) -> AsyncIterator[Running]:
    repo = make_fake_repo(tmp_path_factory.mktemp("stack") / "repo")
    home = new_home()
    kafka_port, pg_port = free_ports()
    events: list[str] = []
    stack = EmbeddedStack(
        home,
        repo,
        kafka_port=kafka_port,
        pg_port=pg_port,
        service_settle_s=0.5,
        stop_grace_s=5.0,
        report=events.append,
    )
    try:
        first_up = await stack.up()
        yield Running(stack, repo, kafka_port, pg_port, first_up, events)
    finally:
        await cleanup_home(home)


def _by_name(rows: list[ComponentStatus]) -> dict[str, ComponentStatus]:
    return {row.name: row for row in rows}


async def _admin(bootstrap: str) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    return admin


async def test_up_starts_a_broker_and_postgres_that_answer(running: Running) -> None:
    rows = _by_name(running.first_up)
    assert rows[BROKER].state == "up"
    assert rows[BROKER].address == f"127.0.0.1:{running.kafka_port}"
    assert rows[POSTGRES].state == "up"
    assert rows[POSTGRES].address == f"postgresql://postgres@127.0.0.1:{running.pg_port}/postgres"

    admin = await _admin(running.stack.kafka_bootstrap)
    try:
        cluster = await admin.describe_cluster()
    finally:
        await admin.close()
    assert cluster["brokers"][0]["port"] == running.kafka_port

    connection = await asyncpg.connect(running.stack.postgres_dsn, timeout=10)
    try:
        vector = await connection.fetchval(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        )
        distance = await connection.fetchval("SELECT '[1,2]'::vector <-> '[1,3]'::vector")
    finally:
        await connection.close()
    assert vector is not None
    assert distance == 1.0


async def test_every_registered_topic_exists(running: Running) -> None:
    admin = await _admin(running.stack.kafka_bootstrap)
    try:
        described = await admin.describe_topics([spec.name for spec in REGISTRY])
    finally:
        await admin.close()
    partitions = {topic["topic"]: len(topic["partitions"]) for topic in described}
    assert partitions == {spec.name: spec.partitions for spec in REGISTRY}


async def test_the_fake_service_runs_with_the_stack_addresses(running: Running) -> None:
    rows = _by_name(await running.stack.status())
    assert rows["fake-svc"].state == "up"
    assert "lib-only" not in rows  # no __main__.py: not a runnable service
    log = running.stack.home.log_file("fake-svc")
    for _ in range(100):
        if "fake service up" in log.read_text():
            break
        await asyncio.sleep(0.05)
    assert (
        f"fake service up {running.stack.kafka_bootstrap} {running.stack.postgres_dsn}"
        in log.read_text()
    )


async def test_started_processes_do_not_depend_on_the_caller(running: Running) -> None:
    for name in (BROKER, "fake-svc"):
        record = load_record(running.stack.home.pid_file(name))
        assert record is not None
        # Their own session: the caller's terminal (and its Ctrl-C) is not theirs.
        assert os.getsid(record.pid) == record.pid


async def test_a_second_up_starts_nothing_new(running: Running) -> None:
    home = running.stack.home
    before = {name: load_record(home.pid_file(name)) for name in home.recorded_names()}

    again = await running.stack.up()

    after = {name: load_record(home.pid_file(name)) for name in home.recorded_names()}
    assert after == before
    assert set(before) == {BROKER, POSTGRES, "fake-svc"}
    assert _by_name(again) == _by_name(running.first_up)
    assert any(event.startswith("broker: already running") for event in running.events)


async def test_a_killed_service_is_gone_and_up_starts_it_again(running: Running) -> None:
    # What `./dev demo` does to the execution service mid-batch.
    home = running.stack.home
    before = load_record(home.pid_file("fake-svc"))
    assert before is not None

    assert await running.stack.kill("fake-svc") == before.pid

    assert live_process(before) is None
    assert _by_name(await running.stack.status())["fake-svc"].state != "up"
    assert await running.stack.kill("fake-svc") is None  # nothing left to kill
    await running.stack.up()
    after = load_record(home.pid_file("fake-svc"))
    assert after is not None
    assert after.pid != before.pid
    assert live_process(after) is not None
    assert _by_name(await running.stack.status())["fake-svc"].state == "up"


async def test_a_lost_postgres_record_is_recovered_not_restarted(running: Running) -> None:
    pid_file = running.stack.home.pid_file(POSTGRES)
    before = load_record(pid_file)
    pid_file.unlink()  # e.g. someone cleaned the pids folder

    await running.stack.up()

    assert load_record(pid_file) == before


async def test_attaching_to_external_servers_starts_nothing(
    running: Running,
    new_home: Callable[[], Path],
    cleanup_home: Callable[[Path], Awaitable[None]],
) -> None:
    home = new_home()
    try:
        attached = EmbeddedStack(
            home,
            running.repo,
            kafka_port=running.kafka_port,  # taken: must not even be tried
            pg_port=running.pg_port,
            external_kafka=running.stack.kafka_bootstrap,
            external_postgres=running.stack.postgres_dsn,
            topic_prefix="ext.",
            start_services=False,
            write_credentials=False,
        )
        rows = _by_name(await attached.up())
        assert rows[BROKER] == ComponentStatus(
            BROKER, "broker", "external", running.stack.kafka_bootstrap
        )
        assert rows[POSTGRES].state == "external"
        assert attached.home.recorded_names() == []
        assert not attached.home.pgdata.exists()
        admin = await _admin(running.stack.kafka_bootstrap)
        try:
            topics = set(await admin.list_topics())
        finally:
            await admin.close()
        assert {f"ext.{spec.name}" for spec in REGISTRY} <= topics
        assert await attached.down() == []
    finally:
        await cleanup_home(home)
    assert _by_name(await running.stack.status())[BROKER].state == "up"


async def test_a_taken_port_is_reported_and_nothing_is_left_running(
    running: Running,
    new_home: Callable[[], Path],
    cleanup_home: Callable[[Path], Awaitable[None]],
) -> None:
    home = new_home()
    try:
        clash = EmbeddedStack(
            home,
            running.repo,
            kafka_port=running.kafka_port,  # the running stack's broker holds it
            external_postgres=running.stack.postgres_dsn,
            create_topics=False,
            start_services=False,
            write_credentials=False,
        )
        with pytest.raises(StackError, match=f"127.0.0.1:{running.kafka_port} is taken"):
            await clash.up()
        assert clash.home.recorded_names() == []
    finally:
        await cleanup_home(home)


async def test_down_stops_exactly_what_up_started(running: Running) -> None:
    home = running.stack.home
    records = {name: load_record(home.pid_file(name)) for name in home.recorded_names()}
    # An unrelated process whose pid sits in a record that does not match it,
    # as when a pid is reused after the recorded process died.
    bystander = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import time; time.sleep(120)"
    )
    try:
        start = psutil.Process(bystander.pid).create_time()
        itself = ProcessRecord("bystander", bystander.pid, start, "")
        forged = ProcessRecord("ghost", bystander.pid, start - 3600.0, "")
        save_record(home.pid_file("ghost"), forged)

        stopped = await running.stack.down()

        assert stopped == ["fake-svc", BROKER, POSTGRES]
        assert live_process(itself) is not None  # still running
        assert home.recorded_names() == []
        for record in records.values():
            assert record is not None
            assert live_process(record) is None
        assert not await tcp_port_open("127.0.0.1", running.kafka_port)
        assert not await tcp_port_open("127.0.0.1", running.pg_port)
        rows = _by_name(await running.stack.status())
        assert {name: row.state for name, row in rows.items()} == {
            BROKER: "down",
            POSTGRES: "down",
            "fake-svc": "down",
        }
        assert await running.stack.down() == []
    finally:
        bystander.terminate()
        await bystander.wait()
