"""The tool registry in PostgreSQL, with an in-memory copy every instance keeps current.

Each change commits with its ``tools.evt.tool.v1`` event (outbox) and a
``NOTIFY``; every instance reloads on the notification and, as a safety net,
every ``refresh_s``. Reads (one per call) come from memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mainstay_common.db import Listener
from mainstay_common.errors import DependencyUnavailable, map_asyncpg_errors
from mainstay_common.lifecycle import Resource, cancel_and_wait, within
from mainstay_contracts.tools import TOOL_EVENTS, ToolEvent, ToolSpec

if TYPE_CHECKING:
    from mainstay_common.bus import Bus
    from mainstay_common.db import Database, Outbox

__all__ = ["RegistryStore"]

_log = logging.getLogger("mainstay.tools.registry")
_CHANNEL = "tools_registry"


class RegistryStore(Resource):
    def __init__(
        self,
        database: Database,
        bus: Bus,
        outbox: Outbox,
        *,
        refresh_s: float = 5.0,
    ) -> None:
        self._database = database
        self._bus = bus
        self._outbox = outbox
        self._refresh_s = refresh_s
        self._tools: dict[str, ToolSpec] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener = Listener(database, _CHANNEL, self._wake.set)

    # -- reading -------------------------------------------------------------------

    def get(self, name: str) -> ToolSpec | None:
        return self._tools.get(name)

    def all(self) -> list[ToolSpec]:
        return [self._tools[name] for name in sorted(self._tools)]

    def names(self) -> list[str]:
        return sorted(self._tools)

    async def reload(self) -> None:
        rows = await self._database.fetch("SELECT spec FROM tools")
        tools: dict[str, ToolSpec] = {}
        for row in rows:
            spec = ToolSpec.model_validate_json(row["spec"])
            tools[spec.name] = spec
        self._tools = tools

    # -- writing -------------------------------------------------------------------

    async def put(self, spec: ToolSpec, *, changed_by: str) -> bool:
        """Register or replace ``spec``; ``False`` when it was already exactly that."""
        document = spec.model_dump_json()
        with map_asyncpg_errors():
            async with self._database.pool.acquire() as conn, conn.transaction():
                current = await conn.fetchval(
                    "SELECT spec FROM tools WHERE name = $1 FOR UPDATE", spec.name
                )
                if current is not None and ToolSpec.model_validate_json(current) == spec:
                    return False
                await conn.execute(
                    "INSERT INTO tools (name, version, spec, updated_by) VALUES ($1, $2, $3::jsonb, $4)"
                    " ON CONFLICT (name) DO UPDATE SET version = EXCLUDED.version,"
                    " spec = EXCLUDED.spec, updated_at = now(), updated_by = EXCLUDED.updated_by",
                    spec.name,
                    spec.version,
                    document,
                    changed_by,
                )
                await self._announce(
                    conn,
                    ToolEvent(
                        type="registered",
                        name=spec.name,
                        tool=spec,
                        changed_by=changed_by,
                        occurred_at=_now(),
                    ),
                )
        self._tools = {**self._tools, spec.name: spec}
        return True

    async def remove(self, name: str, *, changed_by: str) -> bool:
        with map_asyncpg_errors():
            async with self._database.pool.acquire() as conn, conn.transaction():
                status = await conn.execute("DELETE FROM tools WHERE name = $1", name)
                if not status.endswith(" 1"):
                    return False
                await self._announce(
                    conn,
                    ToolEvent(type="removed", name=name, changed_by=changed_by, occurred_at=_now()),
                )
        self._tools = {k: v for k, v in self._tools.items() if k != name}
        return True

    async def announce_credential(self, event: ToolEvent) -> None:
        with map_asyncpg_errors():
            async with self._database.pool.acquire() as conn, conn.transaction():
                await self._outbox.add(
                    conn,
                    self._bus.message(
                        TOOL_EVENTS,
                        event,
                        event_type=f"mainstay.tools.{event.type}",
                        tenant=event.tenant or None,
                    ),
                )

    async def _announce(self, conn: Any, event: ToolEvent) -> None:
        await self._outbox.add(
            conn, self._bus.message(TOOL_EVENTS, event, event_type=f"mainstay.tools.{event.type}")
        )
        await conn.execute("SELECT pg_notify($1, $2)", _CHANNEL, event.name)

    # -- keeping the copy current --------------------------------------------------

    async def start(self) -> None:
        await self.reload()
        await self._listener.start()
        self._task = asyncio.create_task(self._run(), name="tools-registry-refresh")

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await within(self._wake.wait(), timeout=self._refresh_s)
            self._wake.clear()
            try:
                await self.reload()
            except (DependencyUnavailable, OSError):
                _log.warning("could not refresh the tool registry; keeping the last copy")
            except Exception:  # noqa: BLE001 - the refresher must outlive one bad row
                _log.exception("tool registry refresh failed; keeping the last copy")

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        await self._listener.close()


def _now() -> datetime:
    return datetime.now(UTC)
