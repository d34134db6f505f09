"""The Kafka door: ``identity.cmd.send-mail.v1``, the asynchronous twin of ``POST /v1/mail``.

The command carries the sender's token, checked exactly as over HTTP; a bad
token, an unknown recipient or a taken message id is a permanent failure (DLQ,
with the reason). The same ``message_id`` is delivered once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mainstay_contracts.identity import SEND_MAIL, MailDraft

if TYPE_CHECKING:
    from mainstay_common.auth import TokenVerifier
    from mainstay_common.bus import Bus, Event
    from mainstay_contracts.identity import SendMailCommand
    from mainstay_identity.mail import MailService

__all__ = ["register_kafka_handlers"]


def register_kafka_handlers(bus: Bus, mail: MailService, verifier: TokenVerifier) -> None:
    @bus.subscriber(SEND_MAIL, handler="send-mail")
    async def send_mail(event: Event[SendMailCommand]) -> None:
        sender = await verifier.verify(event.payload.token)
        draft = MailDraft.model_validate(
            event.payload.model_dump(include=set(MailDraft.model_fields))
        )
        await mail.send(sender, draft)
