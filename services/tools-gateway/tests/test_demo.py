"""The tools part of ``./dev demo``, run against a real gateway."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from rich.console import Console

from mainstay_common.devstack._demo_tools import run_tools_demo

if TYPE_CHECKING:
    from pathlib import Path

    from .conftest import Gateway

pytestmark = pytest.mark.real


async def test_the_demo_shows_a_call_feedback_a_replay_and_the_audit(
    gateway: Gateway, tmp_path: Path
) -> None:
    tenant = "demo-tenant"
    (tmp_path / "admin.token").write_text(gateway.token(tenant, ["*"], subject="admin"))
    console = Console(record=True, width=200)

    report = await run_tools_demo(gateway.base_url, tmp_path, console)

    assert report.ok
    assert report.results["calculate"]["output"] == 14
    assert report.results["repeat with the same key"]["replayed"] is True
    assert report.audited == ["OK", "INVALID_ARGUMENTS", "UNKNOWN_TOOL", "OK", "OK"]
    shown = console.export_text()
    assert "did you mean calculator?" in shown
    assert "tools OK" in shown
