"""Messages owned by the identity service: mail between agents and humans, and approvals.

``identity.cmd.send-mail.v1`` delivers a message to the inboxes of its
recipients (the Kafka twin of ``POST /v1/mail``); ``identity.evt.mailbox.v1``
announces every delivery and every read. Both are keyed by thread, so a
conversation stays in order.

A message of kind ``approval-request`` asks its human recipients a question
with options and a deadline; a message of kind ``approval-reply`` from one of
them answers it. ``identity.evt.approval.v1`` announces each request
(``approval.requested``) and its outcome (``approval.decided``: answered, or
expired at the deadline with the request's ``on_expiry`` option), keyed by the
requesting task so a task's approvals stay in order.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, computed_field, model_validator

from mainstay_contracts._registry import REGISTRY, TopicSpec

__all__ = [
    "APPROVAL_EVENTS",
    "MAILBOX_EVENTS",
    "OPTIONAL_ID_PATTERN",
    "SEND_MAIL",
    "ApprovalAnswer",
    "ApprovalEvent",
    "ApprovalRequest",
    "Attachment",
    "MailDraft",
    "MailSnapshot",
    "MailboxEvent",
    "SendMailCommand",
]


class Attachment(BaseModel):
    """Structured data riding on a message (a plan, a diff, a receipt)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    content_type: str = Field(default="application/json", max_length=200)
    data: Any = None


_ID_PATTERN = r"^[A-Za-z0-9._:@-]+$"
OPTIONAL_ID_PATTERN = r"^[A-Za-z0-9._:@-]*$"
"""An id, or empty (one is made up)."""
Option = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,39}$")]
MailKind = Literal["message", "approval-request", "approval-reply"]


class ApprovalRequest(BaseModel):
    """What an ``approval-request`` message asks of its human recipients."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=2000)
    options: list[Option] = Field(
        default_factory=lambda: ["approve", "deny"], min_length=2, max_length=10
    )
    """The answers a human may give; ``approve`` and ``deny`` unless told otherwise."""
    deadline: AwareDatetime
    """Unanswered at this moment, the request is decided as ``on_expiry``."""
    on_expiry: Option = "deny"
    task_id: str = Field(default="", max_length=200)
    """The task waiting for the answer, if a task asks."""

    @model_validator(mode="after")
    def _options_hold_the_expiry_outcome(self) -> Self:
        if len(set(self.options)) != len(self.options):
            raise ValueError("options: each option may appear once")
        if self.on_expiry not in self.options:
            raise ValueError(f"on_expiry: '{self.on_expiry}' is not one of the options")
        return self


class ApprovalAnswer(BaseModel):
    """What an ``approval-reply`` message answers."""

    model_config = ConfigDict(extra="forbid")

    approval_id: str = Field(min_length=1, max_length=200, pattern=_ID_PATTERN)
    """The ``message_id`` of the approval request."""
    decision: Option
    reason: str = Field(default="", max_length=4000)


class MailDraft(BaseModel):
    """What a sender writes; the sender and the tenant come from its token.

    ``kind`` ``approval-request`` needs ``approval``; ``approval-reply`` needs
    ``answer`` and goes to the requester (``to`` may add recipients).
    """

    model_config = ConfigDict(extra="forbid")

    kind: MailKind = "message"

    message_id: str = Field(default="", max_length=200, pattern=OPTIONAL_ID_PATTERN)
    """Idempotency key: the same id sent twice is delivered once. Empty: one is made up."""
    thread_id: str = Field(default="", max_length=200, pattern=OPTIONAL_ID_PATTERN)
    """The conversation; empty starts a new one, named after the message."""
    to: list[str] = Field(default_factory=list, max_length=100)
    subject: str = Field(default="", max_length=500)
    body: str = Field(default="", max_length=100_000)
    attachments: list[Attachment] = Field(default_factory=list, max_length=20)
    labels: list[str] = Field(default_factory=list, max_length=20)
    approval: ApprovalRequest | None = None
    answer: ApprovalAnswer | None = None

    @model_validator(mode="after")
    def _kind_matches_its_parts(self) -> Self:
        if (self.kind == "approval-request") != (self.approval is not None):
            raise ValueError("approval: required for kind 'approval-request', and only for it")
        if (self.kind == "approval-reply") != (self.answer is not None):
            raise ValueError("answer: required for kind 'approval-reply', and only for it")
        if self.kind != "approval-reply" and not self.to:
            raise ValueError("to: at least one recipient is required")
        return self


class SendMailCommand(MailDraft):
    """Send a message over Kafka; ``token`` is the sender's bearer token."""

    model_config = ConfigDict(extra="ignore")

    message_id: str = Field(min_length=1, max_length=200, pattern=_ID_PATTERN)
    token: str = Field(min_length=1, max_length=8192)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def thread_key(self) -> str:
        return self.thread_id or self.message_id


class MailSnapshot(BaseModel):
    """A message as events show it (no body: that stays in the inboxes)."""

    model_config = ConfigDict(extra="ignore")

    message_id: str
    thread_id: str
    tenant: str
    sender: str
    to: list[str]
    subject: str = ""
    kind: MailKind = "message"
    sent_at: datetime


class MailboxEvent(BaseModel):
    """One delivery into an inbox, or one read."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["delivered", "read"]
    recipient: str
    message: MailSnapshot
    occurred_at: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def thread_key(self) -> str:
        return self.message.thread_id


class ApprovalEvent(BaseModel):
    """An approval request was made, or decided (answered, or expired at its deadline)."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["approval.requested", "approval.decided"]
    approval_id: str
    thread_id: str
    tenant: str
    requester: str
    approvers: list[str]
    """The human recipients, who alone may answer."""
    task_id: str = ""
    question: str
    options: list[str]
    deadline: datetime
    status: Literal["pending", "decided", "expired"]
    decision: str | None = None
    """The chosen option; for ``expired``, the request's ``on_expiry``."""
    reason: str = ""
    decided_by: str | None = None
    """The human who answered; ``None`` while pending and when expired."""
    decided_at: datetime | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def approval_key(self) -> str:
        return self.task_id or self.approval_id


SEND_MAIL = REGISTRY.register(
    TopicSpec(
        name="identity.cmd.send-mail.v1",
        owner="identity",
        kind="cmd",
        key_field="thread_key",
        payload=SendMailCommand,
        partitions=6,
        description="Deliver a message to inboxes (the Kafka twin of POST /v1/mail).",
    )
)

MAILBOX_EVENTS = REGISTRY.register(
    TopicSpec(
        name="identity.evt.mailbox.v1",
        owner="identity",
        kind="evt",
        key_field="thread_key",
        payload=MailboxEvent,
        partitions=6,
        description="Every delivery into an inbox and every read.",
        event_types=("mainstay.identity.mail.delivered", "mainstay.identity.mail.read"),
    )
)

APPROVAL_EVENTS = REGISTRY.register(
    TopicSpec(
        name="identity.evt.approval.v1",
        owner="identity",
        kind="evt",
        key_field="approval_key",
        payload=ApprovalEvent,
        partitions=6,
        description="Approval requests and their outcomes (answered by a human, or expired).",
        event_types=(
            "mainstay.identity.approval.requested",
            "mainstay.identity.approval.decided",
        ),
    )
)
