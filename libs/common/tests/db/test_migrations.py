"""The migration runner against the real PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from mainstay_common.db import LIBRARY_MIGRATIONS, Database, Migration, load_migrations
from mainstay_common.errors import DependencyUnavailable, InvalidArgument
from mainstay_common.settings import PostgresSettings

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.real

NOTES = [
    Migration(
        id="notes/0001_notes", sql="CREATE TABLE notes (id bigserial PRIMARY KEY, body text)"
    ),
    Migration(id="notes/0002_title", sql="ALTER TABLE notes ADD COLUMN title text"),
]


async def test_migrations_apply_once_in_the_service_schema(
    postgres_dsn: str, pg_schema: str
) -> None:
    async with Database(PostgresSettings(dsn=postgres_dsn), schema=pg_schema) as db:
        first = await db.migrate(LIBRARY_MIGRATIONS, NOTES)
        second = await db.migrate(LIBRARY_MIGRATIONS, NOTES)
        await db.execute("INSERT INTO notes (body, title) VALUES ('b', 't')")
        tables = await db.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1",
            pg_schema,
        )
    assert first == ["mainstay_common/0001_inbox_outbox", "notes/0001_notes", "notes/0002_title"]
    assert second == []
    assert [t["table_name"] for t in tables] == ["inbox", "notes", "outbox", "schema_migrations"]


async def test_instances_starting_at_once_apply_each_migration_once(
    postgres_dsn: str, pg_schema: str
) -> None:
    settings = PostgresSettings(dsn=postgres_dsn)

    async def instance() -> list[str]:
        async with Database(settings, schema=pg_schema) as db:
            return await db.migrate(LIBRARY_MIGRATIONS, NOTES)

    results = await asyncio.gather(*(instance() for _ in range(5)))
    applied = [ids for ids in results if ids]
    assert len(applied) == 1
    assert applied[0] == [
        "mainstay_common/0001_inbox_outbox",
        "notes/0001_notes",
        "notes/0002_title",
    ]


async def test_a_changed_applied_migration_is_refused(postgres_dsn: str, pg_schema: str) -> None:
    async with Database(PostgresSettings(dsn=postgres_dsn), schema=pg_schema) as db:
        await db.migrate(NOTES)
        edited = [
            NOTES[0],
            Migration(id="notes/0002_title", sql="ALTER TABLE notes ADD COLUMN name text"),
        ]
        with pytest.raises(
            InvalidArgument, match=r"notes/0002_title was changed after it was applied"
        ):
            await db.migrate(edited)


async def test_a_failing_migration_leaves_no_trace(postgres_dsn: str, pg_schema: str) -> None:
    broken = [*NOTES, Migration(id="notes/0003_broken", sql="ALTER TABLE missing ADD COLUMN x int")]
    async with Database(PostgresSettings(dsn=postgres_dsn), schema=pg_schema) as db:
        with pytest.raises(Exception, match="missing"):
            await db.migrate(broken)
        rows = await db.fetch("SELECT id FROM schema_migrations ORDER BY id")
    assert [r["id"] for r in rows] == ["notes/0001_notes", "notes/0002_title"]


def test_migration_files_are_read_in_order_and_named_by_rule(tmp_path: Path) -> None:
    (tmp_path / "0002_second.sql").write_text("SELECT 2")
    (tmp_path / "0001_first.sql").write_text("SELECT 1")
    assert [m.id for m in load_migrations(tmp_path, namespace="svc")] == [
        "svc/0001_first",
        "svc/0002_second",
    ]
    (tmp_path / "third.sql").write_text("SELECT 3")
    with pytest.raises(InvalidArgument, match=r"NNNN_lowercase_name\.sql"):
        load_migrations(tmp_path, namespace="svc")


def test_schema_names_are_checked() -> None:
    with pytest.raises(InvalidArgument, match="schema name"):
        Database(PostgresSettings(), schema='memory"; DROP TABLE x; --')


async def test_an_unreachable_database_is_reported_as_unavailable() -> None:
    settings = PostgresSettings(
        dsn="postgresql://postgres@127.0.0.1:1/postgres", command_timeout_s=2
    )
    with pytest.raises(DependencyUnavailable):
        async with Database(settings, schema="nowhere"):
            pass
