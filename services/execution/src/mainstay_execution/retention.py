"""Retention: finished tasks keep their checkpoints for a while, then only a summary.

A task finished longer than ``retention_s`` ago loses its model replies, tool
calls and confirmed charges, and the copies it kept of its token, input,
agent definition and recalled memories. What remains is its row (state,
answer, reason, cost, steps) and a ``summary`` of what it used, so storage
grows with the number of tasks, not with what they did. Several instances may
sweep at once: each takes different tasks (``SKIP LOCKED``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mainstay_common.db import Database

__all__ = ["compact_finished"]

_BATCH = 500


async def compact_finished(database: Database, *, older_than_s: float) -> int:
    """Compact a batch of the tasks finished more than ``older_than_s`` ago; how many were.

    Run it until it returns 0 (:func:`mainstay_common.lifecycle.sweep_forever` does).
    """
    async with database.pool.acquire() as tx, tx.transaction():
        ids = await tx.fetch(
            "SELECT task_id FROM tasks WHERE finished_at IS NOT NULL AND compacted_at IS NULL"
            " AND finished_at < now() - make_interval(secs => $1)"
            " ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED",
            older_than_s,
            _BATCH,
        )
        if not ids:
            return 0
        batch = [row["task_id"] for row in ids]
        await tx.execute(
            "UPDATE tasks t SET compacted_at = now(), token = '', input = '',"
            " definition = NULL, recalled = NULL, escalation = NULL, ending = NULL,"
            " summary = jsonb_build_object("
            "   'steps', t.steps, 'cost_micros', t.cost_micros,"
            "   'model_calls', (SELECT count(*) FROM model_calls m WHERE m.task_id = t.task_id),"
            "   'failed_model_calls', (SELECT count(*) FROM model_calls m"
            "                          WHERE m.task_id = t.task_id AND m.reply IS NULL),"
            "   'input_tokens', (SELECT coalesce(sum((m.reply->'usage'->>'input_tokens')::bigint), 0)"
            "                    FROM model_calls m WHERE m.task_id = t.task_id),"
            "   'output_tokens', (SELECT coalesce(sum((m.reply->'usage'->>'output_tokens')::bigint), 0)"
            "                     FROM model_calls m WHERE m.task_id = t.task_id),"
            "   'tool_calls', (SELECT count(*) FROM tool_calls c WHERE c.task_id = t.task_id),"
            "   'tools', (SELECT coalesce(jsonb_agg(DISTINCT c.tool), '[]'::jsonb)"
            "             FROM tool_calls c WHERE c.task_id = t.task_id))"
            " WHERE t.task_id = ANY($1::text[])",
            batch,
        )
        for table in ("model_calls", "tool_calls", "charges"):
            await tx.execute(
                f"DELETE FROM {table} WHERE task_id = ANY($1::text[])",  # noqa: S608 - fixed names
                batch,
            )
        return len(batch)
