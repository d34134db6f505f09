"""PostgreSQL for services: pool, one schema per service, migrations, inbox and outbox."""

from pathlib import Path

from mainstay_common.db._database import (
    Connection,
    Database,
    Migration,
    load_migrations,
    redact_dsn,
)
from mainstay_common.db._hooks import after_commit, commit_hooks, run_hooks
from mainstay_common.db._inbox import claim_inbox, claim_inbox_many, purge_inbox
from mainstay_common.db._listener import Listener
from mainstay_common.db._outbox import Outbox, OutboxRelay

__all__ = [
    "LIBRARY_MIGRATIONS",
    "Connection",
    "Database",
    "Listener",
    "Migration",
    "Outbox",
    "OutboxRelay",
    "after_commit",
    "claim_inbox",
    "claim_inbox_many",
    "commit_hooks",
    "load_migrations",
    "purge_inbox",
    "redact_dsn",
    "run_hooks",
]

LIBRARY_MIGRATIONS = load_migrations(
    Path(__file__).parent / "migrations", namespace="mainstay_common"
)
"""The inbox and outbox tables; apply them before a service's own migrations."""
