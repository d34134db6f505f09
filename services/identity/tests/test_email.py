"""The email bridge over real SMTP on loopback: copies out, replies and approvals back in."""

from __future__ import annotations

import asyncio
import json
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import TYPE_CHECKING, Any

import aiosmtplib
import pytest
import pytest_asyncio
from aiosmtpd.smtp import SMTP

from mainstay_common.settings import RetrySettings
from mainstay_identity.email_bridge import parse_answer

from .conftest import Identity, new_tenant, running_identity
from .test_approvals import approval_events, ask

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.real

DOMAIN = "mail.test"


class Mailbox:
    """The organisation's SMTP server, as the identity service sees it: it keeps what it gets."""

    def __init__(self) -> None:
        self.received: list[EmailMessage] = []
        self.server: asyncio.Server | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        email = BytesParser(policy=policy.default).parsebytes(envelope.content)
        assert isinstance(email, EmailMessage)
        self.received.append(email)
        return "250 OK"

    async def wait_for(self, to: str, count: int = 1) -> list[EmailMessage]:
        for _ in range(300):
            mine = [e for e in self.received if e["To"] == to]
            if len(mine) >= count:
                return mine
            await asyncio.sleep(0.1)
        raise AssertionError(f"no email to {to} arrived; got {[e['To'] for e in self.received]}")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def mailbox() -> AsyncIterator[Mailbox]:
    box = Mailbox()
    loop = asyncio.get_running_loop()
    box.server = await loop.create_server(lambda: SMTP(box), "127.0.0.1", 0)
    yield box
    box.server.close()
    await box.server.wait_closed()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def bridged(
    kafka_bootstrap: str,
    postgres_dsn: str,
    tmp_path_factory: pytest.TempPathFactory,
    mailbox: Mailbox,
) -> AsyncIterator[Identity]:
    assert mailbox.server is not None
    async with running_identity(
        kafka_bootstrap,
        postgres_dsn,
        tmp_path_factory.mktemp("identity-email"),
        smtp_host="127.0.0.1",
        smtp_port=mailbox.server.sockets[0].getsockname()[1],
        smtp_security="none",
        smtp_listen_port=0,
        mail_domain=DOMAIN,
    ) as running:
        yield running


async def reply(
    identity: Identity, *, sender: str, to: str, text: str, message_id: str = ""
) -> None:
    email = EmailMessage()
    email["From"] = f"Someone <{sender}>"
    email["To"] = to
    email["Subject"] = "Re: your message"
    if message_id:
        email["Message-ID"] = message_id
    email.set_content(text)
    await aiosmtplib.send(email, hostname="127.0.0.1", port=identity.app.smtp_port)


async def test_a_human_approves_by_replying_to_the_email(
    bridged: Identity, mailbox: Mailbox
) -> None:
    tenant = new_tenant()
    planner = await bridged.bearer(tenant, "planner")
    await bridged.bearer(tenant, "hana", kind="user", email=f"hana@{tenant}.example")
    asked = await ask(bridged, planner, task_id="task-7")

    [email] = await mailbox.wait_for(f"hana@{tenant}.example")
    assert email["Subject"] == "[Approval needed] Book the $840 flight?"
    assert email["X-Mainstay-Message-Id"] == asked["message_id"]
    text = email.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert "Book the $840 flight?" in text
    assert "approve, deny" in text
    reply_to = str(email["Reply-To"])
    assert reply_to.startswith("reply+")
    assert reply_to.endswith(f"@{DOMAIN}")

    answer = f"Approve. Fits the budget.\n\nOn Monday, Mainstay wrote:\n> {text[:40]}"
    await reply(bridged, sender=f"hana@{tenant}.example", to=reply_to, text=answer)

    events = await approval_events(bridged, asked["message_id"], 2)
    decided = events[1]
    assert (decided["type"], decided["decision"], decided["decided_by"], decided["reason"]) == (
        "approval.decided",
        "approve",
        "hana",
        "Fits the budget.",
    )
    assert decided["task_id"] == "task-7"


