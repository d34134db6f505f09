"""Reports: spend by dimension, budget burn-down, and cost per successful task.

All figures are integers of micro-units per currency; periods are half-open
``[since, until)`` in UTC and count usage by when it happened.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Literal

from mainstay_common.errors import InvalidArgument, NotFound
from mainstay_ledger.holds import Ledger, period_start

if TYPE_CHECKING:
    from mainstay_common.db import Database

__all__ = ["GROUPS", "Group", "burn_down", "cost_per_success", "spend"]

Group = Literal["tenant", "team", "agent", "task", "model", "tool"]
GROUPS: Final = ("tenant", "team", "agent", "task", "model", "tool")
_COLUMN: Final = {
    "tenant": "tenant",
    "team": "team",
    "agent": "agent",
    "task": "task_id",
    "model": "resource",
    "tool": "resource",
}


def _window(since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    until = until or now
    since = since or period_start("month", now)
    if since.tzinfo is None or until.tzinfo is None:
        raise InvalidArgument("since/until: give a time zone (e.g. 2026-11-01T00:00:00Z)")
    if since >= until:
        raise InvalidArgument(f"since: {since.isoformat()} is not before until {until.isoformat()}")
    return since, until


async def spend(
    database: Database,
    *,
    tenant: str,
    group_by: Group,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 1000,
) -> dict[str, Any]:
    """Spend of ``tenant`` in the window, grouped, largest first."""
    if group_by not in GROUPS:
        raise InvalidArgument(f"group_by: must be one of {', '.join(GROUPS)}, got {group_by!r}")
    since, until = _window(since, until)
    column = _COLUMN[group_by]
    kind_filter = f" AND kind = '{group_by}'" if group_by in ("model", "tool") else ""
    rows = await database.fetch(
        f"SELECT {column} AS key, currency, sum(cost)::bigint AS spend, count(*) AS records,"  # noqa: S608 - column and filter are ours
        " sum(input_tokens)::bigint AS input_tokens, sum(output_tokens)::bigint AS output_tokens,"
        " sum(cached_tokens)::bigint AS cached_tokens, sum(calls)::bigint AS calls"
        f" FROM usage WHERE tenant = $1 AND occurred_at >= $2 AND occurred_at < $3{kind_filter}"
        f" GROUP BY {column}, currency ORDER BY spend DESC, key LIMIT $4",
        tenant,
        since,
        until,
        limit,
    )
    return {
        "tenant": tenant,
        "group_by": group_by,
        "since": since.isoformat(),
        "until": until.isoformat(),
        "groups": [dict(row) for row in rows],
    }


async def cost_per_success(
    database: Database,
    *,
    tenant: str,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    """Per currency, for tasks that ended in the window: what the completed ones cost each,
    and what the failed and cancelled ones spent for nothing."""
    since, until = _window(since, until)
    rows = await database.fetch(
        "SELECT o.outcome, u.currency, count(DISTINCT o.task_id) AS tasks,"
        " coalesce(sum(u.cost), 0)::bigint AS spend"
        " FROM task_outcomes o JOIN usage u ON u.tenant = o.tenant AND u.task_id = o.task_id"
        " WHERE o.tenant = $1 AND o.finished_at >= $2 AND o.finished_at < $3"
        " GROUP BY o.outcome, u.currency",
        tenant,
        since,
        until,
    )
    free = await database.fetch(
        "SELECT outcome, count(*) AS tasks FROM task_outcomes o WHERE tenant = $1"
        " AND finished_at >= $2 AND finished_at < $3 AND NOT EXISTS (SELECT 1 FROM usage u"
        " WHERE u.tenant = o.tenant AND u.task_id = o.task_id) GROUP BY outcome",
        tenant,
        since,
        until,
    )
    by_currency: dict[str, dict[str, int]] = {}
    for row in rows:
        figures = by_currency.setdefault(row["currency"], {})
        figures[f"{row['outcome']}_tasks"] = row["tasks"]
        figures[f"{row['outcome']}_spend"] = row["spend"]
    unpaid = {row["outcome"]: row["tasks"] for row in free}
    currencies = []
    for currency, figures in sorted(by_currency.items()):
        completed = figures.get("completed_tasks", 0)
        completed_spend = figures.get("completed_spend", 0)
        currencies.append(
            {
                "currency": currency,
                "completed_tasks": completed,
                "completed_spend": completed_spend,
                "cost_per_successful_task": completed_spend / completed if completed else None,
                "failed_tasks": figures.get("failed_tasks", 0),
                "cancelled_tasks": figures.get("cancelled_tasks", 0),
                "wasted_spend": figures.get("failed_spend", 0) + figures.get("cancelled_spend", 0),
            }
        )
    return {
        "tenant": tenant,
        "since": since.isoformat(),
        "until": until.isoformat(),
        "currencies": currencies,
        "tasks_without_spend": unpaid,
    }


@dataclass(frozen=True)
class _Period:
    start: datetime
    end: datetime
    step: timedelta


def _period(period: str, now: datetime) -> _Period:
    start = period_start(period, now)
    if period == "day":
        return _Period(start, start + timedelta(days=1), timedelta(hours=1))
    following = (start + timedelta(days=32)).replace(day=1)
    return _Period(start, following, timedelta(days=1))


async def burn_down(
    database: Database, *, tenant: str, budget_id: str, at: datetime | None = None
) -> dict[str, Any]:
    """A budget's current period: committed spend against its limits, spend per hour (day
    budgets) or per day (month budgets), and when the hard limit runs out at the pace so far."""
    now = at or datetime.now(UTC)
    budget = await database.fetchrow(
        "SELECT * FROM budgets WHERE tenant = $1 AND budget_id = $2", tenant, budget_id
    )
    if budget is None:
        raise NotFound(f"budget_id: no budget '{budget_id}' in tenant '{tenant}'")
    period = _period(budget["period"], now)
    async with database.pool.acquire() as conn:
        spent, reserved = await Ledger.committed(
            conn,
            tenant=tenant,
            currency=budget["currency"],
            scope=budget["scope"],
            name=budget["name"],
            since=period.start,
        )
        rows = await conn.fetch(
            "SELECT date_bin($6::interval, occurred_at, $5) AS bucket, sum(cost)::bigint AS spend"
            " FROM usage WHERE tenant = $1 AND currency = $2 AND occurred_at >= $5"
            " AND ($3 = 'tenant' OR ($3 = 'team' AND team = $4) OR ($3 = 'agent' AND agent = $4))"
            " GROUP BY bucket ORDER BY bucket",
            tenant,
            budget["currency"],
            budget["scope"],
            budget["name"],
            period.start,
            period.step,
        )
    series, total = [], 0
    for row in rows:
        total += row["spend"]
        series.append({"at": row["bucket"].isoformat(), "spend": row["spend"], "cumulative": total})
    limit = budget["hard_limit"] or budget["soft_limit"]
    elapsed = max((now - period.start).total_seconds(), 1.0)
    exhausted_at = None
    if spent > 0 and limit is not None:
        seconds = (limit - spent - reserved) / (spent / elapsed)
        if seconds <= 0:
            exhausted_at = now.isoformat()
        elif now + timedelta(seconds=seconds) < period.end:
            exhausted_at = (now + timedelta(seconds=seconds)).isoformat()
    return {
        "tenant": tenant,
        "budget_id": budget_id,
        "scope": budget["scope"],
        "name": budget["name"],
        "period": budget["period"],
        "currency": budget["currency"],
        "period_start": period.start.isoformat(),
        "period_end": period.end.isoformat(),
        "soft_limit": budget["soft_limit"],
        "hard_limit": budget["hard_limit"],
        "spent": spent,
        "reserved": reserved,
        "committed": spent + reserved,
        "left": None if limit is None else limit - spent - reserved,
        "series": series,
        "projected_exhaustion": exhausted_at,
    }
