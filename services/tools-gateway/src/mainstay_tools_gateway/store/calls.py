"""Idempotency claims, stored results and the audit trail of every call.

A call with an idempotency key first *claims* it (one statement). Then:

* the key was already answered with a final result: that result is replayed;
* another delivery of the same call is running: ``CONFLICT`` (retry later);
* a claim whose lease ran out (its gateway died mid-call) is taken over;
* the key was first used for a different tool or different arguments:
  ``CONFLICT``, never the other call's result.

When the call ends, one transaction stores the result (final outcomes) or
releases the claim (outcomes a retry may change), appends the audit row and
stages the result event in the outbox: the three never disagree.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from mainstay_common.errors import map_asyncpg_errors
from mainstay_contracts.tools import ToolCallEvent

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from mainstay_common.bus import OutgoingMessage
    from mainstay_common.db import Database, Outbox

__all__ = ["AuditQuery", "CallStore", "Claim"]


@dataclass(frozen=True)
class Claim:
    state: Literal["claimed", "replay", "busy", "mismatch"]
    result: ToolCallEvent | None = None


@dataclass(frozen=True)
class AuditQuery:
    tenant: str
    tool: str | None = None
    principal: str | None = None
    task_id: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100


_AUDIT_COLUMNS = (
    "call_id, at, tenant, principal, acting_for, tool, tool_version, args_digest, outcome,"
    " message, latency_ms, attempt, cost_micros, idempotency_key, task_id, step, replayed, channel"
)


class CallStore:
    def __init__(self, database: Database, outbox: Outbox) -> None:
        self._database = database
        self._outbox = outbox

    async def claim(
        self,
        *,
        tenant: str,
        key: str,
        call_id: str,
        tool: str,
        args_digest: str,
        lease_s: float,
    ) -> Claim:
        with map_asyncpg_errors():
            async with self._database.pool.acquire() as conn:
                taken = await conn.fetchval(
                    "INSERT INTO calls (tenant, idempotency_key, call_id, tool, args_digest, state,"
                    " lease_until) VALUES ($1, $2, $3, $4, $5, 'running',"
                    " now() + make_interval(secs => $6))"
                    " ON CONFLICT (tenant, idempotency_key) DO UPDATE SET call_id = EXCLUDED.call_id,"
                    " lease_until = EXCLUDED.lease_until"
                    " WHERE calls.state = 'running'"
                    " AND (calls.lease_until < now() OR calls.call_id = EXCLUDED.call_id)"
                    " AND calls.tool = EXCLUDED.tool AND calls.args_digest = EXCLUDED.args_digest"
                    " RETURNING call_id",
                    tenant,
                    key,
                    uuid.UUID(call_id),
                    tool,
                    args_digest,
                    lease_s,
                )
                if taken is not None:
                    return Claim("claimed")
                row = await conn.fetchrow(
                    "SELECT state, tool, args_digest, result FROM calls"
                    " WHERE tenant = $1 AND idempotency_key = $2",
                    tenant,
                    key,
                )
        if row is None:  # released between the two statements: try once more
            return await self.claim(
                tenant=tenant,
                key=key,
                call_id=call_id,
                tool=tool,
                args_digest=args_digest,
                lease_s=lease_s,
            )
        if row["tool"] != tool or row["args_digest"] != args_digest:
            return Claim("mismatch")
        if row["state"] == "done":
            return Claim("replay", ToolCallEvent.model_validate_json(row["result"]))
        return Claim("busy")

    async def release(self, *, tenant: str, key: str, call_id: str) -> None:
        """Give up a claim without a result (the call broke off), so a retry may run."""
        await self._database.execute(
            "DELETE FROM calls WHERE tenant = $1 AND idempotency_key = $2 AND call_id = $3"
            " AND state = 'running'",
            tenant,
            key,
            uuid.UUID(call_id),
        )

    async def finish(
        self,
        result: ToolCallEvent,
        *,
        args_digest: str,
        channel: str,
        claimed: bool,
        store: bool,
        messages: Sequence[OutgoingMessage] = (),
        wake_relay: bool = True,
    ) -> None:
        """Store or release the claim, audit the call and stage its events, atomically.

        One statement (data-modifying CTEs), so one round trip and one commit.
        ``wake_relay`` notifies the outbox relay at once; without it the events
        leave with the relay's next pass (at most its poll interval later).
        """
        args: list[Any] = [
            uuid.UUID(result.call_id),
            result.completed_at,
            result.tenant,
            result.principal,
            result.acting_for,
            result.tool,
            result.tool_version,
            args_digest,
            result.outcome,
            result.message,
            result.latency_ms,
            result.attempt,
            result.cost_micros,
            result.idempotency_key,
            result.task_id,
            result.step,
            result.replayed,
            channel,
        ]
        parts = [
            f"audit_row AS (INSERT INTO audit ({_AUDIT_COLUMNS}) VALUES"
            " ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18))"
        ]
        if claimed and store:
            args.append(result.model_dump_json())
            parts.append(
                f"stored AS (UPDATE calls SET state = 'done', result = ${len(args)}::jsonb"
                " WHERE tenant = $3 AND idempotency_key = $14 AND call_id = $1)"
            )
        elif claimed:
            parts.append(
                "released AS (DELETE FROM calls WHERE tenant = $3 AND idempotency_key = $14"
                " AND call_id = $1 AND state = 'running')"
            )
        tail = " SELECT 1"
        if messages:
            insert, outbox_args = self._outbox.insert_statement(messages, first_param=len(args) + 1)
            args.extend(outbox_args)
            parts.append(f"staged AS ({insert})")
            if wake_relay:
                args.append(self._outbox.channel)
                tail = f" SELECT pg_notify(${len(args)}, '')"
        await self._database.execute("WITH " + ", ".join(parts) + tail, *args)

    async def audit(self, query: AuditQuery) -> list[dict[str, Any]]:
        clauses = ["tenant = $1"]
        args: list[Any] = [query.tenant]
        for column, value in (
            ("tool", query.tool),
            ("principal", query.principal),
            ("task_id", query.task_id),
            ("outcome", query.outcome),
        ):
            if value:
                args.append(value)
                clauses.append(f"{column} = ${len(args)}")
        if query.since is not None:
            args.append(query.since)
            clauses.append(f"at >= ${len(args)}")
        if query.until is not None:
            args.append(query.until)
            clauses.append(f"at < ${len(args)}")
        args.append(query.limit)
        rows = await self._database.fetch(
            f"SELECT id, {_AUDIT_COLUMNS} FROM audit WHERE {' AND '.join(clauses)}"
            f" ORDER BY at DESC, id DESC LIMIT ${len(args)}",
            *args,
        )
        return [_audit_row(row) for row in rows]


def _audit_row(row: Any) -> dict[str, Any]:
    item = dict(row)
    item["call_id"] = str(item["call_id"])
    item["at"] = item["at"].isoformat()
    item["acting_for"] = list(item["acting_for"])
    return item
