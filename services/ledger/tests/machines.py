"""What the ledger's state machines share: a migrated schema of their own on real
PostgreSQL, an event loop to drive it, and running a machine under pytest."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine

from mainstay_common.db import LIBRARY_MIGRATIONS, Database, load_migrations
from mainstay_common.settings import PostgresSettings
from mainstay_ledger import engine

if TYPE_CHECKING:
    from collections.abc import Awaitable

MIGRATIONS = Path(engine.__file__).parent / "store" / "migrations"
DSN: list[str] = []
"""The server the machines run on; set by the test that runs them (hypothesis builds
each machine itself, so it cannot take a fixture)."""


class DatabaseMachine(RuleBasedStateMachine):
    """A state machine over the ledger's migrated schema, dropped at teardown."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.schema = f"ledger_machine_{uuid.uuid4().hex[:8]}"
        self.db = Database(PostgresSettings(dsn=DSN[0], pool_max_size=2), schema=self.schema)
        self.run(self._migrate())

    def run(self, coro: Awaitable[Any]) -> Any:
        return self.loop.run_until_complete(coro)  # type: ignore[arg-type]

    async def _migrate(self) -> None:
        await self.db.start()
        await self.db.migrate(LIBRARY_MIGRATIONS, load_migrations(MIGRATIONS, namespace="ledger"))

    def teardown(self) -> None:
        async def drop() -> None:
            await self.db.execute(f'DROP SCHEMA "{self.schema}" CASCADE')
            await self.db.close()

        self.run(drop())
        self.loop.close()


def run_machine(machine: type[RuleBasedStateMachine], *, examples: int, steps: int) -> None:
    """Run ``machine`` on the server of ``postgres_dsn`` (the caller's fixture)."""
    case = machine.TestCase
    case.settings = settings(
        max_examples=examples,
        stateful_step_count=steps,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    case().runTest()
