"""The ledger's commands against real PostgreSQL, driven by random sequences.

Each command runs the way the bus runs it: in one transaction with its inbox
claim. A model predicts every hold (cap, spent, overrun, state, an extension
asked for) and every refusal, including the hard budget; the steps include
duplicates of a command (a new event id for the same usage id), redeliveries
(the same event id), crashes before commit followed by the redelivery, hold
timeouts and approvers' answers. After every step the database must agree
with the model and every invariant of :func:`mainstay_ledger.testing.check_invariants` hold.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule

from mainstay_common.bus import Bus
from mainstay_common.db import Outbox, claim_inbox
from mainstay_common.errors import NotFound
from mainstay_common.settings import KafkaSettings
from mainstay_contracts.identity import ApprovalEvent
from mainstay_contracts.ledger import CloseHoldCommand, OpenHoldCommand, RecordUsageCommand
from mainstay_ledger import pricebook
from mainstay_ledger.holds import HoldRejected, Ledger
from mainstay_ledger.settings import LedgerSettings
from mainstay_ledger.testing import check_invariants

from .machines import DatabaseMachine, run_machine

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from mainstay_common.db import Connection

pytestmark = pytest.mark.real

TENANT = "acme"
TASKS = ("t0", "t1", "t2", "t3")
PER_CALL = 700
HARD_LIMIT = 15_000
LIVE = ("open", "exhausted")


class Crash(Exception):
    """Raised inside a transaction to undo it, as a crash before commit would."""


@dataclass
class HoldModel:
    cap: int
    state: str
    extension: int
    approvers: bool
    spent: int = 0
    overrun: int = 0
    asking: bool = False


@dataclass
class Model:
    holds: dict[str, HoldModel] = field(default_factory=dict)
    costs: dict[str, int] = field(default_factory=dict)
    """usage id -> cost, of every usage posted"""

    def committed(self) -> int:
        reserved = sum(h.cap - h.spent for h in self.holds.values() if h.state in LIVE)
        return sum(self.costs.values()) + reserved


class ServiceMachine(DatabaseMachine):
    def __init__(self) -> None:
        super().__init__()
        self.run(self._seed())
        bus = Bus(service="ledger", kafka=KafkaSettings(topic_prefix=""))
        self.ledger = Ledger(
            self.db, bus, Outbox(self.db), LedgerSettings(close_grace_s=0, currency="USD")
        )
        self.model = Model()
        self.sent: list[RecordUsageCommand] = []
        self.delivered: list[tuple[str, Callable[[Connection], Awaitable[Any]]]] = []

    async def _seed(self) -> None:
        async with self.db.pool.acquire() as conn, conn.transaction():
            await pricebook.set_price(conn, item="tool:search", currency="USD", per_call=PER_CALL)
            await conn.execute(
                "INSERT INTO budgets (tenant, budget_id, scope, name, period, currency,"
                " hard_limit) VALUES ($1, 'writer', 'agent', 'writer', 'day', 'USD', $2)",
                TENANT,
                HARD_LIMIT,
            )

    # -- delivering, as the bus does ------------------------------------------------

    async def _deliver(
        self, event_id: str, handler: Callable[[Connection], Awaitable[Any]], crash: bool
    ) -> str:
        async with self.db.pool.acquire() as conn:
            try:
                async with conn.transaction():
                    if not await claim_inbox(
                        conn, group="ledger.test", event_id=event_id, topic="t"
                    ):
                        return "duplicate"
                    await handler(conn)
                    if crash:
                        raise Crash
            except Crash:
                return "crashed"
        return "applied"

    def deliver(
        self, handler: Callable[[Connection], Awaitable[Any]], *, crash: bool = False
    ) -> None:
        """Deliver a new message; a crash before commit is followed by its redelivery."""
        event_id = str(uuid.uuid4())
        if crash:
            assert self.run(self._deliver(event_id, handler, crash=True)) == "crashed"
            self.check_against_model()  # nothing of the crashed attempt remains
        assert self.run(self._deliver(event_id, handler, crash=False)) == "applied"
        self.delivered.append((event_id, handler))

    # -- rules ---------------------------------------------------------------------

    @rule(
        task=st.sampled_from(TASKS),
        amount=st.integers(1, 6_000),
        approvers=st.booleans(),
        crash=st.booleans(),
    )
    def open_hold(self, task: str, amount: int, approvers: bool, crash: bool) -> None:
        command = OpenHoldCommand(
            tenant=TENANT,
            task_id=task,
            agent="writer",
            amount=amount,
            approvers=["alice"] if approvers else [],
        )
        self.deliver(lambda tx: self.ledger.open_hold(tx, command), crash=crash)
        if task in self.model.holds:
            return  # a repeat answers the first outcome
        denied = self.model.committed() + amount > HARD_LIMIT
        self.model.holds[task] = HoldModel(
            cap=amount,
            state="denied" if denied else "open",
            extension=amount,
            approvers=approvers,
        )

    @rule(task=st.sampled_from(TASKS), calls=st.integers(0, 4), crash=st.booleans())
    def record_usage(self, task: str, calls: int, crash: bool) -> None:
        command = RecordUsageCommand(
            usage_id=uuid.uuid4().hex,
            tenant=TENANT,
            agent="writer",
            task_id=task,
            kind="tool",
            resource="search",
            calls=calls,
            occurred_at=datetime.now(UTC),
        )
        hold = self.model.holds.get(task)
        if hold is not None and hold.state not in LIVE:
            with pytest.raises(HoldRejected, match=f"is {hold.state}"):
                self.deliver(lambda tx: self.ledger.record_usage(tx, command))
            return
        self.deliver(lambda tx: self.ledger.record_usage(tx, command), crash=crash)
        self.sent.append(command)
        cost = calls * PER_CALL
        self.model.costs[command.usage_id] = cost
        if hold is None:
            return
        left = hold.cap - hold.spent
        covered = min(cost, left)
        hold.spent += covered
        hold.overrun += cost - covered
        if hold.state == "open" and (cost > covered or covered == left):
            hold.state = "exhausted"
            hold.asking = hold.asking or hold.approvers

    @precondition(lambda self: self.sent)
    @rule(data=st.data())
    def repeat_usage(self, data: st.DataObject) -> None:
        """A producer sends the same usage again (a new event id)."""
        command = data.draw(st.sampled_from(self.sent))
        if self.model.holds.get(command.task_id, HoldModel(0, "open", 1, False)).state not in LIVE:
            with pytest.raises(HoldRejected):
                self.deliver(lambda tx: self.ledger.record_usage(tx, command))
            return
        self.deliver(lambda tx: self.ledger.record_usage(tx, command))

    @precondition(lambda self: self.delivered)
    @rule(data=st.data())
    def redeliver(self, data: st.DataObject) -> None:
        """Kafka delivers a message again (the same event id): the inbox skips it."""
        event_id, handler = data.draw(st.sampled_from(self.delivered))
        assert self.run(self._deliver(event_id, handler, crash=False)) == "duplicate"

    @rule(task=st.sampled_from(TASKS), crash=st.booleans())
    def close_hold(self, task: str, crash: bool) -> None:
        command = CloseHoldCommand(tenant=TENANT, task_id=task)
        hold = self.model.holds.get(task)
        if hold is None:
            with pytest.raises(NotFound):
                self.deliver(lambda tx: self.ledger.close_hold(tx, command))
            return
        self.deliver(lambda tx: self.ledger.close_hold(tx, command), crash=crash)
        if hold.state in LIVE:
            hold.state, hold.asking = "closed", False

    @rule(task=st.sampled_from(TASKS))
    def time_out(self, task: str) -> None:
        """The task's hold reaches its timeout and the sweep runs (which also refuses
        every extension request: this ledger has no credentials to ask with)."""
        self.run(
            self.db.execute(
                "UPDATE holds SET timeout_at = now() - interval '1 second'"
                " WHERE tenant = $1 AND task_id = $2 AND state IN ('open', 'exhausted')",
                TENANT,
                task,
            )
        )
        self.run(self.ledger.sweep())
        hold = self.model.holds.get(task)
        if hold is not None and hold.state in LIVE:
            hold.state = "expired"
        for each in self.model.holds.values():
            each.asking = False

    @rule(task=st.sampled_from(TASKS), approve=st.booleans(), crash=st.booleans())
    def answer(self, task: str, approve: bool, crash: bool) -> None:
        """An approver answers the task's extension request (or a stale one)."""
        rows = self.run(
            self.db.fetch(
                "SELECT approval_id FROM holds WHERE tenant = $1 AND task_id = $2", TENANT, task
            )
        )
        approval_id = (rows[0]["approval_id"] if rows else None) or "ledger.extension.stale"
        now = datetime.now(UTC)
        event = ApprovalEvent(
            type="approval.decided",
            approval_id=approval_id,
            thread_id=approval_id,
            tenant=TENANT,
            requester="ledger",
            approvers=["alice"],
            task_id=task,
            question="more?",
            options=["approve", "deny"],
            deadline=now,
            status="decided",
            decision="approve" if approve else "deny",
            decided_by="alice",
            decided_at=now,
        )
        self.deliver(lambda tx: self.ledger.on_approval(tx, event), crash=crash)
        hold = self.model.holds.get(task)
        if hold is None or not hold.asking:
            return
        hold.asking = False
        if approve and self.model.committed() + hold.extension <= HARD_LIMIT:
            hold.cap += hold.extension
            hold.state = "open"

    # -- checks --------------------------------------------------------------------

    @invariant()
    def check_against_model(self) -> None:
        rows = self.run(self.db.fetch("SELECT * FROM holds WHERE tenant = $1", TENANT))
        found = {
            r["task_id"]: (r["cap"], r["spent"], r["overrun"], r["state"], r["approval_id"])
            for r in rows
        }
        expected = {
            task: (h.cap, h.spent, h.overrun, h.state, h.asking)
            for task, h in self.model.holds.items()
        }
        assert {t: (*v[:4], v[4] is not None) for t, v in found.items()} == expected
        costs = self.run(self.db.fetch("SELECT usage_id, cost FROM usage"))
        assert {r["usage_id"]: r["cost"] for r in costs} == self.model.costs
        self.run(check_invariants(self.db.fetch))


@pytest.mark.usefixtures("machine_dsn")
def test_holds_usage_and_answers_keep_the_books() -> None:
    run_machine(ServiceMachine, examples=30, steps=30)
