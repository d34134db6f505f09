"""The identity part of ``./dev demo``: an agent asks a human for approval, and is answered.

With the admin token of ``./dev up`` it registers an agent and a human in a
fresh tenant; each gets its own token from ``POST /oauth/token``. The agent
sends two approval requests; the human approves the first through the API (as
the inbox would), and the second is left to expire at its deadline. Both
outcomes are read back as ``approval.decided`` events from Kafka, as the
requesting task would consume them.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
from rich.table import Table

from mainstay_common.testing import read_records

if TYPE_CHECKING:
    from pathlib import Path

    from rich.console import Console

__all__ = ["IdentityDemoReport", "run_identity_demo"]

_APPROVAL_TOPIC = "identity.evt.approval.v1"


@dataclass
class IdentityDemoReport:
    steps: list[tuple[str, str]] = field(default_factory=list)
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        answered = self.outcomes.get("answered", {})
        expired = self.outcomes.get("expired", {})
        return (answered.get("status"), answered.get("decision")) == ("decided", "approve") and (
            expired.get("status"),
            expired.get("decision"),
        ) == ("expired", "deny")


async def _client_token(
    client: httpx.AsyncClient, admin: dict[str, str], tenant: str, name: str, kind: str
) -> dict[str, str]:
    """Register ``name`` and return the header of a token it got with its own secret."""
    put = await client.put(
        f"/v1/tenants/{tenant}/principals/{name}", json={"kind": kind}, headers=admin
    )
    put.raise_for_status()
    secret = await client.post(f"/v1/tenants/{tenant}/principals/{name}/secret", headers=admin)
    secret.raise_for_status()
    answer = await client.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": f"{tenant}/{name}",
            "client_secret": secret.json()["client_secret"],
        },
    )
    answer.raise_for_status()
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


async def _ask(
    client: httpx.AsyncClient, agent: dict[str, str], question: str, seconds: float
) -> str:
    deadline = (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()
    sent = await client.post(
        "/v1/mail",
        json={
            "kind": "approval-request",
            "to": ["hana"],
            "approval": {"question": question, "deadline": deadline, "task_id": "demo-task"},
        },
        headers=agent,
    )
    sent.raise_for_status()
    return str(sent.json()["message_id"])


async def run_identity_demo(
    base_url: str, bootstrap: str, home: Path, console: Console
) -> IdentityDemoReport:
    report = IdentityDemoReport()
    started = time.monotonic()
    admin = {"Authorization": f"Bearer {(home / 'admin.token').read_text().strip()}"}
    tenant = f"demo-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        agent = await _client_token(client, admin, tenant, "planner", "agent")
        human = await _client_token(client, admin, tenant, "hana", "user")
        report.steps.append(("identities", f"agent 'planner' and human 'hana' in {tenant}"))
        answered = await _ask(client, agent, "Book the $840 flight?", 300)
        expiring = await _ask(client, agent, "Upgrade to business class?", 2)
        pending = (await client.get("/v1/approvals?status=pending", headers=human)).json()
        report.steps.append(("hana's pending approvals", str(len(pending["approvals"]))))
        decision = await client.post(
            f"/v1/approvals/{answered}/decision",
            json={"decision": "approve", "reason": "within the travel policy"},
            headers=human,
        )
        decision.raise_for_status()
        report.steps.append(("hana answers", "approve: within the travel policy"))
    prefix = os.environ.get("MAINSTAY_KAFKA_TOPIC_PREFIX", "")
    wanted = {answered: "answered", expiring: "expired"}
    records = await read_records(
        bootstrap,
        f"{prefix}{_APPROVAL_TOPIC}",
        count=2,
        accept=lambda r: (
            json.loads(r.value)["approval_id"] in wanted
            and json.loads(r.value)["type"] == "approval.decided"
        ),
        wait_s=30.0,
    )
    for record in records:
        event = json.loads(record.value)
        report.outcomes[wanted[event["approval_id"]]] = event
    report.seconds = time.monotonic() - started
    _print(report, console)
    return report


def _print(report: IdentityDemoReport, console: Console) -> None:
    table = Table(title="Identity: an agent asks, a human answers (or the deadline does)")
    table.add_column("step")
    table.add_column("result")
    for step, result in report.steps:
        table.add_row(step, result)
    for label, event in report.outcomes.items():
        who = event.get("decided_by") or "the deadline"
        table.add_row(
            f"approval.decided ({label})",
            f"{event['question']} -> {event['decision']} by {who} ({event['status']})",
        )
    console.print(table)
    verdict = "[green]identity OK[/]" if report.ok else "[red]identity FAILED[/]"
    console.print(f"{verdict} in {report.seconds:.1f}s")
