"""The Kafka doors: ``identity.cmd.send-mail.v1``, and the email copies of deliveries.

``send-mail`` is the asynchronous twin of ``POST /v1/mail``. The command
carries the sender's token, checked exactly as over HTTP; a bad token, an
unknown recipient, a taken message id or an answer the approval refuses is a
permanent failure (DLQ, with the reason). The same ``message_id`` is
delivered once.

``email-out`` (only with an SMTP server configured) reads the service's own
``identity.evt.mailbox.v1`` and emails each delivery to a principal with an
email address.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mainstay_contracts.identity import MAILBOX_EVENTS, SEND_MAIL, MailDraft

if TYPE_CHECKING:
    from mainstay_common.auth import TokenVerifier
    from mainstay_common.bus import Bus, Event
    from mainstay_contracts.identity import MailboxEvent, SendMailCommand
    from mainstay_identity.email_bridge import EmailOutbound
    from mainstay_identity.mail import MailService

__all__ = ["register_kafka_handlers"]


def register_kafka_handlers(
    bus: Bus,
    mail: MailService,
    verifier: TokenVerifier,
    outbound: EmailOutbound | None,
) -> None:
    @bus.subscriber(SEND_MAIL, handler="send-mail")
    async def send_mail(event: Event[SendMailCommand]) -> None:
        sender = await verifier.verify(event.payload.token)
        draft = MailDraft.model_validate(
            event.payload.model_dump(include=set(MailDraft.model_fields))
        )
        await mail.send(sender, draft)

    if outbound is not None:

        @bus.subscriber(MAILBOX_EVENTS, handler="email-out")
        async def email_out(event: Event[MailboxEvent]) -> None:
            await outbound.deliver(event.payload)
