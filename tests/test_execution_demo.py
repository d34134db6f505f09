"""The execution part of ``./dev demo``, run against the whole mesh on loopback.

The mesh (:func:`mainstay_execution.testing.mesh.running_mesh`) plays the
stack of ``./dev up``: identity, the ledger, memory, the tools gateway, the
supervisor, and one execution instance. Its admin token is what ``./dev up``
writes: a principal of the tenant holding every scope, signed by identity.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from rich.console import Console

from mainstay_execution.demo import EXPECTED_ANSWER, run_execution_demo
from mainstay_execution.testing.mesh import running_mesh

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.real


async def test_the_demo_task_heals_itself_and_completes(
    kafka_bootstrap: str, postgres_dsn: str, tmp_path: Path
) -> None:
    async with running_mesh(kafka_bootstrap, postgres_dsn, tmp_path) as mesh:
        secret = await mesh.identity.register(mesh.tenant, "admin", ["*"], kind="service")
        answer = await mesh.identity.token(f"{mesh.tenant}/admin", secret)
        assert answer.status_code == 200, answer.text
        (tmp_path / "admin.token").write_text(answer.json()["access_token"])
        console = Console(record=True, width=200)
        async with mesh.execution() as execution:
            report = await run_execution_demo(
                kafka_bootstrap,
                tmp_path,
                console,
                urls={
                    "identity": mesh.identity_url,
                    "tools-gateway": mesh.gateway_url,
                    "ledger": mesh.ledger_url,
                    "supervisor": mesh.supervisor_url,
                    "execution": f"http://127.0.0.1:{execution.http_port}",
                },
                tenant=mesh.tenant,
                topic_prefix=mesh.kafka.topic_prefix,
            )

    shown = console.export_text()
    assert report.ok, shown
    assert report.answer == EXPECTED_ANSWER
    assert report.cost_micros is not None
    assert report.cost_micros > 0  # the ledger held the cap and charged every model call
    kinds = [event["type"] for event in report.events]
    assert kinds[0] == "task.accepted"
    assert kinds[-1] == "task.completed"
    retries = [event["details"] for event in report.events if event["type"] == "task.retrying"]
    assert [r.get("attempt") for r in retries if "attempt" in r] == [1]  # the 500, retried
    assert [(r["fallback_from"], r["fallback_to"]) for r in retries if "fallback_from" in r] == [
        ("primary", "backup")  # the 503
    ]
    assert report.model_calls == {"primary": 3, "backup": 2}
    assert "FakeModelServer" in shown
    assert "execution OK" in shown
