"""Messages owned by the billing ledger: holds, usage, and what became of them.

A task reserves its cap before it spends: ``ledger.cmd.open-hold.v1`` answers
``hold.opened`` (or ``hold.denied`` when a hard budget would break) on
``ledger.evt.ledger.v1``. ``ledger.cmd.record-usage.v1`` posts one priced
unit of work against the task's hold, idempotent by ``usage_id``; usage the
hold cannot cover answers ``hold.exhausted``, and an extension goes to a human
for approval (``ledger.cmd.extend-hold.v1`` asks for one explicitly).
``ledger.cmd.close-hold.v1`` ends the hold and releases the rest.

Every command is keyed by task, so one task's commands stay in order on their
topic; amounts are integers of micro-units of a currency.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, StrictInt, computed_field

from mainstay_contracts._registry import REGISTRY, TopicSpec

__all__ = [
    "CLOSE_HOLD",
    "EXTEND_HOLD",
    "LEDGER_EVENTS",
    "OPEN_HOLD",
    "RECORD_USAGE",
    "BudgetSnapshot",
    "CloseHoldCommand",
    "ExtendHoldCommand",
    "HoldSnapshot",
    "LedgerEvent",
    "LedgerEventType",
    "OpenHoldCommand",
    "RecordUsageCommand",
    "UsageKind",
    "UsageSnapshot",
]

UsageKind = Literal["model", "tool"]
Micros = Annotated[StrictInt, Field(gt=0, le=2**63 - 1)]
"""A positive amount of micro-units (an integer: 1.5 or "10" is refused)."""
Name = Annotated[str, Field(min_length=1, max_length=200)]
Currency = Annotated[str, Field(pattern=r"^([A-Z]{3})?$")]
"""An ISO 4217 code, or empty for the ledger's configured currency."""


class OpenHoldCommand(BaseModel):
    """Reserve a task's cap before it spends; the same task opens one hold."""

    model_config = ConfigDict(extra="ignore")

    tenant: Name
    task_id: Name
    """The hold's identity and idempotency key: one task, one hold."""
    agent: Name
    team: str = Field(default="", max_length=200)
    amount: Micros
    """The cap: usage beyond it waits for an approved extension."""
    currency: Currency = ""
    timeout_s: int | None = Field(default=None, ge=1, le=30 * 86_400)
    """Released automatically after this long; None: the ledger's default."""
    approvers: list[Name] = Field(default_factory=list, max_length=20)
    """Humans (identity principals of kind user) asked to approve an extension."""
    extension_amount: StrictInt | None = Field(default=None, gt=0, le=2**63 - 1)
    """What an extension adds when the hold runs out; None: the cap again."""


class RecordUsageCommand(BaseModel):
    """One unit of spend; keyed by task, so a task's usage stays in order."""

    model_config = ConfigDict(extra="ignore")

    usage_id: str = Field(min_length=1, max_length=300)
    """Idempotency key: a repeat of the same id is posted once."""
    tenant: str = Field(min_length=1, max_length=200)
    agent: str = Field(default="", max_length=200)
    task_id: str = Field(min_length=1, max_length=200)
    step: int = Field(default=0, ge=0)
    kind: UsageKind
    resource: str = Field(min_length=1, max_length=200)
    """The model name, or the tool name."""
    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    cached_tokens: int = Field(default=0, ge=0)
    calls: int = Field(default=0, ge=0)
    list_price_micros: int | None = Field(default=None, ge=0)
    """The producer's own price for this usage (a tool's price per call), if it has one."""
    occurred_at: datetime


class CloseHoldCommand(BaseModel):
    """The task ended: release what its hold did not spend."""

    model_config = ConfigDict(extra="ignore")

    tenant: Name
    task_id: Name
    reason: str = Field(default="", max_length=500)


class ExtendHoldCommand(BaseModel):
    """Ask a human to let the task spend ``amount`` more than its hold."""

    model_config = ConfigDict(extra="ignore")

    tenant: Name
    task_id: Name
    amount: Micros
    reason: str = Field(default="", max_length=2000)
    approvers: list[Name] = Field(default_factory=list, max_length=20)
    """Who is asked; empty: the hold's own approvers."""


