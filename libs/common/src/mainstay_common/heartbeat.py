"""Heartbeats: every service instance tells the supervisor it is alive, and how busy it is.

>>> async with Heartbeats(bus, service="ledger", instance=settings.instance_id, interval_s=5):
...     ...  # one beat at once, then one every interval until the block ends

Each beat is a :class:`~mainstay_contracts.supervisor.HeartbeatCommand` on
``supervisor.cmd.heartbeat.v1``: the service's version, the messages its bus
has in hand (plus whatever else the service counts, such as gRPC calls) and
when its consumers last finished one. A beat that cannot be sent is logged and
the next one goes out on time: a broker outage must never take a service down,
and the supervisor sees the silence anyway.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from importlib import metadata
from typing import TYPE_CHECKING

from mainstay_common.lifecycle import Resource, cancel_and_wait, sweep_forever
from mainstay_contracts.supervisor import HEARTBEAT, HeartbeatCommand

if TYPE_CHECKING:
    from collections.abc import Callable

    from mainstay_common.bus import Bus

__all__ = ["Heartbeats", "service_version"]

_log = logging.getLogger("mainstay.heartbeat")


def service_version(service: str) -> str:
    """The installed version of the distribution ``mainstay-<service>``; "" when unknown."""
    try:
        return metadata.version(f"mainstay-{service}")
    except metadata.PackageNotFoundError:
        return ""


class Heartbeats(Resource):
    """Sends this instance's heartbeat on ``bus`` every ``interval_s`` while open.

    The bus must be started first and closed after: a composition root enters
    this resource right after starting its bus, so it stops before the bus does.
    """

    def __init__(
        self,
        bus: Bus,
        *,
        service: str,
        instance: str,
        interval_s: float,
        version: str | None = None,
        in_flight: Callable[[], int] | None = None,
    ) -> None:
        """``version`` defaults to that of ``mainstay-<service>``; ``in_flight`` counts
        work in hand besides the bus's messages (it is added to them)."""
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0; with heartbeats off, start none")
        self.service = service
        self.instance = instance
        self.interval_s = interval_s
        self.version = service_version(service) if version is None else version
        self._bus = bus
        self._extra_in_flight = in_flight
        self._task: asyncio.Task[None] | None = None

    def heartbeat(self) -> HeartbeatCommand:
        """The heartbeat this instance would send now."""
        extra = self._extra_in_flight() if self._extra_in_flight is not None else 0
        return HeartbeatCommand(
            service=self.service,
            instance=self.instance,
            version=self.version,
            in_flight=self._bus.in_flight + extra,
            last_progress_at=self._bus.last_progress_at,
            sent_at=datetime.now(UTC),
        )

    async def start(self) -> None:
        if self._task is not None:
            return
        await self._bus.ensure_topics([HEARTBEAT])
        self._task = asyncio.create_task(
            sweep_forever(
                self._beat, interval_s=self.interval_s, what=f"the heartbeats of {self.service}"
            ),
            name=f"{self.service}-heartbeats",
        )

    async def close(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _beat(self) -> int:
        try:
            await self._bus.publish(HEARTBEAT, self.heartbeat())
        except Exception as exc:  # noqa: BLE001 - a lost beat must never stop the next one
            _log.warning(
                "could not send the heartbeat of %s/%s (the next in %g s): %s",
                self.service,
                self.instance,
                self.interval_s,
                exc,
            )
        return 0  # never "more to do": the next beat waits for the interval
