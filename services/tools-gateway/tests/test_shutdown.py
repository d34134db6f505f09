"""Stopping a gateway right after answering loses no audit row written behind an answer."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import TYPE_CHECKING

import asyncpg
import httpx
import pytest

from mainstay_common.auth import TokenSigner
from mainstay_common.settings import KafkaSettings
from mainstay_tools_gateway.app import ToolsGatewayApp
from mainstay_tools_gateway.store.vault import Vault

from .conftest import gateway_settings

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.real


async def test_rows_behind_answers_are_written_before_the_gateway_stops(
    kafka_bootstrap: str, postgres_dsn: str, tmp_path: Path
) -> None:
    signer = TokenSigner.generate()
    (tmp_path / "jwks.json").write_text(json.dumps(signer.jwks()))
    settings = gateway_settings(
        kafka=KafkaSettings(bootstrap=kafka_bootstrap, topic_prefix=f"s{uuid.uuid4().hex[:8]}."),
        postgres_dsn=postgres_dsn,
        jwks=tmp_path / "jwks.json",
        vault_key=Vault.generate_key(),
        # The default grace: stopping waits only as long as the rows take, and a
        # loaded machine may need more than the other tests' short grace once the
        # table is free again.
        shutdown_grace_s=20.0,
    )
    tenant = f"tenant-{uuid.uuid4().hex[:8]}"
    token = signer.mint(subject="agent", tenant=tenant, scopes=["tools:call:calculator"])
    calls = 40
    blocker = await asyncpg.connect(postgres_dsn)
    app = ToolsGatewayApp(settings)
    await app.start()
    try:
        # Hold the audit table so every write stays behind its answer for a while.
        await blocker.execute("BEGIN; LOCK TABLE tools.audit IN SHARE ROW EXCLUSIVE MODE")
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{app.http_port}",
            headers={"Authorization": f"Bearer {token}"},
        ) as http:
            answers = await asyncio.gather(
                *(
                    http.post(
                        "/v1/tools/calculator/invoke",
                        json={"arguments": {"expression": f"{n}+1"}},
                    )
                    for n in range(calls)
                )
            )
        stopping = asyncio.create_task(app.close())
        await asyncio.sleep(1.0)
        assert not stopping.done()  # waiting for the rows behind the answers
        await blocker.execute("COMMIT")
        await stopping
    finally:
        await blocker.close()
        await app.close()
    outcomes = [a.json().get("outcome") for a in answers]
    assert outcomes == ["OK"] * calls, [a.text for a in answers if "outcome" not in a.json()][:1]
    connection = await asyncpg.connect(postgres_dsn)
    try:
        rows = await connection.fetch(
            "SELECT call_id::text FROM tools.audit WHERE tenant = $1", tenant
        )
    finally:
        await connection.close()
    assert sorted(r["call_id"] for r in rows) == sorted(a.json()["call_id"] for a in answers)
