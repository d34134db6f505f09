"""What must hold in a ledger's tables whatever happened, for tests and benchmarks.

Used by the ledger's own tests and by the whole-mesh harness of the execution
service (:mod:`mainstay_execution.testing.mesh`) and its benchmarks. It reads the
tables through a ``fetch(query, *args)`` coroutine with the ``ledger`` schema on
the search path, so it needs no driver of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

__all__ = ["check_invariants"]


async def check_invariants(fetch: Callable[..., Awaitable[Sequence[Any]]]) -> None:
    """What must hold whatever happened: the books balance, no flag is broken, every hold's
    figures match its transfers and usage, and no usage is posted twice.

    Raises ``AssertionError`` (with the offending rows) at the first that does not."""
    totals = (
        await fetch(
            "SELECT coalesce(sum(debits_posted), 0) AS dp, coalesce(sum(credits_posted), 0) AS cp,"
            " coalesce(sum(debits_pending), 0) AS dq, coalesce(sum(credits_pending), 0) AS cq"
            " FROM accounts"
        )
    )[0]
    assert totals["dp"] == totals["cp"], dict(totals)
    assert totals["dq"] == totals["cq"], dict(totals)
    broken = await fetch(
        "SELECT id FROM accounts WHERE 'debits_must_not_exceed_credits' = ANY(flags)"
        " AND debits_pending + debits_posted > credits_posted"
    )
    assert not broken, [r["id"] for r in broken]
    # A hold account pays out exactly what was captured into it; what it still
    # reserves is what its live hold has left.
    mismatched = await fetch(
        "SELECT h.tenant, h.task_id, h.state, h.cap, h.spent, a.credits_posted,"
        " a.debits_posted, a.credits_pending FROM holds h JOIN accounts a ON a.id = h.account"
        " WHERE a.credits_posted <> a.debits_posted OR a.credits_posted <> h.spent"
        " OR a.credits_pending <> CASE WHEN h.state IN ('open', 'exhausted', 'closing')"
        "  THEN h.cap - h.spent ELSE 0 END"
    )
    assert not mismatched, [dict(r) for r in mismatched]
    # Every usage is paid once: its cost reached its expense account exactly.
    unpaid = await fetch(
        "SELECT u.tenant, u.usage_id, u.cost, coalesce(sum(t.amount), 0) AS paid FROM usage u"
        " LEFT JOIN transfers t ON t.tenant = u.tenant AND t.kind = 'posted'"
        "  AND t.id LIKE u.tenant || '/usage/' || u.usage_id || '/%'"
        " GROUP BY u.tenant, u.usage_id, u.cost HAVING coalesce(sum(t.amount), 0) <> u.cost"
    )
    assert not unpaid, [dict(r) for r in unpaid]
    # A hold's spend is what its usage says it covered; its overrun what was posted past it.
    covered = await fetch(
        "SELECT h.tenant, h.task_id, h.spent, h.overrun,"
        " (SELECT coalesce(sum(u.covered), 0) FROM usage u WHERE u.tenant = h.tenant"
        "  AND u.task_id = h.task_id) AS covered,"
        " (SELECT coalesce(sum(t.amount), 0) FROM transfers t WHERE t.tenant = h.tenant"
        "  AND t.task_id = h.task_id AND t.code = 'usage.overrun') AS over"
        " FROM holds h"
    )
    wrong = [dict(r) for r in covered if (r["spent"], r["overrun"]) != (r["covered"], r["over"])]
    assert not wrong, wrong
    twice = await fetch(
        "SELECT pending_id, count(*) FROM transfers WHERE kind IN ('void', 'expire')"
        " GROUP BY pending_id HAVING count(*) > 1"
    )
    assert not twice, [dict(r) for r in twice]
