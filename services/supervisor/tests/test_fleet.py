"""Heartbeats over the real broker and the fleet view: up, stale and dead instances."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from mainstay_contracts.supervisor import HEARTBEAT, HeartbeatCommand

if TYPE_CHECKING:
    from .conftest import Supervisor

pytestmark = pytest.mark.real


async def fleet_entries(supervisor: Supervisor, service: str, count: int) -> list[dict[str, str]]:
    for _ in range(200):
        answer = await supervisor.http.get("/fleet")
        assert answer.status_code == 200, answer.text
        entries = [e for e in answer.json()["instances"] if e["service"] == service]
        if len(entries) >= count:
            return entries
        await asyncio.sleep(0.05)
    raise AssertionError(f"the fleet never showed {count} instances of {service}")


async def test_instances_are_up_stale_or_dead_by_their_last_heartbeat(
    supervisor: Supervisor,
) -> None:
    service = f"svc-{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC)
    # the supervisor's settings: a heartbeat a second, stale after 3 s, dead after 10 s
    for instance, age_s in (("fresh", 0), ("quiet", 5), ("gone", 30)):
        await supervisor.bus.publish(
            HEARTBEAT,
            HeartbeatCommand(
                service=service,
                instance=instance,
                version="1.2.3",
                in_flight=2,
                sent_at=now - timedelta(seconds=age_s),
            ),
        )
    entries = await fleet_entries(supervisor, service, 3)
    assert {e["instance"]: e["status"] for e in entries} == {
        "fresh": "up",
        "quiet": "stale",
        "gone": "dead",
    }
    fresh = next(e for e in entries if e["instance"] == "fresh")
    assert fresh["version"] == "1.2.3"
    assert datetime.fromisoformat(fresh["last_heartbeat"]) == now


async def test_a_late_heartbeat_never_moves_an_instance_back_in_time(
    supervisor: Supervisor,
) -> None:
    service = f"svc-{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC)
    for sent_at in (now, now - timedelta(seconds=60)):
        await supervisor.bus.publish(
            HEARTBEAT, HeartbeatCommand(service=service, instance="a", sent_at=sent_at)
        )
    marker = f"{service}-marker"
    await supervisor.bus.publish(
        HEARTBEAT, HeartbeatCommand(service=marker, instance="a", sent_at=now)
    )
    await fleet_entries(supervisor, marker, 1)  # heartbeats are handled in order
    [entry] = await fleet_entries(supervisor, service, 1)
    assert entry["status"] == "up"


async def test_an_instance_with_work_in_flight_and_no_progress_is_stalled(
    supervisor: Supervisor,
) -> None:
    service = f"svc-{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC)
    # Both alive; one has finished nothing for a minute while holding work.
    for instance, in_flight, progress_age_s in (
        ("moving", 3, 0),
        ("frozen", 1, 60),
        ("idle", 0, 60),
    ):
        await supervisor.bus.publish(
            HEARTBEAT,
            HeartbeatCommand(
                service=service,
                instance=instance,
                in_flight=in_flight,
                last_progress_at=now - timedelta(seconds=progress_age_s),
                sent_at=now,
            ),
        )
    entries = await fleet_entries(supervisor, service, 3)
    assert {e["instance"]: (e["status"], e["stalled"]) for e in entries} == {
        "moving": ("up", False),
        "frozen": ("up", True),
        "idle": ("up", False),
    }
