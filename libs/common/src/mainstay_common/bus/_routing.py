"""Names of consumer groups, retry tiers and dead-letter topics.

A consumer group is ``<service>.<handler>``; its retry topics are
``<group>.retry.<n>`` and its dead-letter topic ``<group>.dlq``. They belong to
the group, so a failure in one group never re-delivers to another.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["RetryPolicy", "dlq_topic", "group_id", "retry_topic", "tier_of"]

_NAME_RE = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")


def group_id(service: str, handler: str, *, prefix: str = "") -> str:
    for label, value in (("service", service), ("handler", handler)):
        if not _NAME_RE.match(value):
            raise ValueError(
                f"{label} name {value!r} must be lowercase letters and digits with inner hyphens"
            )
    return f"{prefix}{service}.{handler}"


def retry_topic(group: str, tier: int) -> str:
    return f"{group}.retry.{tier}"


def dlq_topic(group: str) -> str:
    return f"{group}.dlq"


def tier_of(topic: str, group: str) -> int:
    """0 for the origin topic, n for ``<group>.retry.<n>``."""
    head = f"{group}.retry."
    if topic.startswith(head) and topic[len(head) :].isdigit():
        return int(topic[len(head) :])
    return 0


@dataclass(frozen=True)
class RetryPolicy:
    """How a consumer retries.

    ``tier_delays`` drive non-blocking retry through retry topics; with
    ``blocking=True`` (order-sensitive consumers) the message is retried in place
    ``blocking_attempts`` times with exponential backoff instead, holding its
    partition, and then dead-lettered.
    """

    tier_delays: tuple[float, ...] = (1.0, 10.0, 60.0)
    blocking: bool = False
    blocking_attempts: int = 5
    blocking_backoff: float = 0.2
    blocking_backoff_max: float = 10.0

    def __post_init__(self) -> None:
        if any(delay < 0 for delay in self.tier_delays):
            raise ValueError("retry tier delays must be >= 0 seconds")
        if self.blocking_attempts < 1:
            raise ValueError("blocking_attempts must be >= 1")

    @property
    def tiers(self) -> int:
        return 0 if self.blocking else len(self.tier_delays)

    def blocking_delay(self, attempt: int) -> float:
        """Backoff before attempt ``attempt + 1`` (attempt counts from 1)."""
        return float(min(self.blocking_backoff * 2 ** (attempt - 1), self.blocking_backoff_max))
