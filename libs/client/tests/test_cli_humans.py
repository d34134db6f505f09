"""``mainstay inbox``, ``mainstay tools`` and ``mainstay spend`` as a user runs them,
against the whole mesh."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pathlib import Path

    from .conftest import Cli, CliResult, FullMesh

# Each command is a fresh ``python -m mainstay_client.cli``; the tests run the ones that do
# not depend on each other side by side.
pytestmark = [pytest.mark.real, pytest.mark.timeout(300)]


def new_id() -> str:
    return f"cli-{uuid.uuid4().hex[:10]}"


def parsed(result: CliResult) -> Any:
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


async def send(mesh: FullMesh, draft: dict[str, Any]) -> dict[str, Any]:
    """Mail from the tenant's operator (a service principal) through identity's HTTP API."""
    answer = await mesh.http.post(
        f"{mesh.identity_url}/v1/mail", json=draft, headers=await mesh.operator_headers()
    )
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


async def ask_alice(mesh: FullMesh, question: str, options: list[str] | None = None) -> str:
    """An approval request from the operator to alice; its id."""
    approval_id = new_id()
    request: dict[str, Any] = {
        "question": question,
        "deadline": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
    }
    if options:
        request |= {"options": options, "on_expiry": options[-1]}
    await send(
        mesh,
        {
            "kind": "approval-request",
            "message_id": approval_id,
            "to": ["alice"],
            "approval": request,
        },
    )
    return approval_id


async def pending_ids(mesh: FullMesh) -> set[str]:
    return {a["approval_id"] for a in await mesh.pending_approvals("alice")}


async def inbox_of(mesh: FullMesh, who: str) -> list[dict[str, Any]]:
    """``who``'s inbox, read through identity's HTTP API rather than the CLI."""
    headers = await (mesh.operator_headers() if who == "operator" else mesh.human_headers(who))
    answer = await mesh.http.get(f"{mesh.identity_url}/v1/inbox", headers=headers)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["messages"])


def spec_file(mesh: FullMesh, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.json"
    path.write_text(
        json.dumps(
            {
                "kind": "http",
                "http": {"url": mesh.tools.url(name)},
                "description": "Looks things up.",
                "input_schema": {"type": "object"},
            }
        )
    )
    return path


# -- tools -------------------------------------------------------------------------------


async def test_a_tool_is_registered_listed_called_and_audited(
    mesh: FullMesh, cli: Cli, tmp_path: Path
) -> None:
    name = new_id().replace("-", "_")
    spec = str(spec_file(mesh, tmp_path, name))
    registered = await cli("tools", "register", name, "--file", spec)
    assert registered.code == 0, registered.stderr
    assert f"registered: tool {name}" in registered.stdout

    table, listed, shown = await asyncio.gather(
        cli("tools", "list"),
        cli("tools", "list", "--json"),
        cli("tools", "show", name, "--json"),
    )
    assert table.code == 0, table.stderr
    assert name in table.stdout
    assert "Looks things up." in table.stdout
    assert name in {t["name"] for t in parsed(listed)}
    assert parsed(shown)["http"]["url"] == mesh.tools.url(name)

    called = await cli(
        "tools", "call", name, "--args", '{"q": 1}', "--idempotency-key", "k-1", who="submitter"
    )
    assert called.code == 0, called.stderr
    assert called.stdout.startswith(f"OK: {name}")
    assert '"q": 1' in called.stdout
    assert mesh.tool_calls(name) == 1
    assert mesh.tool_calls_by_key(name) == {"k-1": 1}

    replayed = parsed(
        await cli(
            "tools",
            "call",
            name,
            "--args",
            '{"q": 1}',
            "--idempotency-key",
            "k-1",
            "--json",
            who="submitter",
        )
    )
    assert replayed["outcome"] == "OK"
    assert replayed["replayed"] is True
    assert replayed["output"]["arguments"] == {"q": 1}
    assert mesh.tool_calls(name) == 1

    for _ in range(20):
        calls = parsed(await cli("tools", "audit", "--tool", name, "--limit", "10", "--json"))
        if any(c["idempotency_key"] == "k-1" and c["outcome"] == "OK" for c in calls):
            break
        await asyncio.sleep(0.5)
    else:
        raise AssertionError(f"the audit never showed the call of {name}: {calls}")
    assert {c["tool"] for c in calls} == {name}
    assert {c["channel"] for c in calls} == {"http"}

    audit_table, removed = await asyncio.gather(
        cli("tools", "audit", "--tool", name), cli("tools", "remove", name)
    )
    assert audit_table.code == 0, audit_table.stderr
    assert name in audit_table.stdout
    assert "OK" in audit_table.stdout
    assert removed.code == 0, removed.stderr
    gone = await cli("tools", "show", name)
    assert gone.code == 1
    assert "tools gateway answered 404" in gone.stderr
    assert f"no tool named '{name}'" in gone.stderr


async def test_failing_tool_commands_exit_1_with_the_reason(
    mesh: FullMesh, cli: Cli, tmp_path: Path
) -> None:
    name = new_id().replace("-", "_")
    await mesh.register_tool(
        name,
        input_schema={
            "type": "object",
            "properties": {"q": {"type": "integer"}},
            "required": ["q"],
        },
    )
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")

    unknown, invalid, not_json, bad_file, no_token = await asyncio.gather(
        cli("tools", "call", f"{name}_missing", "--args", "{}", who="submitter"),
        cli("tools", "call", name, "--args", '{"q": "one"}', "--json", who="submitter"),
        cli("tools", "call", name, "--args", "{q: 1", who="submitter"),
        cli("tools", "register", name, "--file", str(broken)),
        cli("tools", "list", env={"MAINSTAY_TOKEN": ""}),
    )

    assert unknown.code == 1
    assert "UNKNOWN_TOOL" in unknown.stderr
    assert f"no tool named '{name}_missing'" in unknown.stderr
    assert unknown.stdout == ""

    assert invalid.code == 1
    assert "INVALID_ARGUMENTS" in invalid.stderr
    assert json.loads(invalid.stdout)["outcome"] == "INVALID_ARGUMENTS"

    assert not_json.code != 0
    assert "--args" in not_json.stderr
    assert "not valid JSON" in not_json.stderr
    assert mesh.tool_calls(name) == 0

    assert bad_file.code == 1
    assert "--file" in bad_file.stderr
    assert "not valid JSON" in bad_file.stderr

    assert no_token.code == 1
    assert "no token: set MAINSTAY_TOKEN or MAINSTAY_TOKEN_FILE" in no_token.stderr


# -- inbox -------------------------------------------------------------------------------


async def test_an_approval_in_alices_inbox_is_read_and_approved(mesh: FullMesh, cli: Cli) -> None:
    approval_id = await ask_alice(mesh, "May the writer spend another 5 USD?")

    listed, table = await asyncio.gather(
        cli("inbox", "list", "--json", who="alice"),
        cli("inbox", "list", "--unread", who="alice"),
    )
    [message] = [m for m in parsed(listed) if m["message_id"] == approval_id]
    assert message["kind"] == "approval-request"
    assert message["sender"] == "operator"
    assert message["read_at"] is None
    assert message["approval"]["status"] == "pending"
    assert message["approval"]["options"] == ["approve", "deny"]
    assert table.code == 0, table.stderr
    assert approval_id in table.stdout
    assert "pending (approve/deny)" in table.stdout

    read = await cli("inbox", "read", approval_id, who="alice")
    assert read.code == 0, read.stderr
    assert "May the writer spend another 5 USD?" in read.stdout
    assert f"mainstay inbox approve {approval_id}" in read.stdout
    [marked] = [m for m in await inbox_of(mesh, "alice") if m["message_id"] == approval_id]
    assert marked["read_at"] is not None

    approved = await cli("inbox", "approve", approval_id, "--reason", "fine", who="alice")
    assert approved.code == 0, approved.stderr
    assert f"approval {approval_id}: approve" in approved.stdout
    assert approval_id not in await pending_ids(mesh)
    [answered] = [m for m in await inbox_of(mesh, "alice") if m["message_id"] == approval_id]
    assert answered["approval"]["decision"] == "approve"
    assert answered["approval"]["decided_by"] == "alice"
    assert answered["approval"]["reason"] == "fine"
    [reply] = [m for m in await inbox_of(mesh, "operator") if m["thread_id"] == approval_id]
    assert reply["kind"] == "approval-reply"
    assert reply["answer"]["decision"] == "approve"

    twice = await cli("inbox", "deny", approval_id, who="alice")
    assert twice.code == 1
    assert "decided already" in twice.stderr


async def test_approvals_are_denied_or_answered_with_a_named_option(
    mesh: FullMesh, cli: Cli
) -> None:
    denied_id = await ask_alice(mesh, "Deploy on a Friday?")
    escalation = await ask_alice(mesh, "The model refused: what now?", ["retry", "skip", "abort"])
    aborted_id = await ask_alice(mesh, "Try once more?", ["retry", "skip", "abort"])

    denied, unnamed, aborted, unknown = await asyncio.gather(
        cli("inbox", "deny", denied_id, "--reason", "not on Friday", "--json", who="alice"),
        cli("inbox", "approve", escalation, who="alice"),
        cli("inbox", "deny", aborted_id, "--json", who="alice"),
        cli("inbox", "approve", new_id(), who="alice"),
    )
    assert parsed(denied)["approval"]["decision"] == "deny"
    assert parsed(denied)["approval"]["reason"] == "not on Friday"
    assert parsed(aborted)["approval"]["decision"] == "abort"
    assert unnamed.code == 1
    assert "retry, skip, abort" in unnamed.stderr
    assert "--option" in unnamed.stderr
    assert unknown.code == 1
    assert "identity service answered 404" in unknown.stderr
    pending = await pending_ids(mesh)
    assert escalation in pending
    assert not {denied_id, aborted_id} & pending

    skipped = parsed(
        await cli("inbox", "approve", escalation, "--option", "skip", "--json", who="alice")
    )
    assert skipped["approval"]["decision"] == "skip"
    assert escalation not in await pending_ids(mesh)


async def test_a_reply_goes_back_to_the_sender_in_the_thread(mesh: FullMesh, cli: Cli) -> None:
    sent = await send(
        mesh, {"to": ["alice"], "subject": "Quarterly numbers", "body": "Can you check them?"}
    )

    replied, missing = await asyncio.gather(
        cli("inbox", "reply", sent["message_id"], "--body", "They add up.", "--json", who="alice"),
        cli("inbox", "reply", new_id(), "--body", "hello?", who="alice"),
    )
    reply = parsed(replied)
    assert reply["to"] == ["operator"]
    assert reply["thread_id"] == sent["thread_id"]
    assert reply["subject"] == "Re: Quarterly numbers"
    [received] = [
        m for m in await inbox_of(mesh, "operator") if m["message_id"] == reply["message_id"]
    ]
    assert received["sender"] == "alice"
    assert received["body"] == "They add up."
    assert missing.code == 1
    assert "no message" in missing.stderr


# -- spend -------------------------------------------------------------------------------


async def test_spend_report_and_budgets(mesh: FullMesh, cli: Cli) -> None:
    report, by_tool, table, budgets, both, not_reader = await asyncio.gather(
        cli("spend", "report", "--json"),
        cli("spend", "report", "--period", "day", "--group-by", "tool", "--json"),
        cli("spend", "report", "--tenant", mesh.tenant),
        cli("spend", "budgets", "--json"),
        cli("spend", "report", "--period", "day", "--since", "2026-01-01T00:00:00Z"),
        cli("spend", "report", who="alice"),
    )

    answer = parsed(report)
    assert answer["spend"]["tenant"] == mesh.tenant
    assert answer["spend"]["group_by"] == "agent"
    assert isinstance(answer["spend"]["groups"], list)
    assert isinstance(answer["cost_per_success"]["currencies"], list)

    tools = parsed(by_tool)["spend"]
    assert tools["group_by"] == "tool"
    since = datetime.fromisoformat(tools["since"])
    assert (since.hour, since.minute, since.second, since.utcoffset()) == (0, 0, 0, timedelta(0))

    assert table.code == 0, table.stderr
    assert f"spend of {mesh.tenant} by agent" in table.stdout
    assert "cost per successful task" in table.stdout

    assert isinstance(parsed(budgets), list)

    assert both.code == 1
    assert "--period and --since" in both.stderr
    assert not_reader.code == 1
    assert "ledger answered 403" in not_reader.stderr
    assert "ledger:read" in not_reader.stderr
