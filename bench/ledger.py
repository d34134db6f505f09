"""Benchmark: raw single-row inserts vs usage records posted through the ledger.

One run starts (on the embedded broker and PostgreSQL unless
``MAINSTAY_KAFKA_BOOTSTRAP`` / ``MAINSTAY_POSTGRES_DSN`` are set) a database of
its own and one ledger in its own process (``python -m mainstay_ledger``), and
measures, alternating rounds so machine noise hits each side alike:

* ``raw``: one connection inserting one row at a time into a plain table, each
  insert its own transaction (what a naive "write a usage row" costs);
* ``ledger``: ``RecordUsageCommand`` messages published on
  ``ledger.cmd.record-usage.v1`` for tasks whose holds are open, from the first
  publish until every usage is posted: envelope and payload validation, the
  inbox claim, pricing with the price book, capture from the hold and the
  double-entry posting to the expense account, the hold's new figures, the
  usage row and its ``usage.recorded`` event in the outbox.

Last line: one JSON object with ``raw_rows_per_s``, ``ledger_postings_per_s``
and ``ratio`` (target >= 0.25).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx
from _stack import process, stack  # bench/, the script's own folder, is on sys.path

from mainstay_common.auth import TokenSigner
from mainstay_common.bus import Bus
from mainstay_common.devstack import free_port
from mainstay_common.settings import KafkaSettings
from mainstay_common.testing import temporary_database
from mainstay_contracts.ledger import (
    OPEN_HOLD,
    RECORD_USAGE,
    OpenHoldCommand,
    RecordUsageCommand,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

TENANT = "bench"
TASKS = 60


def log(message: str) -> None:
    print(f"[ledger bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def raw_round(dsn: str, rows: int) -> float:
    """Rows per second of sequential single-row inserts, each committed on its own."""
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS raw_usage (usage_id text PRIMARY KEY, tenant text,"
            " task_id text, cost bigint, occurred_at timestamptz)"
        )
        started = time.perf_counter()
        for n in range(rows):
            await connection.execute(
                "INSERT INTO raw_usage VALUES ($1, $2, $3, $4, $5)",
                uuid.uuid4().hex,
                TENANT,
                f"task-{n % TASKS}",
                700,
                datetime.now(UTC),
            )
        return rows / (time.perf_counter() - started)
    finally:
        await connection.close()


async def posted(ledger_db: asyncpg.Connection) -> int:
    return int(await ledger_db.fetchval("SELECT count(*) FROM ledger.usage"))


async def ledger_round(
    bus: Bus, ledger_db: asyncpg.Connection, tasks: Sequence[str], count: int
) -> float:
    """Usage records per second from the first publish until all are posted."""
    before = await posted(ledger_db)
    now = datetime.now(UTC)
    messages = [
        bus.message(
            RECORD_USAGE,
            RecordUsageCommand(
                usage_id=uuid.uuid4().hex,
                tenant=TENANT,
                agent="bench",
                task_id=tasks[n % len(tasks)],
                step=n,
                kind="tool",
                resource="search",
                calls=1,
                occurred_at=now,
            ),
        )
        for n in range(count)
    ]
    started = time.perf_counter()
    for start in range(0, count, 500):
        await bus.send_many(messages[start : start + 500])
    while True:  # the ledger posts in its own process: poll its table
        if await posted(ledger_db) >= before + count:
            break
        await asyncio.sleep(0.02)
    return count / (time.perf_counter() - started)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    async with (
        stack() as (bootstrap, postgres_dsn),
        temporary_database(postgres_dsn, prefix="ledger_bench") as dsn,
    ):
        return await measure(args, bootstrap, dsn)


async def measure(args: argparse.Namespace, bootstrap: str, dsn: str) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="ledger-bench-"))
    signer = TokenSigner.generate()
    (home / "jwks.json").write_text(json.dumps(signer.jwks()))
    kafka = KafkaSettings(bootstrap=bootstrap, topic_prefix=f"b{uuid.uuid4().hex[:6]}.")
    port = free_port()
    env = {
        **os.environ,
        "MAINSTAY_KAFKA_BOOTSTRAP": bootstrap,
        "MAINSTAY_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "MAINSTAY_POSTGRES_DSN": dsn,
        "MAINSTAY_AUTH_JWKS_FILE": str(home / "jwks.json"),
        "MAINSTAY_TELEMETRY_LOG_LEVEL": "WARNING",
        "LEDGER_HTTP_PORT": str(port),
    }
    log(f"starting the ledger (log: {home / 'ledger.log'})")
    async with (
        process(
            [sys.executable, "-m", "mainstay_ledger"],
            env=env,
            ready_url=f"http://127.0.0.1:{port}/readyz",
            what="ledger",
            log_file=home / "ledger.log",
        ),
        Bus(service="bench", kafka=kafka) as bus,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http,
    ):
        token = signer.mint(subject="bench", tenant=TENANT, scopes=["ledger:admin"])
        price = await http.post(
            "/v1/prices",
            json={"item": "tool:search", "tenant": TENANT, "per_call": 700},
            headers={"Authorization": f"Bearer {token}"},
        )
        price.raise_for_status()
        tasks = [f"task-{n}" for n in range(TASKS)]
        for task in tasks:
            await bus.publish(
                OPEN_HOLD,
                OpenHoldCommand(tenant=TENANT, task_id=task, agent="bench", amount=10**15),
            )
        # One connection counts posted usage for the whole run (the ledger has migrated).
        ledger_db = await asyncpg.connect(dsn)
        try:
            log("warming up")
            await ledger_round(bus, ledger_db, tasks, 300)
            await raw_round(dsn, 300)
            raw: list[float] = []
            ledger: list[float] = []
            for round_number in range(args.rounds):
                raw.append(await raw_round(dsn, args.rows))
                ledger.append(await ledger_round(bus, ledger_db, tasks, args.rows))
                log(f"round {round_number + 1}: raw {raw[-1]:.0f}/s, ledger {ledger[-1]:.0f}/s")
        finally:
            await ledger_db.close()
    raw_rate, ledger_rate = statistics.median(raw), statistics.median(ledger)
    return {
        "benchmark": "ledger",
        "rows_per_round": args.rows,
        "rounds": args.rounds,
        "raw_rows_per_s": round(raw_rate, 1),
        "ledger_postings_per_s": round(ledger_rate, 1),
        "ratio": round(ledger_rate / raw_rate, 3),
        "target_ratio": 0.25,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=3000, help="Usage records per round.")
    parser.add_argument("--rounds", type=int, default=5)
    result = asyncio.run(run(parser.parse_args()))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
