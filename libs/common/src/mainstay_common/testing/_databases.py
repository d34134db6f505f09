"""Databases of their own for tests and benchmarks, on the server they already use."""

from __future__ import annotations

import contextlib
import uuid
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import asyncpg

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["temporary_database", "with_database"]


def with_database(dsn: str, name: str) -> str:
    """``dsn`` pointing at database ``name`` of the same server."""
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


@contextlib.asynccontextmanager
async def temporary_database(dsn: str, *, prefix: str = "test") -> AsyncIterator[str]:
    """A new database ``<prefix>_<8 hex digits>`` on ``dsn``'s server, dropped (even with
    connections still open) when the block ends; yields its DSN."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield with_database(dsn, name)
        finally:
            if admin.is_closed():  # the server was restarted meanwhile (a fault test)
                admin = await asyncpg.connect(dsn)
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
