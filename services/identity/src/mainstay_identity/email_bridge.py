"""The email bridge: mail copied out to humans over SMTP, and their replies taken back in.

Outbound, every ``delivered`` event (``identity.evt.mailbox.v1``) for a
principal with an email address becomes an email sent through the configured
SMTP server (``aiosmtplib``). Each copy gets a random reply token: the email's
``Reply-To`` is ``reply+<token>@<mail_domain>``, so the reply names the
message and the person it was sent to. A copy is sent at least once: it is
marked sent after the server accepts it, and a failed send is retried by the
bus (4xx and connection trouble) or dead-lettered (5xx).

Inbound, an SMTP listener (``aiosmtpd``) accepts mail for two kinds of
address on ``mail_domain`` and refuses every other address at ``RCPT``:

* ``reply+<token>@<domain>``: a reply to a copy. Its ``From`` must be the
  address the copy went to. A reply to an approval request answers it: the
  first line starts with one of the options (``approve``, ``deny`` ...), the
  rest is the reason. Any other reply goes back into the thread, to the
  message's sender.
* ``<name>+<tenant>@<domain>``: a new message to principal ``name``, from
  the principal of ``tenant`` whose email address is the ``From``.

An accepted email is in the inboxes before the listener answers ``250``; one
it cannot use is refused with a ``550`` that says why (the human's mail
server turns it into a bounce they can read). The message id of an inbound
email derives from its ``Message-ID``, so a resent email is delivered once.

The listener trusts the ``From`` header as far as the reply token goes: the
token is a 128-bit secret only the recipient's mailbox has seen. Put the
listener behind the organisation's mail gateway (which checks SPF/DKIM)
rather than on the open internet.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parseaddr
from typing import TYPE_CHECKING, Any

import aiosmtplib
from aiosmtpd.smtp import SMTP

from mainstay_common.auth import Principal
from mainstay_common.errors import (
    DependencyUnavailable,
    MainstayError,
    PermanentError,
    RetryableError,
)
from mainstay_contracts.identity import ApprovalAnswer, MailDraft

if TYPE_CHECKING:
    from aiosmtpd.smtp import Envelope, Session

    from mainstay_common.db import Database
    from mainstay_contracts.identity import MailboxEvent
    from mainstay_identity.mail import MailService
    from mainstay_identity.settings import IdentitySettings

__all__ = ["EmailInbound", "EmailOutbound", "parse_answer"]

_log = logging.getLogger("mainstay.identity.email")
_REPLY = re.compile(r"^reply\+(?P<token>[a-f0-9]{32})$")
_NEW = re.compile(r"^(?P<name>[A-Za-z0-9._@-]{1,128})\+(?P<tenant>[A-Za-z0-9._@-]{1,128})$")
_QUOTE_HEADER = re.compile(r"^(On .+ wrote:|-+ ?Original Message ?-+|From: .+)$")


def _from_address(settings: IdentitySettings) -> str:
    return settings.email_from or f"mainstay@{settings.mail_domain}"


class EmailOutbound:
    """Sends the email copy of one delivery (the ``email-out`` handler of mailbox events)."""

    def __init__(self, database: Database, settings: IdentitySettings) -> None:
        self._database = database
        self._settings = settings

    async def deliver(self, event: MailboxEvent) -> None:
        if event.type != "delivered":
            return
        tenant, message_id = event.message.tenant, event.message.message_id
        row = await self._database.fetchrow(
            "SELECT p.email, m.*, to_jsonb(a.*) AS approval_state FROM principals p"
            " JOIN messages m ON m.tenant = p.tenant AND m.message_id = $3"
            " LEFT JOIN approvals a ON a.tenant = m.tenant AND a.approval_id = m.message_id"
            " WHERE p.tenant = $1 AND p.name = $2",
            tenant,
            event.recipient,
            message_id,
        )
        if row is None or not row["email"]:
            return  # no address: the inbox is the only copy
        copy = await self._database.fetchrow(
            "WITH added AS (INSERT INTO emails (tenant, message_id, recipient, address,"
            " reply_token) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING *)"
            " SELECT * FROM added UNION ALL SELECT * FROM emails"
            " WHERE tenant = $1 AND message_id = $2 AND recipient = $3",
            tenant,
            message_id,
            event.recipient,
            row["email"],
            secrets.token_hex(16),
        )
        assert copy is not None
        if copy["sent_at"] is not None:
            return  # a redelivered event: this copy went out already
        await self._send(self.compose(row, copy["address"], copy["reply_token"]))
        await self._database.execute(
            "UPDATE emails SET sent_at = now() WHERE tenant = $1 AND message_id = $2"
            " AND recipient = $3",
            tenant,
            message_id,
            event.recipient,
        )

    def compose(self, row: Any, address: str, token: str) -> EmailMessage:
        domain = self._settings.mail_domain
        approval = json.loads(row["approval_state"]) if row["approval_state"] else None
        email = EmailMessage()
        email["From"] = Address(
            display_name=f"{row['sender']} via Mainstay", addr_spec=_from_address(self._settings)
        )
        email["To"] = address
        email["Reply-To"] = f"reply+{token}@{domain}"
        email["Message-ID"] = f"<{token}@{domain}>"
        email["Subject"] = (
            f"[Approval needed] {row['subject']}" if approval else row["subject"] or "(no subject)"
        )
        email["X-Mainstay-Tenant"] = row["tenant"]
        email["X-Mainstay-Message-Id"] = row["message_id"]
        email["X-Mainstay-Thread-Id"] = row["thread_id"]
        text = row["body"]
        if approval:
            text = (text + "\n\n" if text else "") + _approval_text(approval)
        email.set_content(text or "(no text)")
        for attachment in json.loads(row["attachments"]):
            email.add_attachment(
                json.dumps(attachment["data"], indent=2).encode(),
                maintype="application",
                subtype="json",
                filename=f"{attachment['name']}.json",
            )
        return email

    async def _send(self, email: EmailMessage) -> None:
        settings = self._settings
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        try:
            await aiosmtplib.send(
                email,
                hostname=settings.smtp_host,
                port=settings.smtp_port,
                username=settings.smtp_username,
                password=password,
                use_tls=settings.smtp_security == "tls",
                start_tls={"auto": None, "starttls": True}.get(settings.smtp_security, False),
                timeout=settings.smtp_timeout_s,
            )
        except aiosmtplib.SMTPResponseException as exc:
            what = f"SMTP server {settings.smtp_host}:{settings.smtp_port} refused the email"
            if 500 <= exc.code < 600:
                raise PermanentError(f"{what}: {exc.code} {exc.message}") from exc
            raise DependencyUnavailable(f"{what} for now: {exc.code} {exc.message}") from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise DependencyUnavailable(
                f"SMTP server {settings.smtp_host}:{settings.smtp_port} unreachable:"
                f" {type(exc).__name__}: {exc}"
            ) from exc


def _approval_text(approval: dict[str, Any]) -> str:
    options = ", ".join(approval["options"])
    lines = [
        f"Approval needed: {approval['question']}",
        "",
        "Reply to this email with your answer on the first line, one of:",
        f"    {options}",
        "and your reason on the lines after it.",
        "",
        f"Unanswered by {approval['deadline']}, it is decided as '{approval['on_expiry']}'.",
    ]
    if approval.get("task_id"):
        lines.append(f"Asked by {approval['requester']} for task {approval['task_id']}.")
    return "\n".join(lines)


def _plain_text(email: EmailMessage) -> str:
    """The text the human wrote: the plain-text body, without the quoted original."""
    part = email.get_body(preferencelist=("plain",))
    if part is None:
        raise PermanentError("5.6.0 the email has no plain-text part; reply in plain text")
    written: list[str] = []
    for line in str(part.get_content()).splitlines():
        stripped = line.strip()
        if stripped.startswith(">") or _QUOTE_HEADER.match(stripped):
            break
        written.append(line.rstrip())
    return "\n".join(written).strip()


def parse_answer(text: str, options: list[str]) -> tuple[str, str]:
    """``(decision, reason)`` from a reply whose first line starts with one of ``options``."""
    first, _, rest = text.strip().partition("\n")
    word, _, tail = first.strip().partition(" ")
    decision = word.strip(" .,:;!-").lower()
    if decision not in options:
        raise PermanentError(
            f"5.6.0 start the first line of your reply with one of: {', '.join(options)}"
        )
    reason = "\n".join(p for p in (tail.lstrip(" .,:;-").rstrip(), rest.strip()) if p)
    return decision, reason


@dataclass(frozen=True)
class _Route:
    """Where an inbound address leads."""

    tenant: str
    token: str = ""
    recipient: str = ""
    """For a reply: whom the copy went to, who alone may reply."""
    message_id: str = ""
    name: str = ""
    """For new mail: the principal it is for."""


class EmailInbound:
    """The ``aiosmtpd`` handler: routes each recipient address, then delivers the email."""

    def __init__(self, database: Database, mail: MailService, settings: IdentitySettings) -> None:
        self._database = database
        self._mail = mail
        self._settings = settings
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "the listener is not started"
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        settings = self._settings
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTP(
                self,
                data_size_limit=settings.smtp_max_message_bytes,
                hostname=settings.mail_domain,
                ident="Mainstay",
                enable_SMTPUTF8=True,
            ),
            host=settings.smtp_listen_host,
            port=settings.smtp_listen_port or 0,
        )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _route(self, address: str) -> _Route | None:
        local, _, domain = address.rpartition("@")
        if domain.lower() != self._settings.mail_domain.lower():
            return None
        if reply := _REPLY.match(local):
            row = await self._database.fetchrow(
                "SELECT tenant, message_id, recipient FROM emails WHERE reply_token = $1",
                reply["token"],
            )
            if row is None:
                return None
            return _Route(
                tenant=row["tenant"],
                token=reply["token"],
                recipient=row["recipient"],
                message_id=row["message_id"],
            )
        if new := _NEW.match(local):
            found = await self._database.fetchval(
                "SELECT 1 FROM principals WHERE tenant = $1 AND name = $2 AND NOT disabled",
                new["tenant"],
                new["name"],
            )
            return _Route(tenant=new["tenant"], name=new["name"]) if found else None
        return None

    async def handle_RCPT(  # noqa: N802 - the name aiosmtpd calls
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        try:
            route = await self._route(address)
        except MainstayError:
            return "451 4.3.0 mailbox lookup failed; try again later"
        if route is None:
            return f"550 5.1.1 no such mailbox: <{address}>"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - the name aiosmtpd calls
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        content = envelope.content
        raw = content if isinstance(content, bytes) else str(content).encode()
        email = BytesParser(policy=policy.default).parsebytes(raw)
        assert isinstance(email, EmailMessage)
        try:
            for address in envelope.rcpt_tos:
                route = await self._route(address)
                if route is None:
                    return f"550 5.1.1 no such mailbox: <{address}>"
                await self._deliver(route, email, raw, address)
        except RetryableError as exc:
            _log.warning("inbound email deferred: %s", exc)
            return "451 4.3.0 the inbox is unavailable; try again later"
        except MainstayError as exc:
            return f"550 {_smtp_text(exc.message)}"
        return "250 OK: delivered"

    async def _deliver(self, route: _Route, email: EmailMessage, raw: bytes, address: str) -> None:
        sender = await self._sender(route, email)
        text = _plain_text(email)
        digest = hashlib.sha256(
            f"{email.get('Message-ID') or hashlib.sha256(raw).hexdigest()}|{address}".encode()
        ).hexdigest()[:40]
        message_id = f"email-{digest}"
        subject = str(email.get("Subject", ""))[:500]
        if route.name:
            draft = MailDraft(message_id=message_id, to=[route.name], subject=subject, body=text)
        else:
            draft = await self._reply_draft(route, message_id, subject, text)
        await self._mail.send(sender, draft)

    async def _sender(self, route: _Route, email: EmailMessage) -> Principal:
        _, from_address = parseaddr(str(email.get("From", "")))
        if route.recipient:
            name = await self._database.fetchval(
                "SELECT name FROM principals WHERE tenant = $1 AND name = $2"
                " AND lower(email) = lower($3) AND NOT disabled",
                route.tenant,
                route.recipient,
                from_address,
            )
            if name is None:
                raise PermanentError(
                    "5.7.1 this reply address belongs to another mailbox than the From address"
                )
        else:
            name = await self._database.fetchval(
                "SELECT name FROM principals WHERE tenant = $1 AND lower(email) = lower($2)"
                " AND email <> '' AND NOT disabled",
                route.tenant,
                from_address,
            )
            if name is None:
                raise PermanentError(
                    f"5.7.1 <{from_address}> is not the address of anyone in this organisation"
                )
        return Principal(
            subject=str(name),
            tenant=route.tenant,
            scopes=frozenset(),
            token_id=f"email:{route.token or 'new'}",
            expires_at=datetime.now(UTC) + timedelta(minutes=1),
        )

    async def _reply_draft(
        self, route: _Route, message_id: str, subject: str, text: str
    ) -> MailDraft:
        original = await self._database.fetchrow(
            "SELECT m.sender, m.thread_id, a.options, a.status FROM messages m"
            " LEFT JOIN approvals a ON a.tenant = m.tenant AND a.approval_id = m.message_id"
            " WHERE m.tenant = $1 AND m.message_id = $2",
            route.tenant,
            route.message_id,
        )
        assert original is not None
        if original["options"] is not None:  # an approval request: the reply answers it
            decision, reason = parse_answer(text, list(original["options"]))
            return MailDraft(
                kind="approval-reply",
                message_id=message_id,
                answer=ApprovalAnswer(
                    approval_id=route.message_id, decision=decision, reason=reason[:4000]
                ),
            )
        return MailDraft(
            message_id=message_id,
            thread_id=original["thread_id"],
            to=[original["sender"]],
            subject=subject,
            body=text,
        )


def _smtp_text(message: str) -> str:
    """An error message as an SMTP reply text (one line; an enhanced code if it has none)."""
    line = " ".join(message.split())
    return line if re.match(r"^\d\.\d{1,3}\.\d{1,3} ", line) else f"5.7.1 {line}"
