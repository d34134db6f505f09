"""Messages owned by the identity service: mail between agents and humans.

``identity.cmd.send-mail.v1`` delivers a message to the inboxes of its
recipients (the Kafka twin of ``POST /v1/mail``); ``identity.evt.mailbox.v1``
announces every delivery and every read. Both are keyed by thread, so a
conversation stays in order.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from mainstay_contracts._registry import REGISTRY, TopicSpec

__all__ = [
    "MAILBOX_EVENTS",
    "SEND_MAIL",
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


class MailDraft(BaseModel):
    """What a sender writes; the sender and the tenant come from its token."""

    model_config = ConfigDict(extra="forbid")

    message_id: str = Field(default="", max_length=200, pattern=r"^[A-Za-z0-9._:@-]*$")
    """Idempotency key: the same id sent twice is delivered once. Empty: one is made up."""
    thread_id: str = Field(default="", max_length=200, pattern=r"^[A-Za-z0-9._:@-]*$")
    """The conversation; empty starts a new one, named after the message."""
    to: list[str] = Field(min_length=1, max_length=100)
    subject: str = Field(default="", max_length=500)
    body: str = Field(default="", max_length=100_000)
    attachments: list[Attachment] = Field(default_factory=list, max_length=20)
    labels: list[str] = Field(default_factory=list, max_length=20)


class SendMailCommand(MailDraft):
    """Send a message over Kafka; ``token`` is the sender's bearer token."""

    model_config = ConfigDict(extra="ignore")

    message_id: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:@-]+$")
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
