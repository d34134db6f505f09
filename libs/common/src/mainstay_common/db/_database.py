"""A service's PostgreSQL: one pool, one schema, plain-SQL migrations.

Each service owns exactly one schema (named after the service) and never reads
another's tables. Connections have ``search_path`` set to that schema, so SQL in
a service names its tables without qualification.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from mainstay_common.errors import DependencyUnavailable, InvalidArgument, map_asyncpg_errors
from mainstay_common.lifecycle import Resource

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from pathlib import Path

    from asyncpg.pool import PoolConnectionProxy

    from mainstay_common.settings import PostgresSettings

__all__ = ["Connection", "Database", "Migration", "load_migrations", "redact_dsn"]

Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"
"""A connection as handlers receive it: a plain one or one lent by the pool."""

_log = logging.getLogger(__name__)
_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_MIGRATION_FILE_RE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One forward-only migration; ``id`` orders it and must never change once applied."""

    id: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path, *, namespace: str) -> list[Migration]:
    """Read ``NNNN_name.sql`` files from ``directory`` in version order.

    ``namespace`` prefixes each id (``memory/0001_records``) so a library's own
    migrations and a service's never collide in the version table.
    """
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        if not _MIGRATION_FILE_RE.match(path.name):
            raise InvalidArgument(
                f"migration file {path} must be named NNNN_lowercase_name.sql (for example 0001_create_records.sql)"
            )
        migrations.append(Migration(id=f"{namespace}/{path.stem}", sql=path.read_text()))
    return migrations


def quote_ident(name: str) -> str:
    if not _SCHEMA_RE.match(name):
        raise InvalidArgument(
            f"schema name {name!r} must be lowercase letters, digits and underscores (max 63)"
        )
    return f'"{name}"'


async def _keep_session(_connection: asyncpg.Connection[asyncpg.Record]) -> None:
    """A pool reset that sends nothing (see ``Database(reset_sessions=False)``)."""


class Database(Resource):
    """An asyncpg pool bound to one schema; an async context manager.

    >>> async with Database(settings.postgres, schema="memory") as db:
    ...     await db.migrate(load_migrations(Path("migrations"), namespace="memory"))
    """

    def __init__(
        self, settings: PostgresSettings, *, schema: str, reset_sessions: bool = True
    ) -> None:
        """``reset_sessions=False`` skips asyncpg's ``RESET ALL``/``UNLISTEN *`` round trip
        when a connection goes back to the pool (an open transaction is still rolled
        back). Only for a service that never leaves session state behind: settings
        only with ``SET LOCAL`` / ``set_config(..., true)``, advisory locks only
        transaction-scoped or explicitly released, listeners removed.
        """
        self._settings = settings
        self._reset_sessions = reset_sessions
        self.schema = schema
        self._quoted = quote_ident(schema)
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None

    @property
    def pool(self) -> asyncpg.Pool[asyncpg.Record]:
        if self._pool is None:
            raise RuntimeError("Database is not open; use 'async with Database(...)'")
        return self._pool

    async def start(self) -> None:
        with map_asyncpg_errors():
            conn = await asyncpg.connect(
                self._settings.dsn, timeout=self._settings.command_timeout_s
            )
            try:
                await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self._quoted}")
            finally:
                await conn.close()
            self._pool = await asyncpg.create_pool(
                self._settings.dsn,
                min_size=self._settings.pool_min_size,
                max_size=self._settings.pool_max_size,
                command_timeout=self._settings.command_timeout_s,
                server_settings={"search_path": f"{self.schema},public"},
                reset=None if self._reset_sessions else _keep_session,
            )

    async def close(self) -> None:
        """Close the pool once its connections are back, terminating any still in use
        after ``close_timeout_s`` (asyncpg's close alone waits for them forever)."""
        if self._pool is None:
            return
        pool, self._pool = self._pool, None
        in_use = pool.get_size() - pool.get_idle_size()
        try:
            async with asyncio.timeout(self._settings.close_timeout_s):
                await pool.close()
        except TimeoutError:  # asyncpg's close terminates the pool when it is cancelled
            _log.warning(
                "schema %s: of %d connection(s) in use at close, some were still in use"
                " after %.1f s; terminated",
                self.schema,
                in_use,
                self._settings.close_timeout_s,
            )

    async def ping(self) -> None:
        """Readiness check: raises DependencyUnavailable when PostgreSQL does not answer."""
        try:
            with map_asyncpg_errors():
                async with self.pool.acquire(timeout=2.0) as conn:
                    await conn.fetchval("SELECT 1")
        except (TimeoutError, RuntimeError) as exc:
            raise DependencyUnavailable("PostgreSQL did not answer") from exc

    async def migrate(self, *groups: Iterable[Migration]) -> list[str]:
        """Apply pending migrations in order; returns the ids applied now.

        Safe when several instances start at once: a session advisory lock keyed
        by the schema serialises them, and each migration commits together with
        its row in the version table. An applied migration whose text changed is
        an error, because the database no longer matches the code's history.
        """
        migrations = [m for group in groups for m in group]
        ids = [m.id for m in migrations]
        if len(set(ids)) != len(ids):
            raise InvalidArgument(f"duplicate migration ids in {ids}")
        applied_now: list[str] = []
        with map_asyncpg_errors():
            async with self.pool.acquire() as conn:
                await conn.execute(
                    "SELECT pg_advisory_lock(hashtext($1))", f"migrate:{self.schema}"
                )
                try:
                    await conn.execute(
                        f"CREATE TABLE IF NOT EXISTS {self._quoted}.schema_migrations ("
                        " id text PRIMARY KEY, checksum text NOT NULL,"
                        " applied_at timestamptz NOT NULL DEFAULT now())"
                    )
                    rows = await conn.fetch(
                        f"SELECT id, checksum FROM {self._quoted}.schema_migrations"  # noqa: S608 - schema name validated by quote_ident
                    )
                    done = {row["id"]: row["checksum"] for row in rows}
                    for migration in migrations:
                        if migration.id in done:
                            if done[migration.id] != migration.checksum:
                                raise InvalidArgument(
                                    f"migration {migration.id} was changed after it was applied"
                                    f" to schema {self.schema}; add a new migration instead"
                                )
                            continue
                        async with conn.transaction():
                            await conn.execute(migration.sql)
                            await conn.execute(
                                f"INSERT INTO {self._quoted}.schema_migrations (id, checksum)"  # noqa: S608 - schema name validated
                                " VALUES ($1, $2)",
                                migration.id,
                                migration.checksum,
                            )
                        _log.info("applied migration %s to schema %s", migration.id, self.schema)
                        applied_now.append(migration.id)
                finally:
                    await conn.execute(
                        "SELECT pg_advisory_unlock(hashtext($1))", f"migrate:{self.schema}"
                    )
        return applied_now

    async def fetch(self, query: str, *args: Any) -> Sequence[asyncpg.Record]:
        with map_asyncpg_errors():
            return await self.pool.fetch(query, *args)

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        with map_asyncpg_errors():
            return await self.pool.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        with map_asyncpg_errors():
            return await self.pool.fetchval(query, *args)

    async def execute(self, query: str, *args: Any) -> str:
        with map_asyncpg_errors():
            return await self.pool.execute(query, *args)


def redact_dsn(dsn: str) -> str:
    """``dsn`` with its password, if any, replaced by ``***``."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
