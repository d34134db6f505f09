"""Token buckets in PostgreSQL, so a limit holds across every gateway instance.

One statement per call takes a token from the caller's bucket for the tool and
from the tool's bucket for all agents, or from neither (``take_tokens`` in the
migration). Its commit does not wait for the disk (``synchronous_commit``
off for that transaction): a crash of PostgreSQL can at worst give back a few
tokens, which is harmless, and the check stays well under a millisecond.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mainstay_common.db import Database
    from mainstay_contracts.tools import ToolSpec

__all__ = ["RateLimiter", "bucket_keys"]


def bucket_keys(tool: ToolSpec, *, tenant: str, subject: str) -> list[tuple[str, float, float]]:
    """``(key, per_second, burst)`` of every bucket a call to ``tool`` draws from, sorted."""
    buckets: list[tuple[str, float, float]] = []
    limits = tool.rate_limit
    if limits.per_agent is not None:
        buckets.append(
            (
                f"agent\x1f{tenant}\x1f{subject}\x1f{tool.name}",
                limits.per_agent.per_second,
                float(limits.per_agent.burst),
            )
        )
    if limits.all_agents is not None:
        buckets.append(
            (f"tool\x1f{tool.name}", limits.all_agents.per_second, float(limits.all_agents.burst))
        )
    return sorted(buckets)


class RateLimiter:
    def __init__(self, database: Database) -> None:
        self._database = database

    async def take(self, tool: ToolSpec, *, tenant: str, subject: str) -> float:
        """0 when the call may go ahead, else the seconds to wait before retrying."""
        buckets = bucket_keys(tool, tenant=tenant, subject=subject)
        if not buckets:
            return 0.0
        keys, rates, bursts = zip(*buckets, strict=True)
        # One statement, its own transaction: the local setting holds until its commit.
        wait = await self._database.fetchval(
            "SELECT take_tokens($1::text[], $2::float8[], $3::float8[])"
            " FROM set_config('synchronous_commit', 'off', true)",
            list(keys),
            list(rates),
            list(bursts),
        )
        return float(wait)
