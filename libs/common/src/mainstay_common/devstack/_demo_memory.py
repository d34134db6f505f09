"""The memory part of ``./dev demo``: a superseded fact, recall, history, ``as_of``.

It talks to the running memory service over gRPC exactly as an agent would,
with the admin token the identity service signed for ``./dev up``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.table import Table

from mainstay.memory.v1 import memory_pb2 as pb
from mainstay.memory.v1 import memory_pb2_grpc
from mainstay_common.grpc import create_channel

if TYPE_CHECKING:
    from pathlib import Path

    from rich.console import Console

__all__ = ["MemoryDemoReport", "run_memory_demo"]

_SERVICE = "mainstay.memory.v1.MemoryService"


@dataclass
class MemoryDemoReport:
    outcomes: list[str] = field(default_factory=list)
    recalled: list[str] = field(default_factory=list)
    history: list[str] = field(default_factory=list)
    before_move: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            self.outcomes == ["OUTCOME_ADDED", "OUTCOME_SUPERSEDED_PREVIOUS", "OUTCOME_DUPLICATE"]
            and self.recalled[:1] == ["I moved to Berlin"]
            and "I live in Paris" not in self.recalled
            and self.history == ["I live in Paris", "I moved to Berlin"]
            and self.before_move[:1] == ["I live in Paris"]
        )


def _ts(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


async def _wait_serving(target: str, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    channel = create_channel(target)
    try:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                answer = await health.Check(
                    health_pb2.HealthCheckRequest(service=_SERVICE), timeout=2
                )
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except Exception:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.5)
    finally:
        await channel.close()


async def run_memory_demo(target: str, home: Path, console: Console) -> MemoryDemoReport:
    report = MemoryDemoReport()
    started = time.monotonic()
    await _wait_serving(target, 60)
    token = (home / "admin.token").read_text().strip()
    metadata = [("authorization", f"Bearer {token}")]
    # a fresh user each run, so repeated demos on one stack tell the same story
    scope = pb.Scope(tenant="default", agent_id="concierge", user_id=f"demo-{uuid.uuid4().hex[:6]}")
    moved = datetime.now(UTC) - timedelta(days=30)
    channel = create_channel(target)
    try:
        memory = memory_pb2_grpc.MemoryServiceStub(channel)
        writes = [
            ("I live in Paris", moved - timedelta(days=365)),
            ("I moved to Berlin", moved),
            ("I moved to Berlin", moved),
        ]
        for content, valid_from in writes:
            answer = await memory.Remember(
                pb.RememberRequest(
                    scope=scope,
                    kind=pb.KIND_FACT,
                    content=content,
                    subject="user.home_city",
                    valid_from=_ts(valid_from),
                ),
                metadata=metadata,
            )
            report.outcomes.append(pb.Outcome.Name(answer.outcome))
        await memory.Remember(
            pb.RememberRequest(
                scope=scope, kind=pb.KIND_PREFERENCE, content="Prefers trains to planes"
            ),
            metadata=metadata,
        )
        now = await memory.Recall(
            pb.RecallRequest(scope=scope, query="where does the user live?", top_k=3),
            metadata=metadata,
        )
        report.recalled = [hit.record.content for hit in now.hits]
        then = await memory.Recall(
            pb.RecallRequest(
                scope=scope,
                query="where does the user live?",
                top_k=3,
                as_of=_ts(moved - timedelta(days=1)),
            ),
            metadata=metadata,
        )
        report.before_move = [hit.record.content for hit in then.hits]
        history = await memory.History(
            pb.HistoryRequest(scope=scope, subject="user.home_city"), metadata=metadata
        )
        report.history = [version.content for version in history.versions]
        top = now.hits[0] if now.hits else None
    finally:
        await channel.close()
    report.seconds = time.monotonic() - started
    table = Table(title="Memory: what the agent remembers about the user")
    table.add_column("step")
    table.add_column("result")
    table.add_row("remember 'I live in Paris' (user.home_city)", report.outcomes[0])
    table.add_row("remember 'I moved to Berlin' (same subject)", report.outcomes[1])
    table.add_row("remember 'I moved to Berlin' again", report.outcomes[2])
    score = (
        f" (semantic {top.parts.semantic:.2f}, keyword {top.parts.keyword:.2f},"
        f" recency {top.parts.recency:.2f}, importance {top.parts.importance:.2f})"
        if top
        else ""
    )
    table.add_row("recall 'where does the user live?'", f"{report.recalled[:2]}{score}")
    table.add_row("recall as of a day before the move", str(report.before_move[:1]))
    table.add_row("history of user.home_city", " -> ".join(report.history))
    console.print(table)
    verdict = "[green]memory OK[/]" if report.ok else "[red]memory FAILED[/]"
    console.print(f"{verdict} in {report.seconds:.1f}s")
    return report
