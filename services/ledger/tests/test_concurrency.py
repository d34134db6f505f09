"""Several ledger instances on one database and one set of topics, one of them killed.

Two instances run in this process and a third as its own process; they share
the partitions of every command topic. Twenty tasks ask for holds under one
hard budget that has room for ten, then spend while the third instance is
killed with SIGKILL and the first is restarted. Every usage must be posted
exactly once, no more holds opened than the budget allows, and the books must
balance.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import httpx
import pytest

from mainstay_common.devstack import free_port
from mainstay_contracts.ledger import (
    CLOSE_HOLD,
    OPEN_HOLD,
    RECORD_USAGE,
    CloseHoldCommand,
    OpenHoldCommand,
    RecordUsageCommand,
)

from .conftest import new_tenant, running_ledgers

if TYPE_CHECKING:
    from pathlib import Path

    from .conftest import Ledgers

pytestmark = pytest.mark.real

TASKS = 20
HOLD = 5_000
HARD_LIMIT = 50_000
USAGES_PER_TASK = 8
PER_CALL = 100


async def start_process(ledgers: Ledgers, log: Path) -> subprocess.Popen[bytes]:
    """A ledger instance in a process of its own, ready to serve."""
    port = free_port()
    env = {
        **os.environ,
        "MAINSTAY_KAFKA_BOOTSTRAP": ledgers.kafka.bootstrap,
        "MAINSTAY_KAFKA_TOPIC_PREFIX": ledgers.kafka.topic_prefix,
        "MAINSTAY_KAFKA_SESSION_TIMEOUT_MS": "2000",
        "MAINSTAY_KAFKA_HEARTBEAT_INTERVAL_MS": "300",
        "MAINSTAY_POSTGRES_DSN": ledgers.dsn,
        "MAINSTAY_AUTH_JWKS_FILE": str(ledgers.jwks),
        "MAINSTAY_RETRY_BLOCKING_BACKOFF_S": "0.05",
        "LEDGER_HTTP_PORT": str(port),
        "LEDGER_CLOSE_GRACE_S": "0",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: ASYNC220 - started once, never waited on here
            [sys.executable, "-m", "mainstay_ledger"], env=env, stdout=out, stderr=out
        )
    async with httpx.AsyncClient(timeout=2) as http:
        for _ in range(300):
            assert process.poll() is None, log.read_text()  # noqa: ASYNC240 - a failure's log
            try:
                if (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                    return process
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    process.kill()
    raise AssertionError(f"the ledger process never got ready:\n{log.read_text()}")  # noqa: ASYNC240


async def test_instances_share_the_work_and_a_killed_one_loses_nothing(
    kafka_bootstrap: str, postgres_dsn: str, tmp_path: Path
) -> None:
    tenant = new_tenant()
    async with running_ledgers(kafka_bootstrap, postgres_dsn, tmp_path, instances=2) as ledgers:
        assert ledgers.http is not None
        for path, body in (
            ("/v1/prices", {"item": "tool:search", "tenant": tenant, "per_call": PER_CALL}),
        ):
            answer = await ledgers.http.post(path, json=body, headers=ledgers.headers(tenant))
            assert answer.status_code == 201, answer.text
        budget = await ledgers.http.put(
            f"/v1/tenants/{tenant}/budgets/all",
            json={"scope": "tenant", "period": "day", "hard_limit": HARD_LIMIT},
            headers=ledgers.headers(tenant),
        )
        assert budget.status_code == 200, budget.text
        process = await start_process(ledgers, tmp_path / "ledger-3.log")
        try:
            tasks = [f"task-{n}" for n in range(TASKS)]
            for task in tasks:
                await ledgers.send(
                    OPEN_HOLD,
                    OpenHoldCommand(tenant=tenant, task_id=task, agent="writer", amount=HOLD),
                )
            answers = await ledgers.events(
                TASKS,
                lambda e: e["tenant"] == tenant and e["type"] in ("hold.opened", "hold.denied"),
                wait_s=60,
            )
            opened = [e["task_id"] for e in answers if e["type"] == "hold.opened"]
            assert len(answers) == TASKS
            assert len(opened) == HARD_LIMIT // HOLD  # never more than the budget allows

            rng = random.Random(7)
            commands = [
                RecordUsageCommand(
                    usage_id=uuid.uuid4().hex,
                    tenant=tenant,
                    agent="writer",
                    task_id=task,
                    step=step,
                    kind="tool",
                    resource="search",
                    calls=rng.randint(1, 9),
                    occurred_at=datetime.now(UTC),
                )
                for step in range(USAGES_PER_TASK)
                for task in opened
            ]
            half = len(commands) // 2
            for command in commands[:half]:
                await ledgers.send(RECORD_USAGE, command)
            process.send_signal(signal.SIGKILL)  # mid-stream, whatever it was doing
            process.wait(timeout=10)
            for command in commands[half:]:
                await ledgers.send(RECORD_USAGE, command)
            # a restart of an in-process instance, and every usage sent a second time
            await ledgers.stop(ledgers.apps[0])
            await ledgers.start()
            for command in commands:
                await ledgers.send(RECORD_USAGE, command)
            assert await ledgers.wait_usage(tenant, len(commands), wait_s=90) == len(commands)
            for task in opened:
                await ledgers.send(CLOSE_HOLD, CloseHoldCommand(tenant=tenant, task_id=task))
            closed = await ledgers.events(
                len(opened),
                lambda e: e["tenant"] == tenant and e["type"] == "hold.closed",
                wait_s=60,
            )
            assert len(closed) == len(opened)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        # every usage once, each priced, covered up to its hold and the rest overrun
        spent: dict[str, int] = {}
        for command in commands:
            spent[command.task_id] = spent.get(command.task_id, 0) + command.calls * PER_CALL
        for task, total in spent.items():
            hold = await ledgers.hold(tenant, task)
            assert hold is not None
            assert (hold["spent"], hold["overrun"]) == (min(total, HOLD), max(total - HOLD, 0))
        rows = await ledgers.fetch(
            "SELECT count(*) AS n, sum(cost) AS cost FROM usage WHERE tenant = $1", tenant
        )
        assert (rows[0]["n"], rows[0]["cost"]) == (len(commands), sum(spent.values()))
        await ledgers.check_invariants()
