"""Benchmark: consume -> produce round trips, raw aiokafka vs the Mainstay bus.

Both sides do the same work per message with the same guarantee (the offset is
committed only after the output is acknowledged by the broker):

* raw: an aiokafka consumer polls a batch, produces one record per record read
  and waits for each acknowledgement, then commits the batch's offsets;
* mainstay: a transactional bus subscriber validates each envelope and payload,
  claims its inbox row in PostgreSQL (one transaction per polled batch),
  publishes a validated, enveloped message per message and waits for each
  acknowledgement, then commits the batch's offsets.

``ratio`` compares exactly that flow. ``mainstay_with_state_write_msgs_per_s``
is the same subscriber also inserting one row per message in the same
transaction (work the raw side does not do), reported for reference.

The input topic is filled before the clock starts; the figure is messages
processed per second, the median of alternating rounds of each side. Uses MAINSTAY_KAFKA_BOOTSTRAP / MAINSTAY_POSTGRES_DSN when
set, otherwise starts the embedded broker and PostgreSQL on free ports.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime

from _stack import stack  # bench/, the script's own folder, is on sys.path
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pydantic import BaseModel

from mainstay_common.bus import Bus, Event
from mainstay_common.db import LIBRARY_MIGRATIONS, Connection, Database, Migration
from mainstay_common.lifecycle import within
from mainstay_common.settings import KafkaSettings, PostgresSettings
from mainstay_contracts import TopicSpec


class Work(BaseModel):
    item_id: str
    step: int
    payload: str


class Done(BaseModel):
    item_id: str
    step: int


WORK = TopicSpec(
    name="bench.cmd.work.v1",
    owner="bench",
    kind="cmd",
    key_field="item_id",
    payload=Work,
    partitions=3,
)
DONE = TopicSpec(
    name="bench.evt.done.v1",
    owner="bench",
    kind="evt",
    key_field="item_id",
    payload=Done,
    partitions=3,
)
PROCESSED = Migration(
    id="bench/0001_processed", sql="CREATE TABLE processed (item_id text PRIMARY KEY, step int)"
)


async def create_topics(bootstrap: str, *names: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 3, 1) for name in names])
    finally:
        await admin.close()


async def fill(
    bootstrap: str, topic: str, messages: list[tuple[bytes, bytes, dict[str, str]]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic, value, key=key, headers=[(k, v.encode()) for k, v in headers.items()]
            )
            for key, value, headers in messages
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def work_messages(bus: Bus, count: int) -> list[tuple[bytes, bytes, dict[str, str]]]:
    out = []
    for n in range(count):
        message = bus.message(WORK, Work(item_id=f"item-{n}", step=n, payload="x" * 200))
        out.append((message.key or b"", message.value, message.headers))
    return out


async def run_raw(
    bootstrap: str, prefix: str, messages: list[tuple[bytes, bytes, dict[str, str]]]
) -> float:
    source, sink = f"{prefix}raw.in", f"{prefix}raw.out"
    await create_topics(bootstrap, source, sink)
    await fill(bootstrap, source, messages)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=f"{prefix}raw",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=2000,
        heartbeat_interval_ms=300,
    )
    await producer.start()
    await consumer.start()
    try:
        started = time.perf_counter()
        handled = 0
        while handled < len(messages):
            batch = await consumer.getmany(timeout_ms=25, max_records=200)
            for records in batch.values():
                for record in records:
                    await producer.send_and_wait(
                        sink, record.value, key=record.key, headers=list(record.headers)
                    )
                    handled += 1
            if batch:
                await consumer.commit()
        return len(messages) / (time.perf_counter() - started)
    finally:
        await consumer.stop()
        await producer.stop()


async def run_mainstay(
    bootstrap: str,
    dsn: str,
    prefix: str,
    messages: list[tuple[bytes, bytes, dict[str, str]]],
    *,
    write_state: bool,
) -> float:
    kafka = KafkaSettings(
        bootstrap=bootstrap, topic_prefix=prefix, session_timeout_ms=2000, heartbeat_interval_ms=300
    )
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    async with Database(PostgresSettings(dsn=dsn), schema=schema) as db:
        await db.migrate(LIBRARY_MIGRATIONS, [PROCESSED])
        bus = Bus(service="bench", kafka=kafka)
        done = asyncio.Event()
        first_handled = asyncio.Event()
        handled = 0

        @bus.transactional_subscriber(WORK, handler="relay", database=db)
        async def relay(event: Event[Work], tx: Connection) -> None:
            nonlocal handled
            if write_state:
                await tx.execute(
                    "INSERT INTO processed (item_id, step) VALUES ($1, $2)",
                    event.payload.item_id,
                    event.payload.step,
                )
            await bus.publish(
                DONE, Done(item_id=event.payload.item_id, step=event.payload.step), caused_by=event
            )
            handled += 1
            first_handled.set()
            if handled == len(messages):
                done.set()

        await bus.ensure_topics([DONE])
        # fill before the group joins, as for the raw run
        await create_topics(bootstrap, f"{prefix}{WORK.name}")
        await fill(bootstrap, f"{prefix}{WORK.name}", messages)
        started = 0.0

        async with bus:
            # the clock starts when the first message is handled, as raw's starts after its join
            await first_handled.wait()
            started = time.perf_counter()
            first = handled
            await within(done.wait(), timeout=600)
            elapsed = time.perf_counter() - started
        await db.execute(f'DROP SCHEMA "{schema}" CASCADE')
        return (len(messages) - first) / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000, help="messages per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of each side")
    args = parser.parse_args()
    raw_runs: list[float] = []
    mainstay_runs: list[float] = []
    stateful_runs: list[float] = []
    async with stack() as (bootstrap, dsn):
        template = Bus(service="bench", kafka=KafkaSettings(bootstrap=bootstrap))
        messages = work_messages(template, args.messages)
        # alternate, so a slow patch of the machine hits both sides alike
        for round_no in range(1, args.rounds + 1):
            prefix = f"b{uuid.uuid4().hex[:8]}."
            raw_runs.append(await run_raw(bootstrap, prefix, messages))
            mainstay_runs.append(
                await run_mainstay(bootstrap, dsn, prefix, messages, write_state=False)
            )
            stateful_runs.append(
                await run_mainstay(bootstrap, dsn, f"s{prefix}", messages, write_state=True)
            )
            print(
                f"round {round_no}: raw {raw_runs[-1]:7.0f} msgs/s, mainstay {mainstay_runs[-1]:7.0f}"
                f" msgs/s, mainstay + state write {stateful_runs[-1]:7.0f} msgs/s",
                file=sys.stderr,
            )
    raw = statistics.median(raw_runs)
    mainstay = statistics.median(mainstay_runs)
    result = {
        "benchmark": "bus",
        "messages_per_round": args.messages,
        "rounds": args.rounds,
        "raw_msgs_per_s": round(raw, 1),
        "mainstay_msgs_per_s": round(mainstay, 1),
        "ratio": round(mainstay / raw, 3),
        "target_ratio": 0.4,
        "mainstay_with_state_write_msgs_per_s": round(statistics.median(stateful_runs), 1),
        "raw_runs": [round(r, 1) for r in raw_runs],
        "mainstay_runs": [round(r, 1) for r in mainstay_runs],
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