async def test_replies_that_cannot_be_used_bounce_with_the_reason(
    bridged: Identity, mailbox: Mailbox
) -> None:
    tenant = new_tenant()
    planner = await bridged.bearer(tenant, "planner")
    await bridged.bearer(tenant, "hana", kind="user", email=f"hana@{tenant}.example")
    await bridged.bearer(tenant, "omar", kind="user", email=f"omar@{tenant}.example")
    asked = await ask(bridged, planner)
    [email] = await mailbox.wait_for(f"hana@{tenant}.example")
    reply_to = str(email["Reply-To"])

    with pytest.raises(aiosmtplib.SMTPDataError) as unclear:
        await reply(bridged, sender=f"hana@{tenant}.example", to=reply_to, text="Sure, why not")
    assert unclear.value.code == 550
    assert "start the first line of your reply with one of: approve, deny" in str(
        unclear.value.message
    )
    with pytest.raises(aiosmtplib.SMTPDataError) as forged:
        await reply(bridged, sender=f"omar@{tenant}.example", to=reply_to, text="approve")
    assert forged.value.code == 550
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        await reply(
            bridged,
            sender=f"hana@{tenant}.example",
            to=f"reply+{'0' * 32}@{DOMAIN}",
            text="approve",
        )
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        await reply(bridged, sender=f"hana@{tenant}.example", to="hana@elsewhere.example", text="x")

    # Still undecided; a resent answer (same Message-ID) decides it once.
    state = (await bridged.http.get(f"/v1/approvals/{asked['message_id']}", headers=planner)).json()
    assert state["status"] == "pending"
    for _ in range(2):
        await reply(
            bridged,
            sender=f"hana@{tenant}.example",
            to=reply_to,
            text="deny: not this quarter",
            message_id=f"<answer-1@{tenant}.example>",
        )
    events = await approval_events(bridged, asked["message_id"], 3, wait_s=4.0)
    assert [(e["type"], e["decision"], e["reason"]) for e in events] == [
        ("approval.requested", None, ""),
        ("approval.decided", "deny", "not this quarter"),
    ]


async def test_mail_goes_out_with_attachments_and_replies_come_back_into_the_thread(
    bridged: Identity, mailbox: Mailbox
) -> None:
    tenant = new_tenant()
    planner = await bridged.bearer(tenant, "planner")
    hana = await bridged.bearer(tenant, "hana", kind="user", email=f"hana@{tenant}.example")
    await bridged.bearer(tenant, "bot")  # no email address: the inbox is the only copy
    sent = await bridged.http.post(
        "/v1/mail",
        json={
            "to": ["hana", "bot"],
            "subject": "Weekly report",
            "body": "Spend is attached.",
            "attachments": [{"name": "spend", "data": {"usd": 12.5}}],
        },
        headers=planner,
    )
    assert sent.status_code == 201, sent.text
    [email] = await mailbox.wait_for(f"hana@{tenant}.example")
    assert email["Subject"] == "Weekly report"
    assert "planner via Mainstay" in str(email["From"])
    [attachment] = list(email.iter_attachments())
    assert attachment.get_filename() == "spend.json"
    assert json.loads(attachment.get_content()) == {"usd": 12.5}

    await reply(
        bridged,
        sender=f"HANA@{tenant}.example",  # addresses compare without case
        to=str(email["Reply-To"]),
        text="Thanks, looks right.\n> Spend is attached.",
    )
    planner_inbox = (await bridged.http.get("/v1/inbox", headers=planner)).json()["messages"]
    [answer] = planner_inbox
    assert (answer["sender"], answer["thread_id"], answer["body"]) == (
        "hana",
        sent.json()["thread_id"],
        "Thanks, looks right.",
    )

    # A new email to an agent's address lands in its inbox, from the human who sent it.
    await reply(
        bridged, sender=f"hana@{tenant}.example", to=f"planner+{tenant}@{DOMAIN}", text="Hello"
    )
    newest = (await bridged.http.get("/v1/inbox", headers=planner)).json()["messages"][0]
    assert (newest["sender"], newest["body"]) == ("hana", "Hello")
    assert (await bridged.http.get("/v1/inbox", headers=hana)).status_code == 200


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("approve", ("approve", "")),
        ("APPROVE - within budget", ("approve", "within budget")),
        ("Deny.\nToo early.\nAsk again in May.", ("deny", "Too early.\nAsk again in May.")),
        ("escalate: needs finance", ("escalate", "needs finance")),
    ],
)
def test_answers_are_read_from_the_first_line(text: str, expected: tuple[str, str]) -> None:
    assert parse_answer(text, ["approve", "deny", "escalate"]) == expected


async def test_a_copy_waits_out_an_smtp_outage_and_is_sent_once_it_ends(
    kafka_bootstrap: str, postgres_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    probe = await asyncio.get_running_loop().create_server(asyncio.Protocol, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()  # the port is free: the SMTP server is down
    async with running_identity(
        kafka_bootstrap,
        postgres_dsn,
        tmp_path_factory.mktemp("identity-outage"),
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_security="none",
        retry=RetrySettings(tier_delays_s=[0.5, 1.0, 2.0]),
    ) as identity:
        tenant = new_tenant()
        planner = await identity.bearer(tenant, "planner")
        await identity.bearer(tenant, "hana", kind="user", email="hana@example.com")
        sent = await identity.http.post(
            "/v1/mail", json={"to": ["hana"], "subject": "During the outage"}, headers=planner
        )
        assert sent.status_code == 201  # the inbox has it; the email copy waits
        await asyncio.sleep(0.7)
        box = Mailbox()
        server = await asyncio.get_running_loop().create_server(
            lambda: SMTP(box), "127.0.0.1", port
        )
        try:
            [email] = await box.wait_for("hana@example.com")
            assert email["Subject"] == "During the outage"
            await asyncio.sleep(1.0)
            assert len(box.received) == 1
        finally:
            server.close()
            await server.wait_closed()