class HoldSnapshot(BaseModel):
    """A hold as it stands after the event."""

    model_config = ConfigDict(extra="ignore")

    cap: int
    """Everything reserved so far: the amount opened plus approved extensions."""
    spent: int
    """Usage covered by the hold."""
    remaining: int
    overrun: int = 0
    """Usage beyond the hold (at most the one unit that ran it out, each time)."""
    state: Literal["open", "exhausted", "closing", "closed", "expired", "denied"]
    timeout_at: datetime


class UsageSnapshot(BaseModel):
    """One recorded usage and how it was priced."""

    model_config = ConfigDict(extra="ignore")

    usage_id: str
    kind: UsageKind
    resource: str
    step: int
    cost: int
    price_version: int | None
    """The price-book version used; None: the producer's list price."""
    covered: int
    """The part of the cost the hold covered (the rest is overrun)."""


class BudgetSnapshot(BaseModel):
    """A budget and how much of its period is committed."""

    model_config = ConfigDict(extra="ignore")

    budget_id: str
    scope: Literal["tenant", "team", "agent"]
    name: str
    period: Literal["day", "month"]
    period_start: datetime
    soft_limit: int | None
    hard_limit: int | None
    committed: int
    """Spent in the period plus what open holds still reserve."""


LedgerEventType = Literal[
    "hold.opened",
    "hold.denied",
    "hold.exhausted",
    "hold.extension-requested",
    "hold.extended",
    "hold.extension-denied",
    "hold.closed",
    "hold.expired",
    "usage.recorded",
    "budget.soft-limit",
]


class LedgerEvent(BaseModel):
    """Something the ledger did; keyed by task (budget events by budget)."""

    model_config = ConfigDict(extra="ignore")

    type: LedgerEventType
    tenant: str
    task_id: str = ""
    agent: str = ""
    team: str = ""
    currency: str
    hold: HoldSnapshot | None = None
    usage: UsageSnapshot | None = None
    budget: BudgetSnapshot | None = None
    reason: str = ""
    """Why a hold was denied, closed or not extended."""
    approval_id: str = ""
    """The approval asked for (``hold.extension-requested``) or answered."""
    occurred_at: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def key(self) -> str:
        if self.task_id:
            return self.task_id
        return f"budget:{self.budget.budget_id}" if self.budget else self.tenant


OPEN_HOLD = REGISTRY.register(
    TopicSpec(
        name="ledger.cmd.open-hold.v1",
        owner="ledger",
        kind="cmd",
        key_field="task_id",
        payload=OpenHoldCommand,
        partitions=6,
        description="Reserve a task's cap before it spends (answered by hold.opened/denied).",
    )
)

RECORD_USAGE = REGISTRY.register(
    TopicSpec(
        name="ledger.cmd.record-usage.v1",
        owner="ledger",
        kind="cmd",
        key_field="task_id",
        payload=RecordUsageCommand,
        partitions=6,
        description="Usage to post against a task's budget hold (model tokens, tool calls).",
    )
)

CLOSE_HOLD = REGISTRY.register(
    TopicSpec(
        name="ledger.cmd.close-hold.v1",
        owner="ledger",
        kind="cmd",
        key_field="task_id",
        payload=CloseHoldCommand,
        partitions=6,
        description="A task ended: release what its hold did not spend.",
    )
)

EXTEND_HOLD = REGISTRY.register(
    TopicSpec(
        name="ledger.cmd.extend-hold.v1",
        owner="ledger",
        kind="cmd",
        key_field="task_id",
        payload=ExtendHoldCommand,
        partitions=6,
        description="Ask a human to approve more spend for a task than its hold allows.",
    )
)

LEDGER_EVENTS = REGISTRY.register(
    TopicSpec(
        name="ledger.evt.ledger.v1",
        owner="ledger",
        kind="evt",
        key_field="key",
        payload=LedgerEvent,
        partitions=6,
        description="Holds opened, denied, exhausted, extended and closed; usage recorded;"
        " budgets past their soft limit.",
        event_types=tuple(f"mainstay.ledger.{t}" for t in get_args(LedgerEventType)),
    )
)
