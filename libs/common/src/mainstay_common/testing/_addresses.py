"""The addresses a test session talks to."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["StackAddresses"]


@dataclass(frozen=True)
class StackAddresses:
    """Where the session's broker and PostgreSQL answer (embedded or external)."""

    kafka_bootstrap: str
    postgres_dsn: str
