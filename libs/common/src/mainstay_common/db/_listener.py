"""``LISTEN`` on one channel for as long as a resource runs, on a connection of the pool."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

from mainstay_common.lifecycle import Resource

if TYPE_CHECKING:
    from collections.abc import Callable

    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

    from mainstay_common.db._database import Database

__all__ = ["Listener"]

_log = logging.getLogger("mainstay.db")


class Listener(Resource):
    """Calls ``on_notify()`` for every notification on ``channel``.

    Notifications only make a poller react sooner, so a server that refuses
    ``LISTEN`` is logged and the listener stays silent (``active`` is false)
    rather than failing the service.
    """

    def __init__(self, database: Database, channel: str, on_notify: Callable[[], None]) -> None:
        self._database = database
        self.channel = channel
        self._on_notify = on_notify
        self._connection: PoolConnectionProxy[asyncpg.Record] | None = None

    def _callback(self, *_: object) -> None:
        self._on_notify()

    async def start(self) -> None:
        connection = None
        try:
            connection = await self._database.pool.acquire()
            await connection.add_listener(self.channel, self._callback)
        except Exception:  # noqa: BLE001 - see the class docstring
            if connection is not None:
                await self._database.pool.release(connection)
            _log.warning("LISTEN %s unavailable; relying on polling", self.channel, exc_info=True)
            return
        self._connection = connection

    async def close(self) -> None:
        if self._connection is None:
            return
        connection, self._connection = self._connection, None
        with contextlib.suppress(Exception):
            await connection.remove_listener(self.channel, self._callback)
        await self._database.pool.release(connection)
