"""``./dev demo``: a real round trip through the bus on the running stack.

It publishes probe commands and consumes them with a transactional subscriber
(inbox + PostgreSQL), then shows what happened to each: handled at once,
retried through the tiers and then handled, dead-lettered as a permanent
failure, dead-lettered as invalid, and a redelivered duplicate skipped by the
inbox. Nothing is simulated: the broker, PostgreSQL and the bus are the real ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaProducer
from rich.table import Table

from mainstay_common.bus import Bus, Event, dlq_topic, group_id
from mainstay_common.db import LIBRARY_MIGRATIONS, Database, Migration, after_commit
from mainstay_common.errors import DependencyUnavailable, RuleViolation
from mainstay_common.lifecycle import within
from mainstay_common.settings import KafkaSettings, PostgresSettings, RetrySettings
from mainstay_common.testing import read_records
from mainstay_contracts import Header
from mainstay_contracts.supervisor import PROBE, ProbeCommand

if TYPE_CHECKING:
    from rich.console import Console

    from mainstay_common.db import Connection

__all__ = ["DemoReport", "run_demo"]

_SCHEMA = "mainstay_demo"
_PROBES_TABLE = Migration(
    id="mainstay_demo/0001_probes",
    sql="CREATE TABLE probes (probe_id text PRIMARY KEY, handled_at timestamptz NOT NULL,"
    " attempts integer NOT NULL)",
)


@dataclass
class DemoReport:
    attempts: dict[str, list[int]] = field(default_factory=dict)
    handled: list[str] = field(default_factory=list)
    dead_letters: list[dict[str, str]] = field(default_factory=list)
    duplicate_skipped: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return len(self.handled) == 2 and len(self.dead_letters) == 2 and self.duplicate_skipped


async def _read_dead_letters(
    bootstrap: str, topic: str, count: int, wait_s: float
) -> list[dict[str, str]]:
    records = await read_records(bootstrap, topic, count=count, wait_s=wait_s)
    return [
        {name: value.decode("utf-8", "replace") for name, value in record.headers}
        for record in records
    ]


async def _publish_garbage(bootstrap: str, topic: str) -> None:
    """A producer outside Mainstay writes a payload that breaks the probe schema."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        headers = {
            Header.SPECVERSION: "1.0",
            Header.ID: str(uuid.uuid4()),
            Header.TYPE: "mainstay.supervisor.cmd.probe.v1",
            Header.SOURCE: "demo/foreign-producer",
            Header.CONTENT_TYPE: "application/json",
        }
        await producer.send_and_wait(
            topic,
            b'{"probe_id": "", "sent_at": "yesterday"}',
            key=b"garbage",
            headers=[(k, v.encode()) for k, v in headers.items()],
        )
    finally:
        await producer.stop()


async def run_demo(bootstrap: str, dsn: str, console: Console) -> DemoReport:
    report = DemoReport()
    run = uuid.uuid4().hex[:6]
    # a fresh prefix keeps every run's topics and groups apart on a long-lived stack
    kafka = KafkaSettings(bootstrap=bootstrap, topic_prefix=f"demo-{run}.", session_timeout_ms=6000)
    retry = RetrySettings(tier_delays_s=[0.5, 1.0, 2.0])
    started = time.monotonic()
    async with Database(PostgresSettings(dsn=dsn), schema=_SCHEMA) as db:
        await db.migrate(LIBRARY_MIGRATIONS, [_PROBES_TABLE])
        bus = Bus(service="demo", kafka=kafka, retry=retry)
        both_handled = asyncio.Event()

        @bus.transactional_subscriber(PROBE, handler="probe", database=db)
        async def probe(event: Event[ProbeCommand], tx: Connection) -> None:
            command = event.payload
            attempt = event.attempt
            if command.reject:
                raise RuleViolation(f"probe {command.probe_id} asked to be rejected")
            if event.attempt <= command.fail_attempts:
                raise DependencyUnavailable(f"simulated outage on attempt {event.attempt}")
            await tx.execute(
                "INSERT INTO probes (probe_id, handled_at, attempts) VALUES ($1, now(), $2)",
                f"{run}:{command.probe_id}",
                event.attempt,
            )

            def handled() -> None:  # once committed: a rolled-back try leaves no trace
                report.attempts.setdefault(command.probe_id, []).append(attempt)
                report.handled.append(command.probe_id)
                if len(report.handled) >= 2:
                    both_handled.set()

            after_commit(handled)

        async with bus:
            now = datetime.now(UTC)
            console.print("[bold]publishing[/] 3 probes and 1 malformed message")
            ok_id = await bus.publish(PROBE, ProbeCommand(probe_id="steady", sent_at=now))
            await bus.publish(PROBE, ProbeCommand(probe_id="flaky", sent_at=now, fail_attempts=2))
            await bus.publish(PROBE, ProbeCommand(probe_id="doomed", sent_at=now, reject=True))
            await _publish_garbage(bootstrap, f"{kafka.topic_prefix}{PROBE.name}")
            # the same message again, as a producer retry would send it
            await bus.publish(PROBE, ProbeCommand(probe_id="steady", sent_at=now), event_id=ok_id)
            group = group_id("demo", "probe", prefix=kafka.topic_prefix)
            report.dead_letters = await _read_dead_letters(bootstrap, dlq_topic(group), 2, 30)
            with contextlib.suppress(TimeoutError):
                await within(both_handled.wait(), timeout=30)
            await asyncio.sleep(0.5)  # room for the duplicate to (not) run the handler
        rows = await db.fetch(
            "SELECT count(*) AS n FROM probes WHERE probe_id = $1", f"{run}:steady"
        )
        report.duplicate_skipped = rows[0]["n"] == 1 and report.attempts.get("steady") == [1]
    report.seconds = time.monotonic() - started
    _print(report, console)
    return report


def _print(report: DemoReport, console: Console) -> None:
    table = Table(title="What happened to each message")
    for column in ("message", "attempts", "outcome"):
        table.add_column(column)
    table.add_row("probe 'steady'", "1", "handled once")
    table.add_row(
        "probe 'steady' (same ce_id again)",
        "0",
        "skipped by the inbox" if report.duplicate_skipped else "[red]handled twice[/]",
    )
    flaky = report.attempts.get("flaky", [])
    table.add_row(
        "probe 'flaky' (fails twice)",
        str(flaky[-1]) if flaky else "-",
        "retried via retry.1, retry.2, then handled"
        if "flaky" in report.handled
        else "[red]not handled[/]",
    )
    for letter in report.dead_letters:
        table.add_row(
            f"dead letter ({letter.get(Header.ERROR_CLASS)})",
            letter.get(Header.ATTEMPTS, "?"),
            f"{letter.get(Header.ERROR_TYPE)}: {letter.get(Header.ERROR_MESSAGE, '')[:70]}",
        )
    console.print(table)
    verdict = "[green]bus round trip OK[/]" if report.ok else "[red]bus round trip FAILED[/]"
    console.print(f"{verdict} in {report.seconds:.1f}s")
