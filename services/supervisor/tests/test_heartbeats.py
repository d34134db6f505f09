"""A running service sends its own heartbeats: the supervisor sees itself in the fleet."""

from __future__ import annotations

import asyncio
from datetime import datetime
from importlib import metadata
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .conftest import Supervisor

pytestmark = pytest.mark.real


async def own_entry(supervisor: Supervisor) -> dict[str, Any]:
    instance = supervisor.app.settings.instance_id
    for _ in range(400):
        answer = await supervisor.http.get("/fleet")
        assert answer.status_code == 200, answer.text
        for entry in answer.json()["instances"]:
            if (entry["service"], entry["instance"]) == ("supervisor", instance):
                return dict(entry)
        await asyncio.sleep(0.05)
    raise AssertionError(f"the fleet never showed the supervisor instance {instance}")


async def test_the_supervisor_lists_its_own_instance_as_up(supervisor: Supervisor) -> None:
    entry = await own_entry(supervisor)
    assert entry["status"] == "up"
    assert entry["version"] == metadata.version("mainstay-supervisor")
    assert datetime.fromisoformat(entry["last_heartbeat"]).utcoffset() is not None
    assert entry["in_flight"] >= 0
