"""Holds, usage, budgets and extensions: each command applied in one transaction.

A task's hold is a pending transfer from its agent's account to an account of
its own (``<tenant>/hold/<task>``, which can only pay out what was captured).
Usage is priced with the price book, captured from the hold, and paid from the
hold account to the expense account of the model or tool. Usage the hold
cannot cover is posted from the agent's account directly (the overrun, bounded
by the one unit that ran the hold out) and answers ``hold.exhausted``; when the
hold has approvers, the ledger asks them for an extension through the identity
service's inbox and applies it only after an approval within the deadline.

Budgets count *committed* spend: usage in the period plus what open holds still
reserve. A hold that would take a budget past its hard limit is denied; one
that takes it past its soft limit is announced (once per period). Opening holds
and applying extensions take a per-tenant advisory lock, so two ledger
instances never both grant the last of a budget.

Every function takes the caller's transaction: the inbox claim, the postings,
the hold's new state and the outgoing events commit together or not at all.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import asyncpg

from mainstay_common.errors import InvalidArgument, NotFound, RuleViolation
from mainstay_contracts.identity import SEND_MAIL, ApprovalRequest, SendMailCommand
from mainstay_contracts.ledger import (
    LEDGER_EVENTS,
    BudgetSnapshot,
    HoldSnapshot,
    LedgerEvent,
    LedgerEventType,
    UsageSnapshot,
)
from mainstay_ledger import engine

if TYPE_CHECKING:
    from mainstay_common.auth import TokenSource
    from mainstay_common.bus import Bus, Event, OutgoingMessage
    from mainstay_common.db import Connection, Database, Outbox
    from mainstay_contracts.execution import TaskEvent
    from mainstay_contracts.identity import ApprovalEvent
    from mainstay_contracts.ledger import (
        CloseHoldCommand,
        ExtendHoldCommand,
        OpenHoldCommand,
        RecordUsageCommand,
    )
    from mainstay_ledger.metrics import LedgerMetrics
    from mainstay_ledger.settings import LedgerSettings

__all__ = ["HoldRejected", "Ledger", "period_start"]

_log = logging.getLogger("mainstay.ledger")
_LIVE = ("open", "exhausted", "closing")
# The ledger's own deadline check waits this long past an approval's deadline
# for identity's expiry before it gives up on the answer.
_APPROVAL_GRACE = timedelta(seconds=60)
_SWEEP_BATCH = 100
_NO_REQUEST = (
    "approval_id = NULL, approval_amount = NULL, approval_approvers = NULL,"
    " approval_reason = NULL, approval_deadline = NULL"
)


class HoldRejected(RuleViolation):
    """A command for a hold that cannot take it (closed, expired, denied)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def period_start(period: str, now: datetime) -> datetime:
    """The start (UTC) of the day or month ``now`` falls in."""
    now = now.astimezone(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return day if period == "day" else day.replace(day=1)


def _remaining(hold: asyncpg.Record) -> int:
    return int(hold["cap"] - hold["spent"]) if hold["state"] in _LIVE else 0


def _snapshot(hold: asyncpg.Record) -> HoldSnapshot:
    return HoldSnapshot(
        cap=hold["cap"],
        spent=hold["spent"],
        remaining=_remaining(hold),
        overrun=hold["overrun"],
        state=hold["state"],
        timeout_at=hold["timeout_at"],
    )


def _approval_id(tenant: str, task_id: str) -> str:
    """A new id per request (the identity service delivers a message id once)."""
    digest = hashlib.sha256(f"{tenant}/{task_id}".encode()).hexdigest()[:24]
    return f"ledger.extension.{digest}.{uuid.uuid4().hex[:16]}"


def _refusal(exc: asyncpg.PostgresError) -> Exception | None:
    """The classified error of a refusal raised by ``post_usage``."""
    reason = str(getattr(exc, "detail", "") or "")
    message = str(getattr(exc, "message", "") or exc)
    code = getattr(exc, "sqlstate", "")
    if code == "ML422" and reason.startswith("hold_"):
        return HoldRejected(reason, message)
    if code == "ML422":
        return engine.LedgerRejection(reason, message)
    if code == "ML400" and reason == "currency":
        return engine.CurrencyMismatch(message)
    if code == "ML400":
        return InvalidArgument(message)
    if code == "ML404":
        return NotFound(message)
    return None


@dataclass(frozen=True)
class _Budget:
    budget_id: str
    scope: Literal["tenant", "team", "agent"]
    name: str
    period: Literal["day", "month"]
    soft_limit: int | None
    hard_limit: int | None


class Ledger:
    """The ledger's commands, over one database."""

    def __init__(
        self,
        database: Database,
        bus: Bus,
        outbox: Outbox,
        settings: LedgerSettings,
        *,
        metrics: LedgerMetrics | None = None,
        tokens: TokenSource | None = None,
    ) -> None:
        self._database = database
        self._bus = bus
        self._outbox = outbox
        self._settings = settings
        self._metrics = metrics
        self._tokens = tokens

    # -- events --------------------------------------------------------------------

    def _event(
        self,
        type: LedgerEventType,
        hold: asyncpg.Record | None,
        *,
        caused_by: Event[Any] | None,
        tenant: str = "",
        currency: str = "",
        usage: UsageSnapshot | None = None,
        budget: BudgetSnapshot | None = None,
        reason: str = "",
        approval_id: str = "",
        task_id: str = "",
        agent: str = "",
        team: str = "",
    ) -> OutgoingMessage:
        if hold is not None:
            tenant, currency, task_id = hold["tenant"], hold["currency"], hold["task_id"]
            agent, team = hold["agent"], hold["team"]
        event = LedgerEvent(
            type=type,
            tenant=tenant,
            task_id=task_id,
            agent=agent,
            team=team,
            currency=currency,
            hold=_snapshot(hold) if hold is not None else None,
            usage=usage,
            budget=budget,
            reason=reason,
            approval_id=approval_id,
            occurred_at=datetime.now(UTC),
        )
        return self._bus.message(
            LEDGER_EVENTS,
            event,
            caused_by=caused_by,
            event_type=f"mainstay.ledger.{type}",
            tenant=tenant,
            correlation_id=task_id or None,
            subject=task_id or None,
        )

    async def _emit(self, tx: Connection, *messages: OutgoingMessage) -> None:
        await self._outbox.add(tx, *messages)

    # -- accounts ------------------------------------------------------------------

    @staticmethod
    def agent_account(tenant: str, agent: str, currency: str) -> str:
        return f"{tenant}/agent/{agent}/{currency}"

    @staticmethod
    def hold_account(tenant: str, task_id: str) -> str:
        return f"{tenant}/hold/{task_id}"

    @staticmethod
    def expense_account(tenant: str, kind: str, resource: str, currency: str) -> str:
        return f"{tenant}/expense/{kind}/{resource}/{currency}"

    @staticmethod
    def _pending_id(tenant: str, task_id: str, extension: int) -> str:
        return f"{tenant}/hold/{task_id}/{extension}"

    async def _hold(self, tx: Connection, tenant: str, task_id: str) -> asyncpg.Record | None:
        return await tx.fetchrow(
            "SELECT * FROM holds WHERE tenant = $1 AND task_id = $2 FOR UPDATE", tenant, task_id
        )

    async def _existing_hold(self, tx: Connection, tenant: str, task_id: str) -> asyncpg.Record:
        hold = await self._hold(tx, tenant, task_id)
        if hold is None:
            raise NotFound(f"task_id: no hold for task '{task_id}'")
        return hold

    @staticmethod
    async def _update(
        tx: Connection, hold: asyncpg.Record, assignments: str, *args: Any
    ) -> asyncpg.Record:
        """``UPDATE holds SET <assignments>`` of ``hold`` (parameters from $3); the new row."""
        row = await tx.fetchrow(
            f"UPDATE holds SET {assignments} WHERE tenant = $1 AND task_id = $2 RETURNING *",  # noqa: S608 - our own assignments
            hold["tenant"],
            hold["task_id"],
            *args,
        )
        assert row is not None
        return row

    # -- budgets -------------------------------------------------------------------

    async def _budgets(
        self, tx: Connection, *, tenant: str, team: str, agent: str, currency: str
    ) -> list[_Budget]:
        rows = await tx.fetch(
            "SELECT * FROM budgets WHERE tenant = $1 AND currency = $2 AND (scope = 'tenant'"
            " OR (scope = 'team' AND name = $3 AND $3 <> '') OR (scope = 'agent' AND name = $4))"
            " ORDER BY budget_id",
            tenant,
            currency,
            team,
            agent,
        )
        return [
            _Budget(
                r["budget_id"], r["scope"], r["name"], r["period"], r["soft_limit"], r["hard_limit"]
            )
            for r in rows
        ]

    @staticmethod
    async def committed(
        conn: Connection,
        *,
        tenant: str,
        currency: str,
        scope: str,
        name: str,
        since: datetime,
    ) -> tuple[int, int]:
        """``(spent since since, reserved by live holds)`` in a budget's scope."""
        row = await conn.fetchrow(
            "SELECT (SELECT coalesce(sum(cost), 0) FROM usage WHERE tenant = $1"
            "  AND currency = $2 AND occurred_at >= $5 AND ($3 = 'tenant'"
            "  OR ($3 = 'team' AND team = $4) OR ($3 = 'agent' AND agent = $4))) AS spent,"
            " (SELECT coalesce(sum(cap - spent), 0) FROM holds WHERE tenant = $1"
            "  AND currency = $2 AND state IN ('open', 'exhausted', 'closing') AND ($3 = 'tenant'"
            "  OR ($3 = 'team' AND team = $4) OR ($3 = 'agent' AND agent = $4))) AS reserved",
            tenant,
            currency,
            scope,
            name,
            since,
        )
        assert row is not None
        return int(row["spent"]), int(row["reserved"])

    async def _check_budgets(
        self,
        tx: Connection,
        *,
        tenant: str,
        team: str,
        agent: str,
        currency: str,
        amount: int,
        caused_by: Event[Any] | None,
        task_id: str,
    ) -> str:
        """Why reserving ``amount`` more would break a hard limit ('' when it would not);
        announces soft limits it passes. Call with the tenant's budget lock held."""
        budgets = await self._budgets(tx, tenant=tenant, team=team, agent=agent, currency=currency)
        if not budgets:
            return ""
        now = datetime.now(UTC)
        notices: list[OutgoingMessage] = []
        for budget in budgets:
            start = period_start(budget.period, now)
            spent, reserved = await self.committed(
                tx,
                tenant=tenant,
                currency=currency,
                scope=budget.scope,
                name=budget.name,
                since=start,
            )
            after = spent + reserved + amount
            if budget.hard_limit is not None and after > budget.hard_limit:
                scope = (
                    budget.scope if budget.scope == "tenant" else f"{budget.scope} '{budget.name}'"
                )
                return (
                    f"budget '{budget.budget_id}' ({scope}, per {budget.period}): committed"
                    f" {spent + reserved} + {amount} would exceed the hard limit"
                    f" {budget.hard_limit} {currency} micro-units"
                )
            if budget.soft_limit is not None and after >= budget.soft_limit:
                fresh = await tx.fetchval(
                    "INSERT INTO budget_notices (tenant, budget_id, period_start, committed)"
                    " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING true",
                    tenant,
                    budget.budget_id,
                    start,
                    after,
                )
                if fresh:
                    snapshot = BudgetSnapshot(
                        budget_id=budget.budget_id,
                        scope=budget.scope,
                        name=budget.name,
                        period=budget.period,
                        period_start=start,
                        soft_limit=budget.soft_limit,
                        hard_limit=budget.hard_limit,
                        committed=after,
                    )
                    notices.append(
                        self._event(
                            "budget.soft-limit",
                            None,
                            caused_by=caused_by,
                            tenant=tenant,
                            currency=currency,
                            budget=snapshot,
                            task_id=task_id,
                            agent=agent,
                            team=team,
                        )
                    )
        await self._emit(tx, *notices)
        return ""

    @staticmethod
    async def _lock_budgets(tx: Connection, tenant: str) -> None:
        await tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"budget/{tenant}"
        )

    # -- commands ------------------------------------------------------------------

    async def open_hold(
        self, tx: Connection, command: OpenHoldCommand, *, caused_by: Event[Any] | None = None
    ) -> asyncpg.Record:
        """Reserve the task's cap, or deny it; a repeat answers the first outcome again."""
        tenant, task_id = command.tenant, command.task_id
        currency = command.currency or self._settings.currency
        await self._lock_budgets(tx, tenant)
        hold = await self._hold(tx, tenant, task_id)
        if hold is not None:
            again: LedgerEventType = "hold.denied" if hold["state"] == "denied" else "hold.opened"
            await self._emit(
                tx, self._event(again, hold, caused_by=caused_by, reason=hold["reason"])
            )
            return hold
        why = await self._check_budgets(
            tx,
            tenant=tenant,
            team=command.team,
            agent=command.agent,
            currency=currency,
            amount=command.amount,
            caused_by=caused_by,
            task_id=task_id,
        )
        timeout_s = command.timeout_s or self._settings.hold_timeout_s
        timeout_at = datetime.now(UTC) + timedelta(seconds=timeout_s)
        agent_account = self.agent_account(tenant, command.agent, currency)
        account = self.hold_account(tenant, task_id)
        pending_id: str | None = None
        if not why:
            await engine.ensure_accounts(
                tx,
                [
                    (agent_account, tenant, "agent", currency, ()),
                    (account, tenant, "hold", currency, (engine.DEBITS_MUST_NOT_EXCEED_CREDITS,)),
                ],
            )
            pending_id = self._pending_id(tenant, task_id, 0)
            await engine.post(
                tx,
                id=pending_id,
                tenant=tenant,
                debit=agent_account,
                credit=account,
                amount=command.amount,
                code="hold.opened",
                pending=True,
                timeout_at=timeout_at,
                task_id=task_id,
            )
        hold = await tx.fetchrow(
            "INSERT INTO holds (tenant, task_id, agent, team, currency, pending_id, account,"
            " agent_account, cap, state, reason, timeout_at, approvers, extension_amount)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING *",
            tenant,
            task_id,
            command.agent,
            command.team,
            currency,
            pending_id,
            account,
            agent_account,
            command.amount,
            "denied" if why else "open",
            why,
            timeout_at,
            command.approvers,
            command.extension_amount or command.amount,
        )
        assert hold is not None
        if self._metrics is not None:
            self._metrics.hold(tenant, denied=bool(why))
        kind: LedgerEventType = "hold.denied" if why else "hold.opened"
        await self._emit(tx, self._event(kind, hold, caused_by=caused_by, reason=why))
        return hold

    async def record_usage(
        self, tx: Connection, command: RecordUsageCommand, *, caused_by: Event[Any] | None = None
    ) -> bool:
        """Post one usage against its task's hold; False when its ``usage_id`` was posted before.

        Pricing and posting are one call of the schema's ``post_usage``: the price
        book's formula and :func:`engine.capture`'s rules, applied in one round trip.
        """
        try:
            row = await tx.fetchrow(
                "SELECT * FROM post_usage($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,"
                " $14)",
                command.tenant,
                command.usage_id,
                command.task_id,
                command.agent,
                command.kind,
                command.resource,
                command.step,
                command.input_tokens,
                command.output_tokens,
                command.cached_tokens,
                command.calls,
                command.list_price_micros,
                self._settings.currency,
                command.occurred_at,
            )
        except asyncpg.PostgresError as exc:
            refusal = _refusal(exc)
            if refusal is None:
                raise
            raise refusal from exc
        assert row is not None
        if not row["fresh"]:
            return False
        hold: asyncpg.Record | None = row["hold"]
        currency = row["currency"]
        if self._metrics is not None:
            self._metrics.spend(command.tenant, command.kind, currency, row["cost"])
        usage = UsageSnapshot(
            usage_id=command.usage_id,
            kind=command.kind,
            resource=command.resource,
            step=command.step,
            cost=row["cost"],
            price_version=row["price_version"],
            covered=row["covered"],
        )
        messages: list[OutgoingMessage] = []
        if self._settings.usage_events:
            messages.append(
                self._event(
                    "usage.recorded",
                    hold,
                    caused_by=caused_by,
                    tenant=command.tenant,
                    currency=currency,
                    usage=usage,
                    task_id=command.task_id,
                    agent=command.agent,
                )
            )
        if hold is not None and row["exhausted"]:
            messages.append(self._event("hold.exhausted", hold, caused_by=caused_by))
            if self._metrics is not None:
                self._metrics.exhausted(command.tenant)
            if hold["approvers"] and hold["approval_id"] is None:
                await self._ask(
                    tx, hold, hold["extension_amount"], list(hold["approvers"]), "the hold ran out"
                )
        await self._emit(tx, *messages)
        return True

    async def _ask(
        self,
        tx: Connection,
        hold: asyncpg.Record,
        amount: int,
        approvers: list[str],
        reason: str,
    ) -> asyncpg.Record:
        """Record an extension request; the sweep sends it to the approvers.

        The deadline set here stands only while the request is unsent (so one that
        never goes out is still given up on); sending restarts it.
        """
        approval_id = _approval_id(hold["tenant"], hold["task_id"])
        deadline = datetime.now(UTC) + timedelta(seconds=self._settings.approval_timeout_s)
        return await self._update(
            tx,
            hold,
            "approval_id = $3, approval_amount = $4, approval_approvers = $5,"
            " approval_reason = $6, approval_deadline = $7, approval_sent = false",
            approval_id,
            amount,
            approvers,
            reason,
            deadline,
        )

    async def request_extension(
        self, tx: Connection, command: ExtendHoldCommand, *, caused_by: Event[Any] | None = None
    ) -> None:
        """Ask the approvers for ``amount`` more; one request at a time per hold."""
        hold = await self._existing_hold(tx, command.tenant, command.task_id)
        if hold["state"] not in ("open", "exhausted"):
            raise HoldRejected(
                f"hold_{hold['state']}",
                f"task_id: the hold of task '{command.task_id}' is {hold['state']}",
            )
        if hold["approval_id"] is not None:
            return  # a request is out already; its answer decides
        approvers = command.approvers or list(hold["approvers"])
        if not approvers:
            await self._emit(
                tx,
                self._event(
                    "hold.extension-denied",
                    hold,
                    caused_by=caused_by,
                    reason="no approvers: neither the command nor the hold names any",
                ),
            )
            return
        await self._ask(tx, hold, command.amount, approvers, command.reason or "asked by the task")

    async def close_hold(
        self, tx: Connection, command: CloseHoldCommand, *, caused_by: Event[Any] | None = None
    ) -> None:
        """Release the rest after the grace period (at once without one); repeats do nothing."""
        hold = await self._existing_hold(tx, command.tenant, command.task_id)
        await self._close(tx, hold, command.reason or "closed on request", caused_by)

    async def _close(
        self, tx: Connection, hold: asyncpg.Record, reason: str, caused_by: Event[Any] | None
    ) -> None:
        if hold["state"] not in ("open", "exhausted"):
            return
        grace = self._settings.close_grace_s
        if grace <= 0:
            await self._resolve(tx, hold, "void", reason, caused_by)
            return
        await self._update(
            tx,
            hold,
            "state = 'closing', reason = $3, close_after = now() + make_interval(secs => $4)",
            reason,
            grace,
        )

    async def _resolve(
        self,
        tx: Connection,
        hold: asyncpg.Record,
        kind: Literal["void", "expire"],
        reason: str,
        caused_by: Event[Any] | None,
    ) -> None:
        await engine.resolve(
            tx,
            id=f"{hold['pending_id']}/{kind}",
            tenant=hold["tenant"],
            pending_id=hold["pending_id"],
            kind=kind,
            code="hold.closed" if kind == "void" else "hold.expired",
        )
        state = "closed" if kind == "void" else "expired"
        hold = await self._update(
            tx, hold, f"state = $3, reason = $4, closed_at = now(), {_NO_REQUEST}", state, reason
        )
        event: LedgerEventType = "hold.closed" if kind == "void" else "hold.expired"
        await self._emit(tx, self._event(event, hold, caused_by=caused_by, reason=reason))

    async def on_task(
        self, tx: Connection, event: TaskEvent, *, caused_by: Event[Any] | None = None
    ) -> None:
        """Remember how a task ended, and close its hold if the task did not."""
        outcome = event.type.removeprefix("task.")
        if outcome not in ("completed", "failed", "cancelled"):
            return
        await tx.execute(
            "INSERT INTO task_outcomes (tenant, task_id, outcome, agent, reason, finished_at)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            event.tenant,
            event.task_id,
            outcome,
            event.agent,
            event.reason[:500],
            event.occurred_at,
        )
        hold = await self._hold(tx, event.tenant, event.task_id)
        if hold is not None:
            await self._close(tx, hold, f"task {outcome}", caused_by)

    async def on_approval(
        self, tx: Connection, event: ApprovalEvent, *, caused_by: Event[Any] | None = None
    ) -> None:
        """Apply an extension the approvers granted in time; announce a refusal otherwise."""
        if event.type != "approval.decided":
            return
        hold = await tx.fetchrow(
            "SELECT * FROM holds WHERE approval_id = $1 AND tenant = $2 FOR UPDATE",
            event.approval_id,
            event.tenant,
        )
        if hold is None:
            return  # not an extension of ours, or answered already
        amount = int(hold["approval_amount"])
        in_time = event.decided_at is None or event.decided_at <= hold["approval_deadline"]
        if event.status == "expired" or not in_time:
            why = "no answer before the deadline"
        elif event.decision != "approve":
            by = f" by {event.decided_by}" if event.decided_by else ""
            why = f"{event.decision}{by}" + (f": {event.reason}" if event.reason else "")
        elif hold["state"] not in ("open", "exhausted"):
            why = f"the hold is {hold['state']}"
        else:
            await self._lock_budgets(tx, hold["tenant"])
            why = await self._check_budgets(
                tx,
                tenant=hold["tenant"],
                team=hold["team"],
                agent=hold["agent"],
                currency=hold["currency"],
                amount=amount,
                caused_by=caused_by,
                task_id=hold["task_id"],
            )
            if not why:
                await self._extend(tx, hold, amount, event.approval_id, caused_by)
                return
        await self._refuse_extension(tx, hold, why, caused_by)

    async def _refuse_extension(
        self, tx: Connection, hold: asyncpg.Record, why: str, caused_by: Event[Any] | None
    ) -> None:
        approval_id = hold["approval_id"]
        hold = await self._update(tx, hold, _NO_REQUEST)
        await self._emit(
            tx,
            self._event(
                "hold.extension-denied",
                hold,
                caused_by=caused_by,
                reason=why,
                approval_id=approval_id,
            ),
        )

    async def _extend(
        self,
        tx: Connection,
        hold: asyncpg.Record,
        amount: int,
        approval_id: str,
        caused_by: Event[Any] | None,
    ) -> None:
        """Replace the pending transfer with one holding what was left plus ``amount``."""
        tenant, task_id = hold["tenant"], hold["task_id"]
        left = _remaining(hold)
        await engine.resolve(
            tx,
            id=f"{hold['pending_id']}/void",
            tenant=tenant,
            pending_id=hold["pending_id"],
            kind="void",
            code="hold.extended",
        )
        extension = hold["extensions"] + 1
        pending_id = self._pending_id(tenant, task_id, extension)
        await engine.post(
            tx,
            id=pending_id,
            tenant=tenant,
            debit=hold["agent_account"],
            credit=hold["account"],
            amount=left + amount,
            code="hold.extended",
            pending=True,
            timeout_at=hold["timeout_at"],
            task_id=task_id,
            detail={"approval_id": approval_id},
        )
        hold = await self._update(
            tx,
            hold,
            f"pending_id = $3, cap = cap + $4, extensions = $5, state = 'open', {_NO_REQUEST}",
            pending_id,
            amount,
            extension,
        )
        await self._emit(
            tx, self._event("hold.extended", hold, caused_by=caused_by, approval_id=approval_id)
        )

    # -- the sweep -----------------------------------------------------------------

    async def sweep(self) -> int:
        """One pass: release holds past their grace or timeout, send extension requests,
        give up on answers long past their deadline. Returns how many holds it changed."""
        changed = await self._sweep_due(
            "state = 'closing' AND close_after <= now()", "void", "closed"
        )
        changed += await self._sweep_due(
            "state IN ('open', 'exhausted', 'closing') AND timeout_at <= now()",
            "expire",
            "timed out",
        )
        changed += await self._send_requests()
        changed += await self._expire_requests()
        return changed

    async def _sweep_due(self, where: str, kind: Literal["void", "expire"], reason: str) -> int:
        async with self._database.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                f"SELECT * FROM holds WHERE {where} ORDER BY timeout_at LIMIT $1"  # noqa: S608 - our own conditions
                " FOR UPDATE SKIP LOCKED",
                _SWEEP_BATCH,
            )
            for hold in rows:
                keep = hold["reason"] if kind == "void" and hold["reason"] else reason
                await self._resolve(conn, hold, kind, keep, None)
        return len(rows)

    async def _send_requests(self) -> int:
        rows = await self._database.fetch(
            "SELECT tenant, task_id FROM holds WHERE approval_id IS NOT NULL"
            " AND NOT approval_sent ORDER BY approval_deadline LIMIT $1",
            _SWEEP_BATCH,
        )
        for row in rows:
            tenant = row["tenant"]
            token = None
            if self._tokens is not None and self._tokens.has_tenant(tenant):
                token = await self._tokens.token(tenant)  # outside any transaction
            async with self._database.pool.acquire() as conn, conn.transaction():
                hold = await self._hold(conn, tenant, row["task_id"])
                if hold is None or hold["approval_id"] is None or hold["approval_sent"]:
                    continue
                if token is None:
                    await self._refuse_extension(
                        conn,
                        hold,
                        f"the ledger has no approval credentials for tenant '{tenant}'",
                        None,
                    )
                    continue
                # The approvers' time runs from now: a request sent late (the ledger
                # was down, the sweep was slow) still reaches them before its deadline.
                hold = await self._update(
                    conn,
                    hold,
                    "approval_sent = true, approval_deadline = $3",
                    datetime.now(UTC) + timedelta(seconds=self._settings.approval_timeout_s),
                )
                await self._emit(conn, self._request_mail(hold, token))
                await self._emit(
                    conn,
                    self._event(
                        "hold.extension-requested",
                        hold,
                        caused_by=None,
                        reason=hold["approval_reason"],
                        approval_id=hold["approval_id"],
                    ),
                )
        return len(rows)

    def _request_mail(self, hold: asyncpg.Record, token: str) -> OutgoingMessage:
        amount, currency = hold["approval_amount"], hold["currency"]
        question = (
            f"Task '{hold['task_id']}' of agent '{hold['agent']}' has spent"
            f" {hold['spent'] + hold['overrun']} of its {hold['cap']} {currency} micro-unit hold"
            f" ({hold['approval_reason']}). Allow {amount} more?"
        )
        command = SendMailCommand(
            kind="approval-request",
            message_id=hold["approval_id"],
            to=list(hold["approval_approvers"]),
            subject=f"Budget extension for task {hold['task_id']}"[:500],
            body=question,
            approval=ApprovalRequest(
                question=question[:2000],
                deadline=hold["approval_deadline"],
                task_id=hold["task_id"],
            ),
            token=token,
        )
        return self._bus.message(
            SEND_MAIL, command, tenant=hold["tenant"], correlation_id=hold["task_id"]
        )

    async def _expire_requests(self) -> int:
        async with self._database.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT * FROM holds WHERE approval_id IS NOT NULL AND approval_deadline < $1"
                " ORDER BY approval_deadline LIMIT $2 FOR UPDATE SKIP LOCKED",
                datetime.now(UTC) - _APPROVAL_GRACE,
                _SWEEP_BATCH,
            )
            for hold in rows:
                await self._refuse_extension(conn, hold, "no answer before the deadline", None)
        return len(rows)
