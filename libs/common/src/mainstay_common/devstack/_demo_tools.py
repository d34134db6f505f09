"""The tools part of ``./dev demo``: governed tool calls through the running gateway.

It calls the gateway's HTTP API as an agent would, with the admin token the
identity service signed for ``./dev up``: a builtin tool, a call with wrong
arguments (and the feedback a model gets), a mistyped tool name, an idempotent
replay, and the audit trail of it all.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
from rich.table import Table

if TYPE_CHECKING:
    from pathlib import Path

    from rich.console import Console

__all__ = ["ToolsDemoReport", "run_tools_demo"]


@dataclass
class ToolsDemoReport:
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    audited: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        r = self.results
        return (
            r.get("calculate", {}).get("output") == 14
            and r.get("wrong arguments", {}).get("outcome") == "INVALID_ARGUMENTS"
            and r.get("mistyped name", {}).get("outcome") == "UNKNOWN_TOOL"
            and r.get("repeat with the same key", {}).get("replayed") is True
            and len(self.audited) == len(r)
        )


async def _wait_ready(client: httpx.AsyncClient, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            if (await client.get("/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise TimeoutError("the tools gateway did not become ready")
        await asyncio.sleep(0.5)


async def run_tools_demo(base_url: str, home: Path, console: Console) -> ToolsDemoReport:
    report = ToolsDemoReport()
    started = time.monotonic()
    token = (home / "admin.token").read_text().strip()
    since = datetime.now(UTC).isoformat()
    key = f"demo-{uuid.uuid4().hex[:8]}:1"
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("calculate", "calculator", {"arguments": {"expression": "2*(3+4)"}}),
        ("wrong arguments", "calculator", {"arguments": {"expr": "2*(3+4)"}}),
        ("mistyped name", "calculater", {"arguments": {"expression": "1"}}),
        (
            "first call with a key",
            "calculator",
            {"arguments": {"expression": "6*7"}, "idempotency_key": key},
        ),
        (
            "repeat with the same key",
            "calculator",
            {"arguments": {"expression": "6*7"}, "idempotency_key": key},
        ),
    ]
    async with httpx.AsyncClient(
        base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as client:
        await _wait_ready(client, 60)
        for label, tool, body in calls:
            answer = await client.post(f"/v1/tools/{tool}/invoke", json=body)
            answer.raise_for_status()
            report.results[label] = answer.json()
        for _ in range(50):  # audit rows of synchronous calls land just behind the answers
            audit = await client.get("/v1/audit", params={"since": since, "limit": 100})
            audit.raise_for_status()
            ids = {r["call_id"] for r in report.results.values()}
            rows = reversed(audit.json()["calls"])  # oldest first
            report.audited = [row["outcome"] for row in rows if row["call_id"] in ids]
            if len(report.audited) >= len(report.results):
                break
            await asyncio.sleep(0.1)
    report.seconds = time.monotonic() - started
    _print(report, console)
    return report


def _describe(result: dict[str, Any]) -> str:
    outcome = result.get("outcome", "?")
    if outcome == "OK":
        replay = " (replayed: the tool did not run again)" if result.get("replayed") else ""
        return f"OK: {result.get('output')}{replay}"
    if result.get("problems"):
        problems = "; ".join(f"{p['path'] or '/'}: {p['message']}" for p in result["problems"])
        return f"{outcome}: {problems}"
    if result.get("suggestions"):
        return f"{outcome}: did you mean {', '.join(result['suggestions'])}?"
    return f"{outcome}: {result.get('message', '')}"


def _print(report: ToolsDemoReport, console: Console) -> None:
    table = Table(title="Tools: one governed door for every call")
    table.add_column("call")
    table.add_column("result")
    for label, result in report.results.items():
        table.add_row(label, _describe(result))
    table.add_row(
        "audit trail", f"{len(report.audited)} calls recorded: {', '.join(report.audited)}"
    )
    console.print(table)
    verdict = "[green]tools OK[/]" if report.ok else "[red]tools FAILED[/]"
    console.print(f"{verdict} in {report.seconds:.1f}s")
