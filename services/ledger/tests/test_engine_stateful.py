"""The double-entry core against real PostgreSQL, driven by random sequences of operations.

A model in Python predicts every balance and every refusal; after each step
the database must agree with it, and the invariants must hold: total debits
equal total credits, no account breaks its limit flag, a hold never has more
captured than it reserved, a hold resolves at most once, and a repeated
transfer id returns the first result. "Crashes" run an operation in a
transaction that is then rolled back: nothing of it may remain.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import invariant, rule

from mainstay_common.errors import InvalidArgument
from mainstay_ledger import engine
from mainstay_ledger.engine import DEBITS_MUST_NOT_EXCEED_CREDITS, LedgerRejection

from .machines import DatabaseMachine, run_machine

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

pytestmark = pytest.mark.real

TENANT = "acme"
TASKS = 3


class Rollback(Exception):
    """Raised inside a transaction to undo it, as a crash before commit would."""


@dataclass
class Model:
    balances: dict[str, list[int]] = field(default_factory=dict)
    """account -> [debits_pending, debits_posted, credits_pending, credits_posted]"""
    holds: dict[str, dict[str, Any]] = field(default_factory=dict)
    """hold id -> {remaining, state, task}"""
    applied: dict[str, tuple[str, Any]] = field(default_factory=dict)
    """transfer id -> (operation, arguments) of what was applied"""

    def add(self, account: str, dp: int = 0, dpo: int = 0, cp: int = 0, cpo: int = 0) -> None:
        b = self.balances[account]
        b[0], b[1], b[2], b[3] = b[0] + dp, b[1] + dpo, b[2] + cp, b[3] + cpo


class LedgerMachine(DatabaseMachine):
    def __init__(self) -> None:
        super().__init__()
        self.model = Model()
        accounts = {"funding": (), "agent": (DEBITS_MUST_NOT_EXCEED_CREDITS,), "provider": ()}
        accounts |= {f"hold:{t}": () for t in range(TASKS)}
        for name, flags in accounts.items():
            self.run(
                self.tx(
                    lambda c, n=name, f=flags: engine.open_account(  # type: ignore[misc]
                        c, id=n, tenant=TENANT, kind=n.split(":")[0], currency="USD", flags=f
                    )
                )
            )
            self.model.balances[name] = [0, 0, 0, 0]
        self.hold_seq = 0

    async def tx(self, fn: Callable[[Any], Awaitable[Any]], *, crash: bool = False) -> Any:
        async with self.db.pool.acquire() as conn:
            try:
                async with conn.transaction():
                    result = await fn(conn)
                    if crash:
                        raise Rollback
                    return result
            except Rollback:
                return None

    # -- operations ------------------------------------------------------------

    def _expect(
        self, op: Callable[[Any], Awaitable[engine.Posting]], predicted: str | None, crash: bool
    ) -> engine.Posting | None:
        """Run ``op``; ``predicted`` is the rejection reason the model expects, or None."""
        try:
            posting = self.run(self.tx(op, crash=crash))
        except LedgerRejection as rejection:
            assert rejection.reason == predicted, str(rejection)  # noqa: PT017
            return None
        assert predicted is None, f"expected {predicted}, the ledger accepted"
        return posting  # type: ignore[no-any-return]

    @rule(amount=st.integers(1, 1000), crash=st.booleans())
    def fund(self, amount: int, crash: bool) -> None:
        tid = f"fund-{uuid.uuid4().hex[:8]}"
        posting = self._expect(
            lambda c: engine.post(
                c,
                id=tid,
                tenant=TENANT,
                debit="funding",
                credit="agent",
                amount=amount,
                code="fund",
            ),
            None,
            crash,
        )
        if not crash:
            assert posting is not None
            assert not posting.replayed
            self.model.add("funding", dpo=amount)
            self.model.add("agent", cpo=amount)
            self.model.applied[tid] = ("fund", amount)

    @rule(task=st.integers(0, TASKS - 1), amount=st.integers(1, 300), crash=st.booleans())
    def open_hold(self, task: int, amount: int, crash: bool) -> None:
        self.hold_seq += 1
        hid = f"hold-{self.hold_seq}"
        agent = self.model.balances["agent"]
        fits = agent[0] + agent[1] + amount <= agent[3]
        self._expect(
            lambda c: engine.post(
                c,
                id=hid,
                tenant=TENANT,
                debit="agent",
                credit=f"hold:{task}",
                amount=amount,
                code="hold.open",
                pending=True,
                timeout_at=datetime.now(UTC) + timedelta(hours=1),
                task_id=f"task-{task}",
            ),
            None if fits else "exceeds_credits",
            crash,
        )
        if fits and not crash:
            self.model.add("agent", dp=amount)
            self.model.add(f"hold:{task}", cp=amount)
            self.model.holds[hid] = {"remaining": amount, "state": "open", "task": task}
            self.model.applied[hid] = ("hold", amount)

    def _holds(self) -> list[str]:
        return sorted(self.model.holds)

    @rule(data=st.data(), amount=st.integers(1, 200), crash=st.booleans())
    def capture(self, data: st.DataObject, amount: int, crash: bool) -> None:
        if not self.model.holds:
            return
        hid = data.draw(st.sampled_from(self._holds()))
        hold = self.model.holds[hid]
        # The edges matter most: all that is left, and one more than that.
        edge = data.draw(st.sampled_from(["random", "all", "one more"]))
        if edge != "random" and hold["remaining"] > 0:
            amount = hold["remaining"] + (edge == "one more")
        uid = f"use-{uuid.uuid4().hex[:8]}"
        if hold["state"] != "open":
            predicted: str | None = "pending_resolved"
        elif amount > hold["remaining"]:
            predicted = "exceeds_pending"
        else:
            predicted = None
        posting = self._expect(
            lambda c: engine.capture(
                c, id=uid, tenant=TENANT, pending_id=hid, amount=amount, code="usage"
            ),
            predicted,
            crash,
        )
        if predicted is None and not crash:
            assert posting is not None
            hold["remaining"] -= amount
            self.model.add("agent", dp=-amount, dpo=amount)
            self.model.add(f"hold:{hold['task']}", cp=-amount, cpo=amount)
            self.model.applied[uid] = ("capture", (hid, amount))

    @rule(data=st.data(), expire=st.booleans(), crash=st.booleans())
    def resolve(self, data: st.DataObject, expire: bool, crash: bool) -> None:
        if not self.model.holds:
            return
        hid = data.draw(st.sampled_from(self._holds()))
        hold = self.model.holds[hid]
        predicted = None if hold["state"] == "open" else "pending_resolved"
        kind: Literal["void", "expire"] = "expire" if expire else "void"
        rid = f"{kind}-{uuid.uuid4().hex[:8]}"
        self._expect(
            lambda c: engine.resolve(
                c, id=rid, tenant=TENANT, pending_id=hid, kind=kind, code=f"hold.{kind}"
            ),
            predicted,
            crash,
        )
        if crash:
            return
        if predicted is None:
            self.model.add("agent", dp=-hold["remaining"])
            self.model.add(f"hold:{hold['task']}", cp=-hold["remaining"])
            hold["remaining"], hold["state"] = 0, "expired" if expire else "voided"

    @rule(data=st.data())
    def repeat(self, data: st.DataObject) -> None:
        """A redelivered command: the same transfer id returns the first result, changes nothing."""
        if not self.model.applied:
            return
        tid = data.draw(st.sampled_from(sorted(self.model.applied)))
        op, args = self.model.applied[tid]
        if op == "fund":

            def call(c):
                return engine.post(
                    c,
                    id=tid,
                    tenant=TENANT,
                    debit="funding",
                    credit="agent",
                    amount=args,
                    code="fund",
                )
        elif op == "hold":
            hold = self.model.holds[tid]
            call = lambda c: engine.post(  # noqa: E731
                c,
                id=tid,
                tenant=TENANT,
                debit="agent",
                credit=f"hold:{hold['task']}",
                amount=args,
                code="hold.open",
                pending=True,
                timeout_at=datetime.now(UTC),
            )
        else:

            def call(c):
                return engine.capture(
                    c,
                    id=tid,
                    tenant=TENANT,
                    pending_id=args[0],
                    amount=args[1],
                    code="usage",
                )

        posting = self.run(self.tx(call))
        assert posting.replayed
        assert posting.transfer.id == tid

    @rule(
        amount=st.one_of(
            st.integers(max_value=0),
            st.just(2**63),
            st.floats(1, 10),
            st.just(True),
            st.text(max_size=3),
        )
    )
    def bad_amount(self, amount: Any) -> None:
        with pytest.raises(InvalidArgument, match="amount"):
            self.run(
                self.tx(
                    lambda c: engine.post(
                        c,
                        id="bad",
                        tenant=TENANT,
                        debit="funding",
                        credit="agent",
                        amount=amount,
                        code="x",
                    )
                )
            )

    @rule()
    def conflicting_reuse(self) -> None:
        if not self.model.applied:
            return
        tid = min(self.model.applied)
        with pytest.raises(engine.TransferConflict):
            self.run(
                self.tx(
                    lambda c: engine.post(
                        c,
                        id=tid,
                        tenant=TENANT,
                        debit="funding",
                        credit="provider",
                        amount=1,
                        code="x",
                    )
                )
            )

    # -- what must always hold ---------------------------------------------------

    @invariant()
    def database_matches_the_model_and_the_books_balance(self) -> None:
        rows = self.run(self.db.fetch("SELECT * FROM accounts ORDER BY id"))
        actual = {
            r["id"]: [
                r["debits_pending"],
                r["debits_posted"],
                r["credits_pending"],
                r["credits_posted"],
            ]
            for r in rows
        }
        assert actual == self.model.balances
        assert sum(b[0] + b[1] for b in actual.values()) == sum(
            b[2] + b[3] for b in actual.values()
        )
        for r in rows:
            if DEBITS_MUST_NOT_EXCEED_CREDITS in r["flags"]:
                assert r["debits_pending"] + r["debits_posted"] <= r["credits_posted"]
        holds = self.run(
            self.db.fetch(
                "SELECT p.id, p.amount, p.remaining, p.state,"
                " coalesce(sum(c.amount) FILTER (WHERE c.kind = 'capture'), 0) AS captured,"
                " count(c.*) FILTER (WHERE c.kind IN ('void', 'expire')) AS resolutions"
                " FROM transfers p LEFT JOIN transfers c ON c.pending_id = p.id"
                " WHERE p.kind = 'pending' GROUP BY p.id"
            )
        )
        for h in holds:
            assert h["captured"] <= h["amount"]
            assert h["resolutions"] == (0 if h["state"] == "open" else 1)
            if h["state"] == "open":
                assert h["remaining"] == h["amount"] - h["captured"]
            assert (h["remaining"], h["state"]) == (
                self.model.holds[h["id"]]["remaining"],
                self.model.holds[h["id"]]["state"],
            )


@pytest.mark.usefixtures("machine_dsn")
def test_the_books_always_balance() -> None:
    run_machine(LedgerMachine, examples=60, steps=40)
