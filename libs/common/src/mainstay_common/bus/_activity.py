"""How busy a bus's consumers are: what a heartbeat reports.

Kept cheap because it is touched for every consumed message: a counter and a
timestamp (a float; the datetime is built only when someone reads it).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

__all__ = ["Activity"]


class Activity:
    """Messages the consumers of one bus have in hand, and when one last finished."""

    __slots__ = ("_last_progress", "in_flight")

    def __init__(self) -> None:
        self.in_flight = 0
        self._last_progress: float | None = None

    def take(self, count: int) -> None:
        """``count`` messages were polled and are being handled."""
        self.in_flight += count

    def finish(self, count: int = 1, *, progressed: bool = True) -> None:
        """``count`` messages are out of hand: finished (progress), or given back unfinished."""
        self.in_flight -= count
        if progressed:
            self._last_progress = time.time()

    @property
    def last_progress_at(self) -> datetime | None:
        """When a message was last finished (handled, skipped, retried or dead-lettered)."""
        if self._last_progress is None:
            return None
        return datetime.fromtimestamp(self._last_progress, UTC)
