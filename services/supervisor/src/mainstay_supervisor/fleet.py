"""The fleet view: every service instance's last heartbeat, and whether it is up.

An instance is ``up`` while its last heartbeat is at most ``stale_after``
old, ``stale`` until ``dead_after``, then ``dead``. Heartbeats that arrive out
of order never move an instance back in time. An instance is ``stalled`` while
it reports work in flight but has finished nothing for longer than
``stale_after``: alive, but not making progress.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from mainstay_common.db import Connection, Database
    from mainstay_contracts.supervisor import HeartbeatCommand

__all__ = ["Fleet", "InstanceStatus"]

InstanceStatus = Literal["up", "stale", "dead"]


class Fleet:
    def __init__(
        self, database: Database, *, stale_after: timedelta, dead_after: timedelta
    ) -> None:
        if dead_after <= stale_after:
            raise ValueError("dead_after must be longer than stale_after")
        self._database = database
        self.stale_after = stale_after
        self.dead_after = dead_after

    async def heartbeat(self, tx: Connection, beat: HeartbeatCommand) -> None:
        """Record ``beat`` unless a later one of the same instance is recorded already."""
        await tx.execute(
            "INSERT INTO instances (service, instance, version, in_flight, last_progress_at,"
            " last_heartbeat) VALUES ($1, $2, $3, $4, $5, $6)"
            " ON CONFLICT (service, instance) DO UPDATE SET version = excluded.version,"
            " in_flight = excluded.in_flight, last_progress_at = excluded.last_progress_at,"
            " last_heartbeat = excluded.last_heartbeat"
            " WHERE instances.last_heartbeat < excluded.last_heartbeat",
            beat.service,
            beat.instance,
            beat.version,
            beat.in_flight,
            beat.last_progress_at,
            beat.sent_at,
        )

    def status(self, last_heartbeat: datetime, now: datetime) -> InstanceStatus:
        age = now - last_heartbeat
        if age <= self.stale_after:
            return "up"
        return "stale" if age <= self.dead_after else "dead"

    def stalled(self, in_flight: int, last_progress_at: datetime, now: datetime) -> bool:
        """Alive but stuck: work in flight and nothing finished for longer than ``stale_after``."""
        return in_flight > 0 and now - last_progress_at > self.stale_after

    async def view(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """One entry per instance ever seen, by service and instance."""
        now = now or datetime.now(UTC)
        rows = await self._database.fetch("SELECT * FROM instances ORDER BY service, instance")
        return [
            {
                "service": row["service"],
                "instance": row["instance"],
                "status": self.status(row["last_heartbeat"], now),
                "stalled": self.stalled(
                    row["in_flight"], row["last_progress_at"] or row["first_seen"], now
                ),
                "last_heartbeat": row["last_heartbeat"].isoformat(),
                "version": row["version"],
                "in_flight": row["in_flight"],
                "last_progress_at": row["last_progress_at"].isoformat()
                if row["last_progress_at"]
                else None,
            }
            for row in rows
        ]
